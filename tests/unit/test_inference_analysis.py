"""The pure analysis of inference (film -> masks, confidence, measurements, timing): no store, no Ray."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from orthoseg.inference_analysis import (
    ImageAnalysis,
    analyze_radiograph,
    analyze_radiographs,
    columns_toward_patient_left,
    decode_radiograph,
)
from orthoseg.inference_config import InferenceConfig
from orthoseg.labels import NUM_STRUCTURES, STRUCTURE_NAMES
from orthoseg.measure import ImageMeasurements
from orthoseg.model import NetworkConfig
from orthoseg.model_package import ModelConfig, SegmentationModel
from orthoseg.settings import PreprocessConfig

PREPROCESS = PreprocessConfig(canvas_px=128, spacing_mm=2.0)
CONFIG = InferenceConfig(tta_passes=2)


class _BrightPixelsNetwork(torch.nn.Module):
    """Every structure wherever the canvas is brighter than 0.5: deterministic, no weights to train."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return ((images - 0.5) * 40.0).expand(-1, NUM_STRUCTURES, -1, -1)


@pytest.fixture(scope="module")
def model() -> SegmentationModel:
    config = ModelConfig(network=NetworkConfig(channels=(4, 8, 16)), preprocess=PREPROCESS)
    return SegmentationModel(_BrightPixelsNetwork(), config, device="cpu")


@pytest.fixture(scope="module")
def films() -> list[tuple[object, object]]:
    """Two small simulated AP knee films (single knee), decoded as the worker decodes a file."""
    from orthoseg.synth import SynthConfig, generate_case
    from orthoseg.synth.dicom import dataset_to_bytes

    config = SynthConfig(count=2, seed=3, image_px=192, views=("AP",), bilateral_fraction=0.0)
    return [decode_radiograph(dataset_to_bytes(generate_case(i, config).dataset)) for i in range(2)]


def test_a_synthetic_film_gives_masks_confidence_measurements_and_timing(
    model: SegmentationModel, films: list[tuple[object, object]]
) -> None:
    radiograph, header = films[0]
    pixels_before = radiograph.pixels.copy()

    result = analyze_radiograph(radiograph, header, model, CONFIG)

    assert isinstance(result, ImageAnalysis) and result.error is None
    assert result.radiograph is radiograph and result.header is header
    assert result.masks is not None and result.masks.dtype == bool
    assert result.masks.shape == (NUM_STRUCTURES, *radiograph.pixels.shape)
    assert result.masks.any()
    assert result.transform is not None and result.transform.canvas_spacing_mm > 0
    # Two passes: a confidence per structure found and for the image, each a fraction.
    assert result.confidence is not None and result.confidence.passes == 2
    assert set(result.confidence.structures) <= set(STRUCTURE_NAMES)
    assert all(0.0 <= value <= 1.0 for value in result.confidence.structures.values())
    # One knee on a single-knee film; its areas are the masks'.
    assert len(result.knees) == 1
    side, measured = result.knees[0]
    assert side in {"L", "R", ""} and isinstance(measured, ImageMeasurements)
    for channel, name in enumerate(STRUCTURE_NAMES):
        assert getattr(measured, f"{name}_area_px") == int(result.masks[channel].sum())
    assert result.drawing is not None
    assert result.seconds > 0 and result.forward_share_seconds > 0
    # Pure: the input film is left as it was.
    np.testing.assert_array_equal(radiograph.pixels, pixels_before)


def test_the_analysis_is_deterministic(model: SegmentationModel, films: list[tuple[object, object]]) -> None:
    first = analyze_radiographs(films, model, CONFIG)
    second = analyze_radiographs(films, model, CONFIG)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a.masks, b.masks)
        assert [(s, m.model_dump()) for s, m in a.knees] == [(s, m.model_dump()) for s, m in b.knees]
        assert a.confidence == b.confidence


def test_one_pass_has_no_confidence(model: SegmentationModel, films: list[tuple[object, object]]) -> None:
    result = analyze_radiograph(*films[0], model, InferenceConfig(tta_passes=1))
    assert result.confidence is None and result.masks is not None and result.knees


def test_a_batch_keeps_its_order_and_a_failing_film_stops_no_other(
    model: SegmentationModel, films: list[tuple[object, object]], monkeypatch: pytest.MonkeyPatch
) -> None:
    import orthoseg.preprocessing as preprocessing

    broken_uid = films[1][0].sop_instance_uid
    original = preprocessing.preprocess_radiograph

    def preprocess(pixels: np.ndarray, spacing: object, config: PreprocessConfig) -> object:
        if pixels is films[1][0].pixels:
            raise ValueError("cannot place this film on a canvas")
        return original(pixels, spacing, config)

    monkeypatch.setattr(preprocessing, "preprocess_radiograph", preprocess)
    results = analyze_radiographs([films[0], films[1], films[0]], model, CONFIG)

    assert [r.radiograph.sop_instance_uid for r in results] == [
        films[0][0].sop_instance_uid,
        broken_uid,
        films[0][0].sop_instance_uid,
    ]
    good, broken, again = results
    assert isinstance(broken.error, ValueError) and "canvas" in str(broken.error)
    assert broken.transform is None and broken.masks is None and broken.knees == []
    assert broken.forward_share_seconds == 0.0  # never reached the forward pass
    assert good.error is None and again.error is None
    np.testing.assert_array_equal(good.masks, again.masks)
    # One forward pass for the two films of one canvas shape: each gets half of it.
    assert good.forward_share_seconds == again.forward_share_seconds > 0


def test_a_failed_forward_pass_fails_its_group_only(
    model: SegmentationModel, films: list[tuple[object, object]], monkeypatch: pytest.MonkeyPatch
) -> None:
    import orthoseg.inference_analysis as analysis

    def fail(*args: object, **kwargs: object) -> object:
        raise RuntimeError("out of memory")

    monkeypatch.setattr(analysis, "predict_canvas_with_confidence", fail)
    results = analyze_radiographs(films, model, CONFIG)
    assert all(isinstance(r.error, RuntimeError) and r.masks is None for r in results)
    assert all(r.transform is not None and r.forward_share_seconds > 0 for r in results)
    with pytest.raises(RuntimeError, match="out of memory"):
        analyze_radiograph(*films[0], model, CONFIG)


@pytest.mark.parametrize(
    ("orientation", "expected"),
    [(["L", "F"], True), (["R", "F"], False), ("RF", False), (None, True), ([], True), (5, True)],
)
def test_columns_toward_patient_left(orientation: object, expected: bool) -> None:
    assert columns_toward_patient_left(SimpleNamespace(PatientOrientation=orientation)) is expected
