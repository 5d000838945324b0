"""Radiographs to masks, confidence and measurements: the pure part of batch inference.

No store, no Ray: films (pixels and their DICOM header) and a loaded model in, one ``ImageAnalysis`` per
film out. The Ray actor (``orthoseg.inference_worker``) calls it per batch, tests and notebooks call it
directly. A film that cannot be analysed gets its ``error`` instead of stopping the others.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from orthoseg.confidence import ModelConfidence, predict_canvas_with_confidence
from orthoseg.inference_config import InferenceConfig

if TYPE_CHECKING:
    from orthoseg.measure import ImageMeasurements
    from orthoseg.measure.drawing import MeasurementDrawing
    from orthoseg.model_package import SegmentationModel
    from orthoseg.preprocessing import CanvasTransform
    from orthoseg.radiograph import Radiograph


@dataclass
class ImageAnalysis:
    """What the model found on one film, and how long it took.

    Attributes:
        radiograph: the film (pixels in presentation order, spacing, UID, view, laterality).
        header: its DICOM header (the SEG written from the analysis references it).
        transform: where the film sits on the network's canvas; None when preprocessing failed.
        masks: (C, rows, columns) boolean masks on the film's grid, label-contract order.
        confidence: agreement of the test-time augmented passes (None for one pass).
        knees: (side, measurements) of every knee found, right knee first on a bilateral film.
        drawing: the measurements' geometry in film coordinates, for the overlay.
        error: why the film could not be analysed (then masks, knees and drawing are empty).
        seconds: this film's own analysis time: preprocessing, masks and measurements (s).
        forward_share_seconds: the batched forward pass's time divided by the films in it (s).
    """

    radiograph: Radiograph
    header: Any
    transform: CanvasTransform | None = None
    masks: np.ndarray | None = None
    confidence: ModelConfidence | None = None
    knees: list[tuple[str, ImageMeasurements]] = field(default_factory=list)
    drawing: MeasurementDrawing | None = None
    error: Exception | None = None
    seconds: float = 0.0
    forward_share_seconds: float = 0.0


def decode_radiograph(data: bytes) -> tuple[Radiograph, Any]:
    """A film's presentation-ready pixels and its DICOM header, from the file's bytes.

    Raises:
        RadiographError: when the bytes are not a usable radiograph.
    """
    from orthoseg.radiograph import read_header, read_radiograph

    return read_radiograph(data), read_header(data)


def columns_toward_patient_left(header: Any) -> bool:
    """From PatientOrientation's row direction ('L' or 'R'); the radiological AP convention otherwise."""
    orientation = getattr(header, "PatientOrientation", None)
    try:
        first = str(orientation[0]).upper() if orientation else ""
    except (TypeError, IndexError):
        first = ""
    return not first.startswith("R")


def analyze_radiographs(
    films: Sequence[tuple[Radiograph, Any]], model: SegmentationModel, config: InferenceConfig
) -> list[ImageAnalysis]:
    """Segment and measure films; one forward pass per canvas shape.

    Args:
        films: (radiograph, DICOM header) per film.
        model: the loaded model; its own preprocessing (saved with it) is used, never the settings'.
        config: test-time passes and confidence, measurement thresholds.

    Returns:
        One ``ImageAnalysis`` per film, in order; a film that failed carries its ``error``.
    """
    results = [ImageAnalysis(radiograph, header) for radiograph, header in films]
    canvases: dict[int, np.ndarray] = {}
    for index, result in enumerate(results):
        canvas = _prepare(result, model)
        if canvas is not None:
            canvases[index] = canvas
    # Films larger than the training canvas get larger canvases: one forward pass per canvas shape.
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for index, canvas in canvases.items():
        by_shape.setdefault(canvas.shape, []).append(index)
    for indices in by_shape.values():
        group = [results[i] for i in indices]
        predicted = _forward(group, np.stack([canvases[i] for i in indices])[:, None], model, config)
        if predicted is None:
            continue
        probabilities, confidences = predicted
        for position, result in enumerate(group):
            confidence = None if confidences is None else confidences[position]
            _measure(result, probabilities[position], confidence, model, config)
    return results


def analyze_radiograph(
    radiograph: Radiograph, header: Any, model: SegmentationModel, config: InferenceConfig | None = None
) -> ImageAnalysis:
    """One film's analysis (``analyze_radiographs`` of one film).

    Raises:
        Exception: the film's own error, when it could not be analysed.
    """
    result = analyze_radiographs([(radiograph, header)], model, config or InferenceConfig())[0]
    if result.error is not None:
        raise result.error
    return result


def _prepare(result: ImageAnalysis, model: SegmentationModel) -> np.ndarray | None:
    """The film's canvas, as the model was trained on (None when it cannot be made: ``result.error``)."""
    from orthoseg.preprocessing import preprocess_radiograph

    tick = time.perf_counter()
    try:
        radiograph = result.radiograph
        canvas, result.transform = preprocess_radiograph(
            radiograph.pixels, radiograph.pixel_spacing_mm, model.preprocess
        )
    except Exception as error:  # one broken film never stops the others
        result.error = error
        canvas = None
    result.seconds += time.perf_counter() - tick
    return canvas


def _forward(
    group: list[ImageAnalysis], canvases: np.ndarray, model: SegmentationModel, config: InferenceConfig
) -> tuple[np.ndarray, list[ModelConfidence] | None] | None:
    """Mean probabilities over the test-time augmented passes of one batch of same-shape canvases (one
    pass: ``predict_canvas``'s), and each canvas's confidence; None when the pass failed (every film of
    the group then carries the error). Each film gets an equal share of the pass's time: the pass cannot
    be timed per film."""
    tick = time.perf_counter()
    try:
        return predict_canvas_with_confidence(
            model,
            canvases,
            [r.transform.canvas_spacing_mm for r in group if r.transform is not None],
            config.tta_passes,
            config.confidence,
            batch_size=len(group),
        )
    except Exception as error:
        for result in group:
            result.error = error
        return None
    finally:
        share = (time.perf_counter() - tick) / len(group)
        for result in group:
            result.forward_share_seconds = share


def _measure(
    result: ImageAnalysis,
    probabilities: np.ndarray,
    confidence: ModelConfidence | None,
    model: SegmentationModel,
    config: InferenceConfig,
) -> None:
    """The film's masks on its own grid (the model's post-processing) and the measurements of its knees."""
    from orthoseg.measure.drawing import MeasurementDrawing
    from orthoseg.measure.field import detect_field
    from orthoseg.measure.knees import measure_knees

    tick = time.perf_counter()
    try:
        radiograph = result.radiograph
        assert result.transform is not None  # only prepared films reach the forward pass
        # The collimated field, found once: post-processing clears its shadow, measurement reads it.
        field = detect_field(radiograph.pixels)
        masks = model.native_masks(probabilities, result.transform, radiograph.pixels, field)
        drawing = MeasurementDrawing()
        knees = measure_knees(
            masks,
            radiograph.pixel_spacing_mm,
            laterality=radiograph.laterality,
            view_position=radiograph.view_position,
            columns_toward_patient_left=columns_toward_patient_left(result.header),
            config=config.measurement,
            pixels=radiograph.pixels,
            drawing=drawing,
            exposed_field=field.mask(),
        )
    except Exception as error:
        result.error = error
    else:
        result.masks, result.drawing, result.knees, result.confidence = masks, drawing, knees, confidence
    result.seconds += time.perf_counter() - tick
