"""Measurements of a knee radiograph from its masks: category, fixation, axes, angles, lines, joint space.

Modules, one job each: ``config`` (thresholds), ``geometry`` (mm coordinates, angles), ``axes`` (shaft
axes), ``sides`` (medial/anterior on the image), ``components`` (component lines and extents),
``category`` (implant category and fixation), ``angles`` (Knee Society angles), ``joint_space``,
``lucency`` (radiolucent lines), ``result`` (the record), ``image`` (``measure_image``: one knee),
``knees`` (``measure_knees``: a bilateral film as two knees), ``drawing`` (the geometry to draw on an
overlay) and ``study`` (decisions across a study's films).
"""

from orthoseg.measure.config import MeasurementConfig
from orthoseg.measure.drawing import MeasurementDrawing
from orthoseg.measure.image import measure_image, structure_areas_mm2, structure_areas_px
from orthoseg.measure.knees import measure_knees
from orthoseg.measure.result import (
    AP_ZONES,
    LATERAL_ZONES,
    QUALITY_FLAGS,
    ZONE_FIELDS,
    ImageMeasurements,
    zone_values,
)

__all__ = [
    "AP_ZONES",
    "LATERAL_ZONES",
    "QUALITY_FLAGS",
    "ZONE_FIELDS",
    "ImageMeasurements",
    "MeasurementConfig",
    "MeasurementDrawing",
    "measure_image",
    "measure_knees",
    "structure_areas_mm2",
    "structure_areas_px",
    "zone_values",
]
