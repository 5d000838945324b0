"""The segmentation network, chosen by configuration: MONAI 2D U-Net, DynUNet or SegResNet.

Every architecture has one sigmoid output per structure (masks overlap: the patella lies over the femur,
the tibial stem inside the tibia). The configuration is saved with every model, so weights load without
code changes.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from orthoseg.labels import NUM_STRUCTURES

if TYPE_CHECKING:
    import torch

Architecture = Literal["unet", "dynunet", "segresnet"]
ARCHITECTURES: tuple[str, ...] = ("unet", "dynunet", "segresnet")


class NetworkConfig(BaseModel):
    """Architecture of the network.

    Attributes:
        architecture: ``unet`` (MONAI ``UNet``), ``dynunet`` (nnU-Net-style ``DynUNet``, with deep
            supervision) or ``segresnet`` (MONAI ``SegResNet``).
        channels: feature channels per level; each level after the first halves the resolution
            (``segresnet`` uses the first value as its initial filters and the count as its depth).
        num_res_units: residual units per level (``unet`` only; 0 gives plain convolution blocks).
        deep_supervision: extra outputs at coarser decoder levels during training (``dynunet`` only);
            inference always uses the full-resolution output.
        deep_supervision_heads: how many coarser outputs when ``deep_supervision`` is on.
        in_channels: image channels (one greyscale radiograph).
        out_channels: one logit per structure of the label contract (multi-label, sigmoid each).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    architecture: Architecture = "unet"
    channels: tuple[int, ...] = (16, 32, 64, 128)
    num_res_units: int = Field(default=1, ge=0, le=4)
    deep_supervision: bool = False
    deep_supervision_heads: int = Field(default=2, ge=1, le=4)
    in_channels: int = Field(default=1, ge=1, le=1)
    out_channels: int = Field(default=NUM_STRUCTURES, ge=NUM_STRUCTURES, le=NUM_STRUCTURES)

    @field_validator("channels")
    @classmethod
    def _check_channels(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if len(value) < 2 or any(c < 1 for c in value):
            raise ValueError(f"channels needs at least two positive values, got {value}")
        return value

    @model_validator(mode="after")
    def _check_deep_supervision(self) -> NetworkConfig:
        if self.deep_supervision and self.architecture != "dynunet":
            raise ValueError(f"deep_supervision needs architecture='dynunet', not {self.architecture!r}")
        if self.deep_supervision and self.deep_supervision_heads > len(self.channels) - 2:
            raise ValueError(
                f"deep_supervision_heads={self.deep_supervision_heads} needs at least "
                f"{self.deep_supervision_heads + 2} levels; channels has {len(self.channels)}"
            )
        return self

    @property
    def downsampling_factor(self) -> int:
        """How much the deepest level shrinks the canvas; the canvas side must be a multiple of it."""
        return int(2 ** (len(self.channels) - 1))


def build_network(channels: tuple[int, ...], num_res_units: int = 1) -> torch.nn.Module:
    """A 2D U-Net: 1 input channel, one logit per structure of the label contract.

    Args:
        channels: feature channels per level, e.g. ``(16, 32, 64, 128)``; strides are 2 between levels.
        num_res_units: residual units per level.

    Raises:
        ValueError: for fewer than two levels or non-positive channel counts.
    """
    return build_network_from_config(NetworkConfig(channels=tuple(channels), num_res_units=num_res_units))


def build_network_from_config(config: NetworkConfig) -> torch.nn.Module:
    """The network described by ``config`` (freshly initialised; load weights separately).

    In training mode a ``dynunet`` with deep supervision returns (N, 1 + heads, C, H, W), every head
    upsampled to the full size; in eval mode every network returns (N, C, H, W) logits.
    """
    levels = len(config.channels)
    if config.architecture == "dynunet":
        from monai.networks.nets import DynUNet

        return DynUNet(
            spatial_dims=2,
            in_channels=config.in_channels,
            out_channels=config.out_channels,
            kernel_size=[3] * levels,
            strides=[1] + [2] * (levels - 1),
            upsample_kernel_size=[2] * (levels - 1),
            filters=list(config.channels),
            norm_name="instance",
            res_block=True,
            deep_supervision=config.deep_supervision,
            deep_supr_num=config.deep_supervision_heads,
        )
    if config.architecture == "segresnet":
        from monai.networks.nets import SegResNet

        return SegResNet(
            spatial_dims=2,
            in_channels=config.in_channels,
            out_channels=config.out_channels,
            init_filters=config.channels[0],
            # Group norm with up to 8 groups, as many as divide the first level's channels.
            norm=("GROUP", {"num_groups": math.gcd(8, config.channels[0])}),
            blocks_down=tuple(min(2 ** max(level - 1, 0), 4) for level in range(levels)),
            blocks_up=(1,) * (levels - 1),
        )
    from monai.networks.nets import UNet

    return UNet(
        spatial_dims=2,
        in_channels=config.in_channels,
        out_channels=config.out_channels,
        channels=config.channels,
        strides=(2,) * (levels - 1),
        num_res_units=config.num_res_units,
    )


def check_canvas_fits(config: NetworkConfig, canvas_px: int) -> None:
    """Refuse canvases the network cannot down- and up-sample back to the same size.

    Raises:
        ValueError: when ``canvas_px`` is not a multiple of the network's downsampling factor.
    """
    factor = config.downsampling_factor
    if canvas_px % factor:
        raise ValueError(
            f"a canvas side of {canvas_px} px (canvas_px, canvas_multiple) must be a multiple of {factor} "
            f"for a {len(config.channels)}-level network"
        )


def autocast_dtype(device: torch.device, enabled: bool = True) -> torch.dtype | None:
    """The mixed-precision type for ``device``: bfloat16 on GPUs that support it, float16 on older
    GPUs, None (float32) on CPU, where bfloat16 autocast was measured ~10x slower on an AVX2 machine
    without native bfloat16 and moved probabilities by up to 0.02."""
    import torch

    if not enabled or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def forward_logits(network: torch.nn.Module, images: torch.Tensor, amp: torch.dtype | None) -> torch.Tensor:
    """The network's float32 logits for a batch, under autocast when ``amp`` is a dtype.

    Training and inference share this one call, so both run the network the same way.
    """
    import torch

    with torch.autocast(images.device.type, dtype=amp or torch.float32, enabled=amp is not None):
        logits = network(images)
    return logits.float()


def prepare_for_device(
    network: torch.nn.Module, device: torch.device, channels_last: bool
) -> torch.nn.Module:
    """Move ``network`` to ``device``; on CUDA optionally in channels-last (NHWC) layout."""
    import torch

    network = network.to(device)
    if channels_last and device.type == "cuda":
        # Module.to accepts memory_format at run time; torch's overloads leave it out.
        network = network.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return network
