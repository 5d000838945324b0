"""Post-processing: stray fragments go, real structures (both knees of a standing film) stay."""

from __future__ import annotations

import numpy as np
import pytest

from orthoseg.labels import NUM_STRUCTURES, STRUCTURE_NAMES
from orthoseg.postprocess import (
    PostprocessConfig,
    clean_probabilities,
    clear_collimated_borders,
    knee_joint_frame,
)

CH = {name: index for index, name in enumerate(STRUCTURE_NAMES)}


def _blank(side: int = 64) -> np.ndarray:
    return np.zeros((NUM_STRUCTURES, side, side), dtype=np.float32)


def test_a_small_stray_blob_is_removed_and_the_structure_kept() -> None:
    probabilities = _blank()
    probabilities[CH["femur"], 5:40, 10:30] = 0.9  # the femur
    probabilities[CH["femur"], 55:58, 55:58] = 0.8  # a stray blob: 9 px against 700
    cleaned = clean_probabilities(probabilities, 0.5, 1.0, PostprocessConfig())
    assert cleaned[CH["femur"], 55:58, 55:58].max() == 0.0
    np.testing.assert_array_equal(cleaned[CH["femur"], 5:40, 10:30], probabilities[CH["femur"], 5:40, 10:30])


def test_two_knees_of_a_standing_film_are_both_kept() -> None:
    probabilities = _blank()
    probabilities[CH["tibia"], 20:50, 5:25] = 0.9
    probabilities[CH["tibia"], 20:48, 40:60] = 0.9
    cleaned = clean_probabilities(probabilities, 0.5, 1.0, PostprocessConfig())
    np.testing.assert_array_equal(cleaned, probabilities)


def test_cement_away_from_any_implant_is_removed() -> None:
    probabilities = _blank()
    probabilities[CH["tibial_component"], 30:34, 10:40] = 0.9
    probabilities[CH["cement"], 34:36, 10:40] = 0.7  # against the tray: kept
    probabilities[CH["cement"], 5:8, 50:60] = 0.7  # 26 px away at 1 mm/px: removed
    cleaned = clean_probabilities(probabilities, 0.5, 1.0, PostprocessConfig(cement_max_distance_mm=5.0))
    assert cleaned[CH["cement"], 34:36, 10:40].min() == pytest.approx(0.7)
    assert cleaned[CH["cement"], 5:8, 50:60].max() == 0.0
    # The same distance in pixels is within reach when pixels are 0.1 mm.
    near = clean_probabilities(
        probabilities, 0.5, 0.1, PostprocessConfig(cement_max_distance_mm=5.0, min_implant_piece_mm2=0.0)
    )
    assert near[CH["cement"], 5:8, 50:60].min() == pytest.approx(0.7)


def test_cement_without_any_implant_is_removed_and_disabled_keeps_everything() -> None:
    probabilities = _blank()
    probabilities[CH["cement"], 10:20, 10:20] = 0.9
    assert clean_probabilities(probabilities, 0.5, 1.0, PostprocessConfig())[CH["cement"]].max() == 0.0
    kept = clean_probabilities(probabilities, 0.5, 1.0, PostprocessConfig(enabled=False))
    np.testing.assert_array_equal(kept, probabilities)
    assert probabilities[CH["cement"]].max() == pytest.approx(0.9)  # the input is not modified


def test_nothing_is_kept_in_a_shutters_shadow() -> None:
    """A bar of collimator shadow along the left edge called tibia (as a network that never saw a shutter
    may call it) is emptied; the tibia in the exposed field stays."""
    rng = np.random.default_rng(0)
    pixels = 0.3 + 0.05 * rng.standard_normal((80, 60))
    pixels[:, 30:50] += 0.3  # the leg
    pixels[:, :12] = 0.97 + 0.005 * rng.standard_normal((80, 12))  # the shutter's shadow
    masks = np.zeros((NUM_STRUCTURES, 80, 60), dtype=bool)
    masks[CH["tibia"], 10:70, 2:10] = True
    masks[CH["tibia"], 10:70, 32:48] = True
    cleared = clear_collimated_borders(masks.copy(), pixels)
    assert not cleared[CH["tibia"], :, :12].any()
    np.testing.assert_array_equal(cleared[CH["tibia"], :, 12:], masks[CH["tibia"], :, 12:])


def test_nothing_is_kept_in_a_tilted_shutters_shadow() -> None:
    """The left shutter turned by 5 degrees: its shadow is a wedge, 8 columns wide at the top and 22 at
    the bottom. Tibia called in the wedge is emptied; the tibia beside it, in the field, stays."""
    rng = np.random.default_rng(1)
    pixels = 0.3 + 0.05 * rng.standard_normal((160, 120))
    pixels[:, 50:90] += 0.3  # the leg
    rows, cols = np.mgrid[0:160, 0:120]
    wedge = cols < 8 + rows * np.tan(np.radians(5.0))
    pixels[wedge] = (0.97 + 0.005 * rng.standard_normal((160, 120)))[wedge]
    masks = np.zeros((NUM_STRUCTURES, 160, 120), dtype=bool)
    masks[CH["tibia"], 10:150, 2:40] = True
    masks[CH["tibia"], 10:150, 52:88] = True
    cleared = clear_collimated_borders(masks.copy(), pixels)
    inner = cols < 7 + rows * np.tan(np.radians(5.0))  # the wedge but for its edge's pixel sliver
    assert not cleared[CH["tibia"]][inner].any()
    assert cleared[CH["tibia"]][wedge].sum() <= 5
    kept = masks[CH["tibia"]] & ~wedge
    assert cleared[CH["tibia"]][kept].mean() > 0.99  # at most a pixel's sliver along the wedge's edge
    np.testing.assert_array_equal(cleared[CH["tibia"], :, 45:], masks[CH["tibia"], :, 45:])


def _knee(side: int = 200) -> np.ndarray:
    """Femur above (rows 0-95), tibia below (rows 105-200) a joint at row ~100, 1 mm pixels."""
    probabilities = _blank(side)
    probabilities[CH["femur"], 0:95, 80:120] = 0.9
    probabilities[CH["femoral_component"], 85:98, 75:125] = 0.9
    probabilities[CH["tibial_component"], 102:110, 75:125] = 0.9
    probabilities[CH["tibia"], 105:200, 80:120] = 0.9
    probabilities[CH["fibula"], 115:200, 125:132] = 0.9
    probabilities[CH["patella"], 70:90, 70:78] = 0.9
    return probabilities


def test_pieces_on_the_wrong_side_of_the_joint_are_removed() -> None:
    probabilities = _knee()
    # A femoral stem taken for a tibial component and tibia, far above the joint; "femur" in the soft
    # tissue beside the tibial shaft. Each is large enough to survive the fragment rule.
    probabilities[CH["tibial_component"], 10:60, 95:105] = 0.8
    probabilities[CH["tibia"], 20:50, 20:50] = 0.8
    probabilities[CH["femur"], 150:190, 20:45] = 0.8
    cleaned = clean_probabilities(probabilities, 0.5, 1.0, PostprocessConfig())
    assert cleaned[CH["tibial_component"], 10:60, 95:105].max() == 0.0
    assert cleaned[CH["tibia"], 20:50, 20:50].max() == 0.0
    assert cleaned[CH["femur"], 150:190, 20:45].max() == 0.0
    # The knee itself, the patella beside the femur and the fibula beside the tibia stay.
    np.testing.assert_array_equal(cleaned, np.where(cleaned > 0, _knee(), 0.0))
    np.testing.assert_array_equal(cleaned > 0.5, _knee() > 0.5)
    # With the rule off, they stay.
    kept = clean_probabilities(probabilities, 0.5, 1.0, PostprocessConfig(joint_side_margin_mm=0.0))
    assert kept[CH["tibial_component"], 10:60, 95:105].min() == pytest.approx(0.8)


def test_the_joint_rule_follows_a_film_that_is_not_upright() -> None:
    probabilities = np.rot90(_knee(), k=1, axes=(1, 2)).copy()  # femur to the left, tibia to the right
    stray = np.zeros_like(probabilities[0], dtype=bool)
    stray[95:105, 10:60] = True  # a tibial component along the femoral shaft
    probabilities[CH["tibial_component"]][stray] = 0.8
    cleaned = clean_probabilities(probabilities, 0.5, 1.0, PostprocessConfig())
    assert cleaned[CH["tibial_component"]][stray].max() == 0.0
    assert cleaned[CH["tibial_component"]].max() > 0.5  # the tray stays
    # A piece within the margin of the joint stays (a tibial spine reaching up between the condyles).
    near = _knee()
    near[CH["tibia"], 92:105, 98:102] = 0.9
    np.testing.assert_array_equal(clean_probabilities(near, 0.5, 1.0, PostprocessConfig()), near)


def test_specks_of_implant_on_a_native_knee_are_removed_with_their_cement() -> None:
    """A network unsure of dense native bone scatters small "component" specks (and cement beside them):
    every speck is below the smallest real component's area, so the film keeps no implant at all."""
    probabilities = _knee()
    probabilities[CH["femoral_component"]] = 0.0
    probabilities[CH["tibial_component"]] = 0.0
    for row, col in ((60, 85), (70, 100), (80, 110)):
        probabilities[CH["femoral_component"], row : row + 4, col : col + 5] = 0.8  # 20 mm² each at 1 mm
        probabilities[CH["cement"], row + 4 : row + 6, col : col + 5] = 0.7
    cleaned = clean_probabilities(probabilities, 0.5, 1.0, PostprocessConfig())
    assert cleaned[CH["femoral_component"]].max() == 0.0
    assert cleaned[CH["cement"]].max() == 0.0
    # A real component (here 13 x 50 mm) stays whole.
    real = _knee()
    np.testing.assert_array_equal(clean_probabilities(real, 0.5, 1.0, PostprocessConfig()), real)
    # The same specks at 4 mm pixels (320 mm² each) are no specks.
    far_rules_off = PostprocessConfig(joint_side_margin_mm=0.0, component_joint_reach_mm=0.0)
    coarse = clean_probabilities(probabilities, 0.5, 4.0, far_rules_off)
    assert coarse[CH["femoral_component"]].max() == pytest.approx(0.8)


def test_a_component_that_does_not_reach_the_joint_is_removed() -> None:
    """Dense bone taken for metal on a native knee (the patella over the femur, 40 mm above the joint)
    is no femoral component; a tibial component 40 mm down the shaft is none either. Components at the
    joint stay, and so does a long stem hanging from a tray at the joint."""
    probabilities = _knee()
    probabilities[CH["femoral_component"]] = 0.0
    probabilities[CH["tibial_component"]] = 0.0
    probabilities[CH["femoral_component"], 45:60, 88:112] = 0.8  # 360 mm², lowest point 40 mm up
    probabilities[CH["tibial_component"], 140:155, 90:110] = 0.8  # 300 mm², highest point 40 mm down
    cleaned = clean_probabilities(probabilities, 0.5, 1.0, PostprocessConfig())
    assert cleaned[CH["femoral_component"]].max() == 0.0
    assert cleaned[CH["tibial_component"]].max() == 0.0
    stemmed = _knee()
    stemmed[CH["tibial_component"], 110:190, 97:103] = 0.9  # a keel and stem below the tray
    stemmed[CH["femoral_component"], 20:85, 97:103] = 0.9  # a femoral stem above the box
    np.testing.assert_array_equal(clean_probabilities(stemmed, 0.5, 1.0, PostprocessConfig()), stemmed)
    # The mask breaks 6 mm below the keel: the stem starts 34 mm below the joint and stays with the tray.
    broken = stemmed.copy()
    broken[CH["tibial_component"], 128:134, 97:103] = 0.0
    np.testing.assert_array_equal(clean_probabilities(broken, 0.5, 1.0, PostprocessConfig()), broken)
    # A stray piece far up the femur of an implanted knee goes; the component at the joint stays.
    stray = _knee()
    stray[CH["femoral_component"], 20:45, 97:103] = 0.8  # 150 mm², 40 mm above the component
    cleaned = clean_probabilities(stray, 0.5, 1.0, PostprocessConfig())
    assert cleaned[CH["femoral_component"], 20:45].max() == 0.0
    np.testing.assert_array_equal(cleaned, np.where(cleaned > 0, _knee(), 0.0))
    off = clean_probabilities(probabilities, 0.5, 1.0, PostprocessConfig(component_joint_reach_mm=0.0))
    assert off[CH["femoral_component"]].max() == pytest.approx(0.8)


def test_on_a_film_of_both_knees_the_joint_is_read_on_one_knee() -> None:
    """The larger femur is the right knee's, the larger tibia the left knee's: the joint is still read
    between a femur and its own tibia, so both knees keep their components."""
    right, left = _knee(), _knee()
    right[CH["femur"], 0:95, 70:130] = 0.9
    left[CH["tibia"], 105:200, 70:130] = 0.9
    both = np.concatenate([right, left], axis=2)  # 400 columns, the knees 200 mm apart
    frame = knee_joint_frame(both >= 0.5)
    assert frame is not None
    up, level = frame
    assert up == pytest.approx([-1.0, 0.0], abs=0.02) and 95 < -level < 105
    np.testing.assert_array_equal(clean_probabilities(both, 0.5, 1.0, PostprocessConfig()), both)
