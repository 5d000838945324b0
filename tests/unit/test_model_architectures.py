"""Every configured architecture: output shapes, deep supervision, configuration checks, old model.json."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from orthoseg.labels import NUM_STRUCTURES
from orthoseg.model import (
    ARCHITECTURES,
    NetworkConfig,
    autocast_dtype,
    build_network_from_config,
    check_canvas_fits,
    forward_logits,
)
from orthoseg.model_package import ModelConfig

CHANNELS = (4, 8, 16, 32)
SIDE = 64


def _images(count: int = 2) -> torch.Tensor:
    return torch.rand(count, 1, SIDE, SIDE, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_every_architecture_gives_one_logit_per_structure(architecture: str) -> None:
    config = NetworkConfig(architecture=architecture, channels=CHANNELS)
    check_canvas_fits(config, SIDE)
    torch.manual_seed(0)
    network = build_network_from_config(config).eval()
    with torch.inference_mode():
        logits = network(_images())
    assert logits.shape == (2, NUM_STRUCTURES, SIDE, SIDE)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("channels", [(8, 16, 32, 64), (16, 32)])
def test_segresnet_with_group_norm_friendly_filters(channels: tuple[int, ...]) -> None:
    network = build_network_from_config(NetworkConfig(architecture="segresnet", channels=channels)).eval()
    with torch.inference_mode():
        assert network(_images()).shape == (2, NUM_STRUCTURES, SIDE, SIDE)


def test_architectures_match_the_configuration_literal() -> None:
    assert set(ARCHITECTURES) == {"unet", "dynunet", "segresnet"}
    assert NetworkConfig().architecture == "unet"
    with pytest.raises(ValidationError):
        NetworkConfig(architecture="transformer")  # type: ignore[arg-type]


@pytest.mark.parametrize("heads", [1, 2])
def test_dynunet_deep_supervision_stacks_heads_in_training_only(heads: int) -> None:
    config = NetworkConfig(
        architecture="dynunet", channels=CHANNELS, deep_supervision=True, deep_supervision_heads=heads
    )
    torch.manual_seed(0)
    network = build_network_from_config(config)
    network.train()
    stacked = network(_images())
    assert stacked.shape == (2, 1 + heads, NUM_STRUCTURES, SIDE, SIDE)
    network.eval()
    with torch.inference_mode():
        logits = network(_images())
    assert logits.shape == (2, NUM_STRUCTURES, SIDE, SIDE)


@pytest.mark.parametrize("architecture", ["unet", "segresnet"])
def test_deep_supervision_needs_dynunet(architecture: str) -> None:
    with pytest.raises(ValidationError, match="dynunet"):
        NetworkConfig(architecture=architecture, channels=CHANNELS, deep_supervision=True)


def test_too_many_heads_for_the_depth_are_refused() -> None:
    NetworkConfig(architecture="dynunet", channels=CHANNELS, deep_supervision=True, deep_supervision_heads=2)
    with pytest.raises(ValidationError, match="deep_supervision_heads"):
        NetworkConfig(
            architecture="dynunet", channels=CHANNELS, deep_supervision=True, deep_supervision_heads=3
        )
    with pytest.raises(ValidationError):
        NetworkConfig(
            architecture="dynunet", channels=(4, 8), deep_supervision=True, deep_supervision_heads=1
        )


def test_old_model_json_without_architecture_loads_as_unet() -> None:
    old = {
        "format_version": "1",
        "network": {"channels": [4, 8, 16], "num_res_units": 1, "in_channels": 1, "out_channels": 7},
        "preprocess": {"spacing_mm": 2.0, "canvas_px": 64, "clip_percentiles": [0.5, 99.5]},
        "threshold": 0.5,
        "weights_sha256": "0" * 64,
    }
    config = ModelConfig.model_validate(old)
    assert config.network.architecture == "unet"
    assert config.network.deep_supervision is False
    assert config.network.channels == (4, 8, 16)
    network = build_network_from_config(config.network).eval()
    with torch.inference_mode():
        assert network(_images(1)).shape == (1, NUM_STRUCTURES, SIDE, SIDE)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_forward_logits_is_float32(architecture: str) -> None:
    config = NetworkConfig(architecture=architecture, channels=(8, 16, 32, 64))
    network = build_network_from_config(config).eval()
    with torch.inference_mode():
        logits = forward_logits(network, _images(1), autocast_dtype(torch.device("cpu")))
        # Under bfloat16 autocast the network computes in bfloat16; the logits still come back float32.
        reduced = forward_logits(network, _images(1), torch.bfloat16)
    assert logits.dtype == torch.float32 and reduced.dtype == torch.float32
    assert logits.shape == reduced.shape == (1, NUM_STRUCTURES, SIDE, SIDE)
    torch.testing.assert_close(reduced, logits, atol=0.5, rtol=0.1)


def test_no_autocast_on_cpu() -> None:
    assert autocast_dtype(torch.device("cpu")) is None
    assert autocast_dtype(torch.device("cpu"), enabled=False) is None
