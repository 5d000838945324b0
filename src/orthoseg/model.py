"""The segmentation network: a MONAI 2D U-Net with one sigmoid output per structure (masks overlap)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, field_validator

from orthoseg.labels import NUM_STRUCTURES

if TYPE_CHECKING:
    import torch


class NetworkConfig(BaseModel):
    """Architecture of the network, saved with every model so weights can be loaded without code changes.

    Attributes:
        channels: feature channels per U-Net level; each level after the first halves the resolution.
        num_res_units: residual units per level (0 gives plain convolution blocks).
        in_channels: image channels (one greyscale radiograph).
        out_channels: one logit per structure of the label contract (multi-label, sigmoid each).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    channels: tuple[int, ...] = (16, 32, 64, 128)
    num_res_units: int = Field(default=1, ge=0, le=4)
    in_channels: int = Field(default=1, ge=1, le=1)
    out_channels: int = Field(default=NUM_STRUCTURES, ge=NUM_STRUCTURES, le=NUM_STRUCTURES)

    @field_validator("channels")
    @classmethod
    def _check_channels(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if len(value) < 2 or any(c < 1 for c in value):
            raise ValueError(f"channels needs at least two positive values, got {value}")
        return value

    @property
    def downsampling_factor(self) -> int:
        """How much the deepest level shrinks the canvas; the canvas side must be a multiple of it."""
        return int(2 ** (len(self.channels) - 1))


def build_network(channels: tuple[int, ...], num_res_units: int = 1) -> torch.nn.Module:
    """A 2D U-Net: 1 input channel, one logit per structure of the label contract.

    Outputs are independent logits (apply a sigmoid per channel, never a softmax): radiographs are
    projections, so the patella lies over the femur and the tibial stem inside the tibia.

    Args:
        channels: feature channels per level, e.g. ``(16, 32, 64, 128)``; strides are 2 between levels.
        num_res_units: residual units per level.

    Raises:
        ValueError: for fewer than two levels or non-positive channel counts.
    """
    return build_network_from_config(NetworkConfig(channels=tuple(channels), num_res_units=num_res_units))


def build_network_from_config(config: NetworkConfig) -> torch.nn.Module:
    """The network described by ``config`` (freshly initialised; load weights separately)."""
    from monai.networks.nets import UNet

    return UNet(
        spatial_dims=2,
        in_channels=config.in_channels,
        out_channels=config.out_channels,
        channels=config.channels,
        strides=(2,) * (len(config.channels) - 1),
        num_res_units=config.num_res_units,
    )


def check_canvas_fits(config: NetworkConfig, canvas_px: int) -> None:
    """Refuse canvases the U-Net cannot down- and up-sample back to the same size.

    Raises:
        ValueError: when ``canvas_px`` is not a multiple of the network's downsampling factor.
    """
    factor = config.downsampling_factor
    if canvas_px % factor:
        raise ValueError(
            f"canvas_px={canvas_px} must be a multiple of {factor} for a {len(config.channels)}-level U-Net"
        )
