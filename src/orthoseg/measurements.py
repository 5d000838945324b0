"""Compatibility module: the measurements now live in ``orthoseg.measure`` (one module per job).

``ImageMeasurements``, ``MeasurementConfig`` and ``measure_image`` keep their import path here for
``inference.py`` and other callers.
"""

from __future__ import annotations

from orthoseg.measure import (
    QUALITY_FLAGS,
    ImageMeasurements,
    MeasurementConfig,
    measure_image,
    structure_areas_mm2,
    structure_areas_px,
)
from orthoseg.measure.category import CATEGORIES as IMPLANT_TYPES
from orthoseg.measure.geometry import angle_between_deg

__all__ = [
    "IMPLANT_TYPES",
    "QUALITY_FLAGS",
    "ImageMeasurements",
    "MeasurementConfig",
    "angle_between_deg",
    "measure_image",
    "structure_areas_mm2",
    "structure_areas_px",
]
