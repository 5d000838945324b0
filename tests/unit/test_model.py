"""The network and its safetensors package: shapes, exact round trip, model.json content, integrity."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from orthoseg.labels import LABEL_CONTRACT_VERSION, NUM_STRUCTURES, STRUCTURE_NAMES
from orthoseg.model import NetworkConfig, build_network, build_network_from_config, check_canvas_fits
from orthoseg.model_package import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    ModelConfig,
    SegmentationModel,
    config_hash,
    save_model_artifacts,
)
from orthoseg.settings import PreprocessConfig

CHANNELS = (4, 8, 16)
PREPROCESS = PreprocessConfig(canvas_px=64, spacing_mm=2.0)


@pytest.fixture()
def network() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_network(CHANNELS).eval()


def _canvases(count: int = 3, side: int = 64) -> np.ndarray:
    return np.random.default_rng(1).random((count, 1, side, side), dtype=np.float32)


def test_network_outputs_one_logit_per_structure(network: torch.nn.Module) -> None:
    with torch.inference_mode():
        logits = network(torch.from_numpy(_canvases(2)))
    assert logits.shape == (2, NUM_STRUCTURES, 64, 64)
    assert logits.dtype == torch.float32


def test_network_config_checks_arguments() -> None:
    with pytest.raises(ValueError):
        NetworkConfig(channels=(8,))
    with pytest.raises(ValueError):
        NetworkConfig(channels=(8, 0))
    with pytest.raises(ValueError, match="multiple of 4"):
        check_canvas_fits(NetworkConfig(channels=CHANNELS), 66)
    check_canvas_fits(NetworkConfig(channels=CHANNELS), 64)
    assert NetworkConfig(channels=(8, 16, 32, 64)).downsampling_factor == 8


def test_safetensors_round_trip_gives_identical_outputs(network: torch.nn.Module, tmp_path: Path) -> None:
    artifacts = save_model_artifacts(tmp_path, network, NetworkConfig(channels=CHANNELS), PREPROCESS)
    assert set(artifacts) == {"weights", "config"}
    assert (tmp_path / WEIGHTS_FILE).is_file() and (tmp_path / CONFIG_FILE).is_file()
    loaded = SegmentationModel.from_directory(tmp_path, device="cpu")
    canvases = _canvases()
    with torch.inference_mode():
        expected = torch.sigmoid(network(torch.from_numpy(canvases))).numpy()
    probabilities = loaded.predict_canvas(canvases)
    assert probabilities.shape == (3, NUM_STRUCTURES, 64, 64)
    assert probabilities.dtype == np.float32
    np.testing.assert_array_equal(probabilities, expected)
    # Smaller forward batches change only float rounding (CPU kernels pick other blockings).
    np.testing.assert_allclose(loaded.predict_canvas(canvases, batch_size=2), expected, atol=1e-5)
    # A fresh network with other weights really differs, so the equality above is not vacuous.
    torch.manual_seed(1)
    other = build_network_from_config(NetworkConfig(channels=CHANNELS)).eval()
    with torch.inference_mode():
        assert not np.allclose(torch.sigmoid(other(torch.from_numpy(canvases))).numpy(), expected)


def test_model_json_describes_network_preprocessing_and_labels(
    network: torch.nn.Module, tmp_path: Path
) -> None:
    save_model_artifacts(tmp_path, network, NetworkConfig(channels=CHANNELS), PREPROCESS)
    content = json.loads((tmp_path / CONFIG_FILE).read_text())
    assert content["network"]["channels"] == list(CHANNELS)
    assert content["network"]["out_channels"] == NUM_STRUCTURES
    assert content["preprocess"] == PREPROCESS.model_dump(mode="json")
    assert content["label_contract_version"] == LABEL_CONTRACT_VERSION
    assert content["structure_names"] == list(STRUCTURE_NAMES)
    assert content["threshold"] == 0.5
    assert len(content["weights_sha256"]) == 64
    config = ModelConfig.model_validate(content)
    assert config.preprocess == PREPROCESS
    assert config_hash(config.preprocess) == config_hash(PREPROCESS)


def test_loading_refuses_tampered_weights_and_bad_batches(network: torch.nn.Module, tmp_path: Path) -> None:
    save_model_artifacts(tmp_path, network, NetworkConfig(channels=CHANNELS), PREPROCESS)
    model = SegmentationModel.from_directory(tmp_path, device="cpu")
    with pytest.raises(ValueError, match="expected canvases"):
        model.predict_canvas(np.zeros((1, 1, 30, 32), dtype=np.float32))  # not a multiple of 4
    with pytest.raises(ValueError, match="expected canvases"):
        model.predict_canvas(np.zeros((1, 2, 32, 32), dtype=np.float32))
    # An extended canvas (a film larger than the training canvas) keeps its shape.
    assert model.predict_canvas(np.zeros((1, 1, 96, 64), dtype=np.float32)).shape == (1, 7, 96, 64)
    weights = tmp_path / WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256"):
        SegmentationModel.from_directory(tmp_path)
