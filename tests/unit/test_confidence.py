"""Test-time augmentation confidence: one pass is today's prediction; agreement is what it claims to be."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from orthoseg.confidence import (
    CanvasAugmentation,
    ConfidenceConfig,
    ModelConfidence,
    predict_canvas_with_confidence,
    predict_with_confidence,
    rank_annotate_next,
)
from orthoseg.evaluation import predict_native_masks
from orthoseg.inference import InferenceConfig, _record_confidence
from orthoseg.inference_outputs import knee_rows
from orthoseg.labels import NUM_STRUCTURES, STRUCTURE_NAMES
from orthoseg.model import NetworkConfig, build_network_from_config
from orthoseg.model_package import ModelConfig, SegmentationModel
from orthoseg.settings import PreprocessConfig

# A 64 x 64 film at 2 mm lands on a 64 px canvas at 2 mm unresampled: the canvas is the film itself.
SPACING_MM = (2.0, 2.0)
PREPROCESS = PreprocessConfig(canvas_px=64, spacing_mm=2.0, canvas_multiple=32, max_canvas_px=64)
NETWORK = NetworkConfig(channels=(4, 8, 16))
LOGIT_GAIN = 40.0


class _BrightPixelsNetwork(torch.nn.Module):
    """Every structure wherever the canvas is brighter than 0.5 (a sharp sigmoid), optionally only in the
    canvas's left half: a deterministic network, mirror-equivariant unless ``left_half_only``."""

    def __init__(self, left_half_only: bool = False) -> None:
        super().__init__()
        self.left_half_only = left_half_only

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = (images - 0.5) * LOGIT_GAIN
        if self.left_half_only:
            right = torch.arange(images.shape[-1], device=images.device) >= images.shape[-1] // 2
            logits = torch.where(right, torch.full_like(logits, -LOGIT_GAIN), logits)
        return logits.expand(-1, NUM_STRUCTURES, -1, -1)


def _model(network: torch.nn.Module) -> SegmentationModel:
    return SegmentationModel(network, ModelConfig(network=NETWORK, preprocess=PREPROCESS), device="cpu")


def _random_model() -> SegmentationModel:
    torch.manual_seed(0)
    return _model(build_network_from_config(NETWORK))


def _film_with_disc_left_of_centre() -> np.ndarray:
    """A 64 x 64 film: a bright disc (radius 9 px) centred 14 px left of the middle, on black."""
    rows, cols = np.mgrid[:64, :64]
    return (((rows - 30) ** 2 + (cols - 18) ** 2) <= 81).astype(np.float32) * 1000.0


def _noise_film() -> np.ndarray:
    return np.random.default_rng(3).random((80, 70)).astype(np.float32)


def test_one_pass_is_todays_prediction_without_confidence() -> None:
    model = _random_model()
    film = _noise_film()
    prediction = predict_with_confidence(model, film, (1.5, 1.5), passes=1)
    expected = predict_native_masks(model, film, (1.5, 1.5))
    assert prediction.masks.dtype == bool and prediction.masks.shape == (NUM_STRUCTURES, *film.shape)
    np.testing.assert_array_equal(prediction.masks, expected)
    assert prediction.confidence is None
    assert prediction.structure_confidence is None and prediction.image_confidence is None


def test_confidence_of_a_real_network_is_a_fraction_per_present_structure() -> None:
    model = _random_model()
    prediction = predict_with_confidence(model, _noise_film(), (1.5, 1.5), passes=4)
    confidence = prediction.confidence
    assert confidence is not None and confidence.passes == 4
    # Scored for the structures the reported masks hold (the same consensus, on the canvas).
    found = {name for name, mask in zip(STRUCTURE_NAMES, prediction.masks, strict=True) if mask.any()}
    assert set(confidence.structures) == found
    assert confidence.structures
    assert all(0.0 <= value <= 1.0 for value in confidence.structures.values())
    image_structures = [confidence.structures[n] for n in ConfidenceConfig().image_structures]
    assert confidence.image == min(image_structures)


def test_a_mirror_equivariant_network_agrees_with_itself() -> None:
    model = _model(_BrightPixelsNetwork())
    film = _film_with_disc_left_of_centre()
    # Identity, mirror, gamma: a pointwise network on a black-and-white film agrees exactly.
    exact = predict_with_confidence(model, film, SPACING_MM, passes=3).confidence
    assert exact is not None
    assert exact.structures == dict.fromkeys(STRUCTURE_NAMES, 1.0)
    assert exact.image == 1.0
    # The zoomed passes resample the disc's edge; undone, they agree (not undone: ~0.94).
    zoomed = predict_with_confidence(model, film, SPACING_MM, passes=8)
    assert zoomed.confidence is not None and zoomed.confidence.image is not None
    assert zoomed.confidence.image >= 0.99
    np.testing.assert_array_equal(zoomed.masks[0], film > 0)


def test_a_network_that_only_sees_the_left_half_is_less_confident() -> None:
    model = _model(_BrightPixelsNetwork(left_half_only=True))
    film = _film_with_disc_left_of_centre()
    prediction = predict_with_confidence(model, film, SPACING_MM, passes=3)
    # Identity and gamma find the disc; the mirrored pass sees it in the right half and finds nothing.
    assert prediction.confidence is not None and prediction.confidence.image is not None
    assert prediction.confidence.image == pytest.approx(2 / 3, abs=1e-6)
    np.testing.assert_array_equal(prediction.masks[0], film > 0)


def test_passes_and_augmentations_are_checked() -> None:
    model = _random_model()
    canvases = np.zeros((1, 1, 64, 64), dtype=np.float32)
    with pytest.raises(ValueError, match="passes must be between 1 and 8"):
        predict_canvas_with_confidence(model, canvases, [2.0], passes=9)
    with pytest.raises(ValueError, match="spacings"):
        predict_canvas_with_confidence(model, canvases, [2.0, 2.0], passes=2)
    with pytest.raises(ValueError, match="identity"):
        ConfidenceConfig(augmentations=(CanvasAugmentation(flip_columns=True),))
    with pytest.raises(ValueError, match="unknown structures"):
        ConfidenceConfig(image_structures=("femur", "meniscus"))
    with pytest.raises(ValueError, match="only 2 augmentations"):
        InferenceConfig(
            tta_passes=3,
            confidence=ConfidenceConfig(augmentations=(CanvasAugmentation(), CanvasAugmentation(gamma=0.8))),
        )


def test_annotate_next_ranks_least_confident_first_ties_by_uid() -> None:
    rows = [
        {"sop_instance_uid": "1.5", "status": "ok", "model_confidence": 0.9},
        {"sop_instance_uid": "1.3", "status": "ok", "model_confidence": 0.4},
        {"sop_instance_uid": "1.2", "status": "ok", "model_confidence": 0.4},
        {"sop_instance_uid": "1.1", "status": "failed", "model_confidence": 0.1},
        {"sop_instance_uid": "1.4", "status": "ok", "model_confidence": None},
        {"sop_instance_uid": "1.6", "status": "ok", "model_confidence": math.nan},
        {"sop_instance_uid": "1.7", "status": "ok"},
        {"sop_instance_uid": "1.8", "status": "ok", "model_confidence": 0.6},
    ]
    assert rank_annotate_next(rows, 3) == ["1.2", "1.3", "1.8"]
    assert rank_annotate_next(rows, 20) == ["1.2", "1.3", "1.8", "1.5"]
    assert rank_annotate_next(rows, 0) == []


def test_low_confidence_flags_the_row_and_makes_an_ok_image_partial() -> None:
    config = InferenceConfig(min_model_confidence=0.8)
    low = ModelConfidence({"femur": 0.71, "tibia": 0.95}, image=0.71, passes=4)
    row = {"measurement_flags": "femur_axis_deg:short shaft", "quality_flag": "ok", "quality_notes": ""}
    _record_confidence(row, low, config)
    assert row["model_confidence"] == 0.71 and row["confidence_femur"] == 0.71
    assert row["confidence_cement"] is None and row["tta_passes"] == config.tta_passes
    assert row["measurement_flags"] == "femur_axis_deg:short shaft; model_confidence:low (0.71)"
    assert row["quality_flag"] == "partial" and "0.71" in row["quality_notes"]

    worse = {"measurement_flags": "", "quality_flag": "implausible_anatomy"}
    _record_confidence(worse, low, config)
    assert worse["quality_flag"] == "implausible_anatomy"
    assert worse["measurement_flags"] == "model_confidence:low (0.71)"

    bilateral = {
        "measurement_flags": "",
        "quality_flag": "ok",
        "other_knees": [{"knee": "L", "measurement_flags": "tibial_slope:flaring", "quality_flag": "ok"}],
    }
    _record_confidence(bilateral, low, config)
    other = bilateral["other_knees"][0]  # type: ignore[index]
    assert other["measurement_flags"] == "tibial_slope:flaring; model_confidence:low (0.71)"
    assert other["quality_flag"] == "partial" and "0.71" in other["quality_notes"]
    assert "other_knees" not in {k for knee in knee_rows([bilateral]) for k in knee}
    assert [knee["quality_flag"] for knee in knee_rows([bilateral])] == ["partial", "partial"]

    confident = {"measurement_flags": "", "quality_flag": "ok"}
    _record_confidence(confident, ModelConfidence({"femur": 0.9}, image=0.9, passes=4), config)
    assert confident["quality_flag"] == "ok" and confident["measurement_flags"] == ""
    single = {"measurement_flags": "", "quality_flag": "ok"}
    _record_confidence(single, None, config)
    assert single["model_confidence"] is None and single["quality_flag"] == "ok"
