"""A standing bilateral film measured as two knees; a single knee or inseparable knees stay one record."""

from __future__ import annotations

import math

import numpy as np
import pytest

from orthoseg.labels import NUM_STRUCTURES, structure
from orthoseg.measure.config import MeasurementConfig
from orthoseg.measure.drawing import MeasurementDrawing
from orthoseg.measure.knees import measure_knees, split_column

SPACING = (0.5, 0.5)
HALF = (600, 300)


def _shafts(femur_deg: float, tibia_deg: float) -> np.ndarray:
    """One knee on a (600, 300) grid: femur and tibia shafts, 30 mm wide, leaning by the given angles."""
    rows, cols = np.mgrid[0 : HALF[0], 0 : HALF[1]].astype(np.float64)
    masks = np.zeros((NUM_STRUCTURES, *HALF), dtype=bool)
    for name, centre, angle in (("femur", 150, femur_deg), ("tibia", 450, tibia_deg)):
        a = math.radians(angle)
        along = (rows - centre) * math.cos(a) + (cols - 150) * math.sin(a)
        across = -(rows - centre) * math.sin(a) + (cols - 150) * math.cos(a)
        masks[structure(name).channel] = (np.abs(along) <= 140) & (np.abs(across) <= 30)
    return masks


def _bilateral() -> np.ndarray:
    """Right knee on the image's left half (tibia leaning 4 deg), left knee on the right half (0 deg)."""
    return np.concatenate([_shafts(0.0, 4.0), _shafts(0.0, 0.0)], axis=2)


def test_bilateral_film_gives_one_record_per_knee() -> None:
    drawing = MeasurementDrawing()
    knees = measure_knees(_bilateral(), SPACING, laterality="B", view_position="AP", drawing=drawing)
    assert [side for side, _ in knees] == ["R", "L"]
    right, left = (result for _, result in knees)
    assert right.quality_flag != "bilateral_film" and left.quality_flag != "bilateral_film"
    assert abs(right.tibiofemoral_angle_deg) == pytest.approx(4.0, abs=0.3)
    assert left.tibiofemoral_angle_deg == pytest.approx(0.0, abs=0.3)
    # The left knee's axes are drawn in the film's coordinates, on the right half.
    axes = [s for s in drawing.segments if s.label == "femur axis"]
    assert len(axes) == 2
    assert sorted(s.start[1] for s in axes) == [pytest.approx(150, abs=3), pytest.approx(450, abs=3)]


def test_split_needs_two_separate_femora() -> None:
    assert split_column(_bilateral(), SPACING, _config()) == pytest.approx(300, abs=2)
    one = np.concatenate([_shafts(0.0, 0.0), np.zeros((NUM_STRUCTURES, *HALF), dtype=bool)], axis=2)
    assert split_column(one, SPACING, _config()) is None
    knees = measure_knees(one, SPACING, laterality="B", view_position="AP")
    assert len(knees) == 1 and knees[0][1].quality_flag == "bilateral_film"


def test_single_knee_film_is_measured_as_before() -> None:
    knees = measure_knees(_shafts(0.0, 3.0), SPACING, laterality="R", view_position="AP")
    assert len(knees) == 1 and knees[0][0] == "R"
    assert knees[0][1].quality_flag != "bilateral_film"


def _config() -> MeasurementConfig:
    return MeasurementConfig()
