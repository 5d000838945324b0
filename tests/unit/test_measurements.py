"""Measurements from known masks: exact areas, signed axes of rotated shafts, implant rules, quality."""

from __future__ import annotations

import math

import numpy as np
import pytest

from orthoseg.labels import NUM_STRUCTURES, structure
from orthoseg.measurements import ImageMeasurements, MeasurementConfig, measure_image

SPACING = (0.5, 0.5)
SHAPE = (600, 400)


def _rotated_rect(centre: tuple[float, float], length: float, width: float, angle_deg: float) -> np.ndarray:
    """A rectangle (long side along rows when angle is 0) rotated toward increasing columns by angle_deg."""
    rows, cols = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]].astype(np.float64)
    a = math.radians(angle_deg)
    along = (rows - centre[0]) * math.cos(a) + (cols - centre[1]) * math.sin(a)
    across = -(rows - centre[0]) * math.sin(a) + (cols - centre[1]) * math.cos(a)
    return (np.abs(along) <= length / 2) & (np.abs(across) <= width / 2)


def _box(r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    mask = np.zeros(SHAPE, dtype=bool)
    mask[r0:r1, c0:c1] = True
    return mask


def _knee(femur_deg: float = 0.0, tibia_deg: float = 0.0) -> np.ndarray:
    """Femur shaft above, tibia shaft below (300 mm x 30 mm bones at 0.5 mm/px), no implant."""
    masks = np.zeros((NUM_STRUCTURES, *SHAPE), dtype=bool)
    masks[structure("femur").channel] = _rotated_rect((150, 200), 280, 60, femur_deg)
    masks[structure("tibia").channel] = _rotated_rect((450, 200), 280, 60, tibia_deg)
    return masks


def _with_components(masks: np.ndarray, tibial: np.ndarray, cement: bool = True) -> np.ndarray:
    masks = masks.copy()
    masks[structure("femoral_component").channel] = _box(250, 300, 165, 235)
    masks[structure("tibial_component").channel] = tibial
    if cement:
        masks[structure("cement").channel] = _box(340, 344, 170, 230)
    return masks


def test_areas_are_exact_from_mask_and_spacing() -> None:
    masks = np.zeros((NUM_STRUCTURES, 200, 300), dtype=bool)
    masks[structure("femur").channel, 10:110, 20:70] = True  # 5000 px
    masks[structure("cement").channel, 150:153, 0:10] = True  # 30 px
    result = measure_image(masks, (0.2, 0.3))
    assert result.femur_area_px == 5000
    assert result.femur_area_mm2 == pytest.approx(5000 * 0.2 * 0.3, rel=1e-12)
    assert result.cement_area_mm2 == pytest.approx(30 * 0.06, rel=1e-12)
    assert result.tibia_area_mm2 == 0.0
    assert set(ImageMeasurements.model_fields) >= {f"{n}_area_mm2" for n in ("femur", "tibia", "patella")}


@pytest.mark.parametrize(("femur_deg", "tibia_deg"), [(0.0, 0.0), (3.0, -4.0), (-6.0, 2.5), (8.0, 8.0)])
def test_tibiofemoral_angle_from_rotated_shafts(femur_deg: float, tibia_deg: float) -> None:
    result = measure_image(_knee(femur_deg, tibia_deg), SPACING, laterality="R", view_position="AP")
    assert "axis" not in result.measurement_flags, result.measurement_flags
    assert result.femur_axis_deg == pytest.approx(femur_deg, abs=0.3)
    assert result.tibia_axis_deg == pytest.approx(tibia_deg, abs=0.3)
    # Right knee, columns toward the patient's left: lateral is toward decreasing columns, and a femur
    # turned toward increasing columns at its distal end leans laterally at its top (valgus positive).
    assert result.tibiofemoral_angle_deg == pytest.approx(femur_deg - tibia_deg, abs=0.3)
    left = measure_image(_knee(femur_deg, tibia_deg), SPACING, laterality="L", view_position="AP")
    assert left.tibiofemoral_angle_deg == pytest.approx(tibia_deg - femur_deg, abs=0.3)


def test_anisotropic_spacing_measures_angles_in_mm() -> None:
    # A vertical femur and tibia stay collinear whatever the spacing; areas follow both spacings.
    result = measure_image(_knee(), (0.5, 0.25), laterality="R", view_position="AP")
    assert result.tibiofemoral_angle_deg == pytest.approx(0.0, abs=0.5)
    assert result.femur_area_mm2 == pytest.approx(result.femur_area_px * 0.125)


def test_native_knee_has_no_implant_and_no_fixation() -> None:
    result = measure_image(_knee(), SPACING, laterality="R", view_position="AP")
    assert result.implant_type == "native"
    assert result.fixation is None


def test_total_knee_cemented_and_uncemented() -> None:
    tray = _box(310, 340, 172, 228)  # full tibial width (56 of 60 px), 15 mm tall
    cemented = measure_image(_with_components(_knee(), tray), SPACING, laterality="R", view_position="AP")
    assert cemented.implant_type == "tka"
    assert cemented.fixation == "cemented"
    assert cemented.tibial_component_extent_mm == pytest.approx(15.0, abs=1.0)
    bare = measure_image(_with_components(_knee(), tray, cement=False), SPACING, view_position="AP")
    assert bare.implant_type == "tka"
    assert bare.fixation == "uncemented"


def test_stemmed_revision_reaches_far_down_the_tibia() -> None:
    tibial = _box(310, 330, 172, 228) | _box(330, 530, 192, 208)  # tray + 100 mm stem
    result = measure_image(_with_components(_knee(), tibial), SPACING, laterality="L", view_position="AP")
    assert result.implant_type == "revision_tka"
    assert result.tibial_component_extent_mm == pytest.approx(110.0, abs=2.0)


@pytest.mark.parametrize(
    ("laterality", "on_plus_columns", "expected"),
    [
        ("R", True, "uka_medial"),
        ("R", False, "uka_lateral"),
        ("L", True, "uka_lateral"),
        ("L", False, "uka_medial"),
        ("", True, "uka"),
    ],
)
def test_unicompartmental_side_from_laterality(laterality: str, on_plus_columns: bool, expected: str) -> None:
    # Radiological AP convention: columns increase toward the patient's left, so a right knee's
    # medial plateau (toward the midline) is on the increasing-column side.
    tray = _box(310, 330, 202, 228) if on_plus_columns else _box(310, 330, 172, 198)
    masks = _with_components(_knee(), tray)
    femoral = _box(270, 300, 202, 228) if on_plus_columns else _box(270, 300, 172, 198)
    masks[structure("femoral_component").channel] = femoral
    result = measure_image(masks, SPACING, laterality=laterality, view_position="AP")
    assert result.implant_type == expected
    assert result.tibial_component_width_fraction is not None and result.tibial_component_width_fraction < 0.6
    flipped = measure_image(
        masks, SPACING, laterality=laterality, view_position="AP", columns_toward_patient_left=False
    )
    opposite = {"uka_medial": "uka_lateral", "uka_lateral": "uka_medial", "uka": "uka"}
    assert flipped.implant_type == opposite[expected]


def test_lateral_view_tells_uka_by_the_missing_flange_but_not_its_side() -> None:
    masks = _with_components(_knee(), _box(310, 330, 172, 228))
    masks[structure("patella").channel] = _box(200, 260, 250, 280)
    short = measure_image(masks, SPACING, laterality="R", view_position="LL")
    assert short.implant_type == "uka"  # 25 mm tall femoral component: no anterior flange
    masks[structure("femoral_component").channel] = _box(200, 300, 165, 235)
    assert measure_image(masks, SPACING, laterality="R", view_position="LL").implant_type == "tka"


def test_quality_flags() -> None:
    empty = measure_image(np.zeros((NUM_STRUCTURES, 64, 64), dtype=bool), (0.2, 0.2))
    assert empty.quality_flag == "no_knee_found"
    assert empty.implant_type == "unknown"
    assert empty.tibiofemoral_angle_deg is None

    # Without spacing the nominal 0.15 mm/px makes these bones small: lower the bar for this check.
    no_spacing = measure_image(
        _knee(), None, view_position="AP", config=MeasurementConfig(min_bone_area_mm2=100)
    )
    assert no_spacing.quality_flag == "no_pixel_spacing"
    assert no_spacing.femur_area_mm2 is None
    assert no_spacing.femur_area_px > 0

    same = _knee()
    same[structure("tibia").channel] = same[structure("femur").channel]
    assert measure_image(same, SPACING).quality_flag == "implausible_anatomy"

    bilateral = measure_image(_knee(), SPACING, laterality="B")
    assert bilateral.quality_flag == "bilateral_film"
    assert bilateral.implant_type == "unknown" and bilateral.fixation is None

    # Too little femoral shaft above the joint: the axis and the angle are refused, and flagged.
    short = _knee()
    short[structure("femur").channel, :210] = False  # 40 mm of femur above the joint
    refused = measure_image(short, SPACING, laterality="R", view_position="AP")
    assert refused.femur_axis_deg is None and refused.tibiofemoral_angle_deg is None
    assert refused.quality_flag == "partial"
    assert "femur_axis:" in refused.measurement_flags


def test_resurfaced_patella_cement_does_not_make_a_knee_cemented() -> None:
    tray = _box(310, 340, 172, 228)
    masks = _with_components(_knee(), tray, cement=False)
    masks[structure("patella").channel] = _box(200, 260, 250, 280)
    masks[structure("cement").channel] = _box(230, 236, 250, 280)  # inside the patella
    assert measure_image(masks, SPACING, laterality="R", view_position="AP").fixation == "uncemented"


def test_wrong_shape_is_refused() -> None:
    with pytest.raises(ValueError, match="masks must have shape"):
        measure_image(np.zeros((3, 10, 10), dtype=bool), SPACING)
