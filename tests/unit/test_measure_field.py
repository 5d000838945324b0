"""The collimator's shadow found along each film edge, and shaft levels cut by it left out of the axis."""

from __future__ import annotations

import math

import numpy as np

from orthoseg.measure.axes import fit_shaft_axis
from orthoseg.measure.field import NO_MARGINS, field_margins_px
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
