"""Collimator shutters in the simulator: turned by a few degrees, some corners cut off at an angle, a
label burned into the shadow; the truth is empty in the shadow, and the field detection finds it."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from scipy import ndimage

from orthoseg.measure.field import detect_field
from orthoseg.synth import SynthConfig
from orthoseg.synth.case import render_case
from orthoseg.synth.detector import STORED_MAX, collimation_field, placement_box
from orthoseg.synth.scenario import ImageSpec, image_spec

SPACING = 0.2


def _config(count: int = 4, image_px: int = 384) -> SynthConfig:
    return SynthConfig(
        count=count,
        seed=11,
        image_px=image_px,
        views=("AP",),
        category_weights={"tka": 1.0},
        bilateral_fraction=0.0,
    )


def _spec(**changes: object) -> ImageSpec:
    return replace(image_spec(0, _config()), **changes)  # type: ignore[arg-type]


def test_square_shutters_give_the_margins_rectangle() -> None:
    spec = _spec(collimation_mm=(4.0, 0.0, 2.0, 6.0), collimation_angle_deg=0.0, collimation_corner=-1)
    field = collimation_field((300, 200), spec, SPACING)
    expected = np.zeros((300, 200), dtype=bool)
    expected[20:, 10:170] = True
    np.testing.assert_array_equal(field, expected)


@pytest.mark.parametrize("angle", [-6.0, -2.0, 3.5])
def test_turned_shutters_are_straight_and_tilted(angle: float) -> None:
    spec = _spec(collimation_mm=(10.0, 0.0, 8.0, 0.0), collimation_angle_deg=angle, collimation_corner=-1)
    field = collimation_field((400, 300), spec, SPACING)
    # The top shutter: the first exposed row per column (away from the left shutter) is a line.
    cols = np.arange(120, 300)
    first = np.array([np.flatnonzero(field[:, c])[0] for c in cols], dtype=np.float64)
    slope, intercept = np.polyfit(cols, first, 1)
    assert math.degrees(math.atan(slope)) == pytest.approx(angle, abs=0.3)
    assert np.abs(first - (slope * cols + intercept)).max() <= 1.0
    assert intercept + slope * 149.5 == pytest.approx(50.0, abs=1.0)  # 10 mm in at the edge's middle
    # The left shutter turns with it, and the bottom and right stay open.
    rows = np.arange(150, 400)
    left = np.array([np.flatnonzero(field[r])[0] for r in rows], dtype=np.float64)
    assert math.degrees(math.atan(np.polyfit(rows, left, 1)[0])) == pytest.approx(-angle, abs=0.3)
    assert field[-1, 150:].all() and field[200:, -1].all()


def test_a_corner_is_cut_off_at_an_angle() -> None:
    spec = _spec(
        collimation_mm=(0.0, 0.0, 0.0, 0.0),
        collimation_angle_deg=0.0,
        collimation_corner=3,
        collimation_corner_mm=12.0,
        collimation_corner_angle_deg=40.0,
    )
    field = collimation_field((400, 300), spec, SPACING)
    shadow = ~field
    y, x = np.nonzero(shadow)
    # Bottom right, inside the line 60 px from the corner whose normal is 40 degrees off the row axis.
    distance = (299.5 - x) * math.cos(math.radians(40)) + (399.5 - y) * math.sin(math.radians(40))
    assert shadow[-1, -1] and distance.max() < 60.0
    assert shadow.sum() == pytest.approx(60.0**2 / math.sin(math.radians(80)), rel=0.05)


def test_shutter_draws_are_varied_bounded_and_deterministic() -> None:
    config = SynthConfig(count=400, seed=3)
    specs = [image_spec(i, config) for i in range(400)]
    angles = np.array([s.collimation_angle_deg for s in specs])
    assert 0.2 < np.mean(angles == 0.0) < 0.5  # a share of films square to the detector
    assert np.abs(angles).max() <= 6.0 and np.abs(angles).max() > 5.0
    corners = np.array([s.collimation_corner for s in specs])
    assert 0.05 < np.mean(corners >= 0) < 0.25 and set(corners[corners >= 0]) == {0, 1, 2, 3}
    assert 0.1 < np.mean([s.collimation_label for s in specs]) < 0.4
    assert [image_spec(i, config) for i in range(20)] == specs[:20]
    # The shutters' stream is separate: the other draws are those of a film without them.
    assert all(s.collimation_mm == image_spec(s.index, config).collimation_mm for s in specs[:20])


def test_placement_box_lies_in_the_field() -> None:
    spec = _spec(
        collimation_mm=(10.0, 6.0, 8.0, 12.0),
        collimation_angle_deg=5.0,
        collimation_corner=0,
        collimation_corner_mm=20.0,
        collimation_corner_angle_deg=50.0,
    )
    field = collimation_field((400, 300), spec, SPACING)
    box = placement_box(field)
    assert box.any() and not (box & ~field).any()
    assert box.sum() > 0.5 * field.sum()
    square = collimation_field(
        (400, 300), replace(spec, collimation_angle_deg=0.0, collimation_corner=-1), SPACING
    )
    np.testing.assert_array_equal(placement_box(square), square)


@pytest.fixture(scope="module")
def turned_film() -> tuple[np.ndarray, np.ndarray, ImageSpec]:
    """(presentation values, masks, spec) of a TKA film collimated on all sides, turned 4.5 degrees,
    a corner cut off and a label burned in."""
    config = _config()
    spec = replace(
        image_spec(1, config),
        collimation_mm=(18.0, 22.0, 9.0, 14.0),
        collimation_angle_deg=4.5,
        collimation_corner=2,
        collimation_corner_mm=40.0,
        collimation_corner_angle_deg=35.0,
        collimation_label=True,
    )
    values, masks, *_ = render_case(spec, config)
    return values, masks, spec


def test_the_truth_is_empty_in_a_turned_shadow(turned_film: tuple) -> None:
    values, masks, spec = turned_film
    field = collimation_field(values.shape, spec, spec.spacing_mm)
    assert not masks[:, ~field].any()
    # The femur and tibia run into the top and bottom shutters: their masks end on the shadow's edge.
    bones = masks[:2].any(axis=0)
    assert (bones & ndimage.binary_dilation(~field, iterations=2)).sum() > 20


def test_a_turned_shadow_is_white_with_a_label_and_is_found(turned_film: tuple) -> None:
    values, masks, spec = turned_film
    field = collimation_field(values.shape, spec, spec.spacing_mm)
    deep = ndimage.binary_erosion(~field, iterations=3)
    assert np.median(values[deep]) >= 0.97 * STORED_MAX
    assert np.mean(values[deep] < 0.5 * STORED_MAX) > 0.002  # the label's dark print
    estimate = detect_field(values.astype(np.float32))
    shadow = estimate.shadow()
    truth = ~field
    assert (shadow & truth).sum() >= 0.97 * truth.sum()
    assert (shadow & ~truth).sum() <= 0.01 * truth.sum()
    turned = [e.angle_deg for e in estimate.edges if e is not None]
    assert len(turned) == 4 and all(abs(abs(a) - 4.5) <= 0.3 for a in turned)
