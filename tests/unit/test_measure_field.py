"""The collimator's shadow found along each film edge, and shaft levels cut by it left out of the axis."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from orthoseg.measure.axes import fit_shaft_axis
from orthoseg.measure.field import NO_MARGINS, detect_field, field_margins_px, near_field_edge
from tests.unit.test_measure_axes import SHAPE, _shaft


def _film(rng: np.random.Generator) -> np.ndarray:
    """A textured exposed field (dark air, grey leg with a gradient) in [0, 0.8], with noise."""
    rows, cols = np.mgrid[0:400, 0:300].astype(np.float64)
    leg = (np.abs(cols - 150) < 90) * (0.4 + 0.2 * rows / 400)
    return leg + 0.03 * rng.standard_normal((400, 300)) + 0.1 * np.sin(cols / 7.0) * (np.abs(cols - 150) < 90)


def test_shutter_bands_are_found_on_each_edge() -> None:
    rng = np.random.default_rng(0)
    film = _film(rng)
    shutter = 0.97 + 0.01 * rng.standard_normal(film.shape)
    film[:37] = shutter[:37]
    film[:, 281:] = shutter[:, 281:]
    film[:37, 120:140] = 0.2  # a burned-in label inside the shadow does not end it
    film[20:30, 200:206] = 0.5
    assert field_margins_px(film) == (37, 0, 0, 19)


def test_a_film_without_shutters_has_no_margins() -> None:
    film = _film(np.random.default_rng(1))
    assert field_margins_px(film) == NO_MARGINS


def test_a_shaft_leaving_through_the_shadow_keeps_its_angle() -> None:
    """A shaft flexed 35 degrees leaves the field through a side shutter: its far levels lie between one
    cortex and the shadow edge. Left in, they turn the axis by degrees; left out, the axis is the shaft."""
    spacing = (0.3, 0.3)
    angle = math.radians(35.0)
    mask = _shaft(35.0, spacing, length_mm=200.0)
    mask[:, SHAPE[1] - 60 :] = False  # the right shutter's shadow, 60 columns deep
    joint = np.array([0.0, SHAPE[1] * spacing[1] / 2])  # the shaft's upper end, on the film's edge
    true_direction = np.array([math.cos(angle), math.sin(angle)])

    def error_deg(field: tuple[int, int, int, int]) -> float:
        axis = fit_shaft_axis(mask, spacing, joint, true_direction, field=field)
        assert axis is not None
        return math.degrees(math.acos(min(1.0, abs(float(axis.direction @ true_direction)))))

    assert error_deg((0, 0, 0, 60)) < 0.15
    assert error_deg(NO_MARGINS) > 2.0


# Tilted shutters, corner cuts and the exposed-field mask (``detect_field``).


def _tilted_shadow(shape: tuple[int, int], angle_deg: float, left: float, top: float) -> np.ndarray:
    """True in the shadow of a collimator turned by ``angle_deg`` about the film's centre, its left and
    top shutters ``left`` / ``top`` pixels in at the middle of their edges."""
    rows, cols = shape
    y = np.arange(rows)[:, None] - (rows - 1) / 2
    x = np.arange(cols)[None, :] - (cols - 1) / 2
    theta = math.radians(angle_deg)
    u = math.cos(theta) * x + math.sin(theta) * y
    v = -math.sin(theta) * x + math.cos(theta) * y
    return (u < -(cols - 1) / 2 - 0.5 + left) | (v < -(rows - 1) / 2 - 0.5 + top)


@pytest.mark.parametrize("angle", [-5.0, -2.5, 3.0, 6.0])
def test_a_tilted_shutter_is_found_with_its_angle(angle: float) -> None:
    rng = np.random.default_rng(3)
    film = _film(rng)
    truth = _tilted_shadow(film.shape, angle, left=30.0, top=45.0)
    film[truth] = (0.97 + 0.01 * rng.standard_normal(film.shape))[truth]
    film[8:24, 110:150] = 0.15  # a burned-in label in the top shadow
    estimate = detect_field(film)
    top, bottom, left, right = estimate.edges
    assert bottom is None and right is None and estimate.corners == (None, None, None, None)
    assert top is not None and left is not None
    assert top.angle_deg == pytest.approx(angle, abs=0.4)
    assert left.angle_deg == pytest.approx(angle, abs=0.4)  # both turned with the collimator
    shadow = estimate.shadow()
    assert (shadow & ~truth).sum() <= 0.01 * truth.sum()  # nothing of the field is called shadow
    assert (truth & ~shadow).sum() <= 0.03 * truth.sum()
    np.testing.assert_array_equal(estimate.mask(), ~shadow)
    # The margins reach the wedges' wide ends (what an axis-aligned band would have to cover).
    margins = field_margins_px(film)
    deepest_top = int(np.flatnonzero(truth[:, 150:].all(axis=1) | truth[:, :150].all(axis=1)).max()) + 1
    assert margins[0] >= deepest_top - 2 and margins[1] == 0 and margins[3] == 0


def test_an_oblique_corner_cut_is_found() -> None:
    rng = np.random.default_rng(4)
    film = _film(rng)
    y, x = np.mgrid[0:400, 0:300]
    truth = ((300 - 0.5 - x) * math.cos(math.radians(40)) + (y + 0.5) * math.sin(math.radians(40))) < 70
    film[truth] = (0.97 + 0.01 * rng.standard_normal(film.shape))[truth]
    estimate = detect_field(film)
    assert estimate.edges == (None, None, None, None)
    cut = estimate.corners[1]  # top right
    assert cut is not None and cut.angle_deg == pytest.approx(40.0, abs=3.0)
    shadow = estimate.shadow()
    assert (shadow ^ truth).sum() <= 0.08 * truth.sum()
    assert field_margins_px(film) == NO_MARGINS  # corner cuts are not bands along an edge


@pytest.mark.parametrize("level", [0.6, 0.9])
def test_soft_tissue_filling_an_edge_is_no_shutter(level: float) -> None:
    """A thigh filling the top of the film, off the air: grey (a presentation's soft tissue is below
    its bone), or bright with its texture (fat, muscle, vessels) and noise."""
    rng = np.random.default_rng(5)
    film = _film(rng)
    rows, cols = np.mgrid[0:120, 0:300].astype(np.float64)
    texture = 0.04 * np.sin(cols / 5.0 + rows / 9.0) + 0.03 * np.sin(rows / 4.0)
    film[:120] = level - 0.001 * rows + texture + 0.015 * rng.standard_normal((120, 300))
    assert not detect_field(film).collimated
    assert field_margins_px(film) == NO_MARGINS


def test_a_metal_stem_at_the_edge_is_no_shutter() -> None:
    """A component's stem running off the top edge: white and flat, but a sliver of the edge."""
    film = _film(np.random.default_rng(6))
    film[:160, 140:175] = 1.0
    film[150:175, 120:200] = 1.0  # the component's base plate
    assert not detect_field(film).collimated


def test_a_dark_border_is_no_shutter() -> None:
    """A black mask or air along the side: uniform, but dark (exposed), not a shutter's shadow."""
    film = _film(np.random.default_rng(7))
    film[:, :40] = 0.0
    film[:, 40:80] = np.linspace(0.0, 0.1, 40)[None, :]
    film[:30] = 0.01
    assert not detect_field(film).collimated


def test_near_field_edge_takes_a_field_mask_too() -> None:
    shape = (60, 50)
    margins = (7, 0, 0, 12)
    field = np.ones(shape, dtype=bool)
    field[:7] = False
    field[:, 50 - 12 :] = False
    rows, cols = np.nonzero(np.ones(shape, dtype=bool))
    np.testing.assert_array_equal(
        near_field_edge(rows, cols, shape, field, 3), near_field_edge(rows, cols, shape, margins, 3)
    )


REALDATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "realdata"


def test_the_real_cr_films_side_bars_are_found() -> None:
    """RG3_J2KR.dcm (Fuji CR, distal tibia): white bars along both sides, the left 364 columns wide, the
    right one (its inner edge graded) ~380-430; nothing along the top and bottom, which are exposed."""
    path = REALDATA / "RG3_J2KR.dcm"
    if not path.is_file():
        pytest.skip(f"{path} is absent (shared real data)")
    from orthoseg.radiograph import read_radiograph

    pixels = read_radiograph(path.read_bytes()).pixels
    estimate = detect_field(pixels)
    top, bottom, left, right = estimate.edges
    assert top is None and bottom is None
    assert left is not None and right is not None
    assert abs(left.angle_deg) <= 0.5 and abs(right.angle_deg) <= 2.0
    shadow = estimate.shadow()
    left_depth = shadow[:, :900].sum(axis=1)
    right_depth = shadow[:, 900:].sum(axis=1)
    assert 360 <= left_depth.min() and left_depth.max() <= 370
    assert 360 <= right_depth.min() and right_depth.max() <= 440
    margins = field_margins_px(pixels)
    assert margins[:2] == (0, 0) and 360 <= margins[2] <= 370 and 380 <= margins[3] <= 440


def test_a_field_found_once_serves_masks_and_measurements_alike() -> None:
    """Inference finds a film's collimated field once and hands it to post-processing and measurement;
    both then do exactly what they do when they find it themselves from the pixels."""
    from orthoseg.measure.knees import measure_knees
    from orthoseg.postprocess import clear_collimated_borders
    from orthoseg.radiograph import to_presentation
    from orthoseg.synth import SynthConfig, generate_case

    config = SynthConfig(count=12, seed=5, image_px=256, bilateral_fraction=0.0)
    for index in range(config.count):
        case = generate_case(index, config)
        pixels = to_presentation(case.dataset, case.dataset.pixel_array)
        field = detect_field(pixels)
        if field.collimated and case.masks[0].any():  # the femur
            break
    else:
        pytest.fail("no collimated knee film among the cases")
    spacing = tuple(float(v) for v in case.dataset.PixelSpacing)
    masks = case.masks.astype(bool)
    masks[:, field.shadow()] = True  # structure called in the shadow, as an untrained network may
    cleared = clear_collimated_borders(masks.copy(), pixels, field)
    assert not cleared[:, field.shadow()].any()
    np.testing.assert_array_equal(cleared, clear_collimated_borders(masks.copy(), pixels))
    view = str(case.dataset.ViewPosition)
    alone = measure_knees(case.masks, spacing, laterality="R", view_position=view, pixels=pixels)
    given = measure_knees(
        case.masks, spacing, laterality="R", view_position=view, pixels=pixels, exposed_field=field.mask()
    )
    assert given == alone
    no_shutter = detect_field(np.full_like(pixels, 0.5))  # a field given is used, not found again
    assert not no_shutter.collimated
    np.testing.assert_array_equal(clear_collimated_borders(masks.copy(), pixels, no_shutter), masks)
