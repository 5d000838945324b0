"""Lateral-film pieces of the Knee Society angles: the shaft fit's refinement and metaphysis handling,
and the femoral component's cut axis ignoring edges that do not face the cuts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from orthoseg.measure.axes import _diaphysis, fit_shaft_axis
from orthoseg.measure.components import cut_axis, inside_hull
from orthoseg.measure.config import MeasurementConfig
from orthoseg.measure.geometry import angle_from_vertical_deg

SPACING = (0.2, 0.2)


def _frame(shape: tuple[int, int], origin: tuple[float, float], angle_deg: float):
    """(along, across) mm coordinates of every pixel: along runs up the image turned by angle_deg."""
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    y, x = rows * SPACING[0] - origin[0], cols * SPACING[1] - origin[1]
    a = math.radians(angle_deg)
    along = -y * math.cos(a) + x * math.sin(a)
    across = y * math.sin(a) + x * math.cos(a)
    return along, across


def test_shaft_axis_does_not_depend_on_the_rough_start() -> None:
    # A shaft tilted 35 degrees whose posterior wall bulges near the joint (a condyle), on a film showing
    # 110 mm of it. Started from straight up (a flexed knee's bisector) or from the shaft's own line, the
    # refinement must settle on the same axis: three fixed rounds from the far start stop ~0.8 deg short.
    shape = (1100, 1000)
    origin = (200.0, 60.0)
    along, across = _frame(shape, origin, -35.0)
    bulge = 10.0 * np.exp(-np.clip(along - 20.0, 0, None) / 20.0)
    mask = (along >= 0) & (along <= 110.0) & (across <= 14.0) & (across >= -14.0 - bulge)
    joint = np.array(origin)
    tilt = math.radians(-35.0)
    on_line = np.array([-math.cos(tilt), math.sin(tilt)])
    rough = fit_shaft_axis(mask, SPACING, joint, np.array([-1.0, 0.0]))
    near = fit_shaft_axis(mask, SPACING, joint, on_line)
    assert rough is not None and near is not None
    # angle_from_vertical_deg measures from the image's downward vertical: an up direction leaning
    # toward +columns reads negative, one leaning toward -columns positive.
    assert angle_from_vertical_deg(rough.direction) == pytest.approx(
        angle_from_vertical_deg(near.direction), abs=0.1
    )
    assert angle_from_vertical_deg(rough.direction) == pytest.approx(35.0, abs=2.0)


def test_metaphysis_is_dropped_only_when_its_midpoints_drift() -> None:
    config = MeasurementConfig()
    t = np.arange(51.0, 161.0, 2.0)
    width = 30.0 + 0.4 * np.clip(80.0 - t, 0, None)  # flares over the first 30 mm
    line = 2.0 + 0.01 * t
    drift = 0.06 * np.clip(80.0 - t, 0, None)  # one wall flares more: midpoints move off the line
    kept_t, kept_s, flaring = _diaphysis(t, line + drift, width, config)
    assert not flaring
    assert kept_t.min() > 75.0  # the drifting metaphysis is left out
    slope = np.polyfit(kept_t, kept_s, 1)[0]
    assert slope == pytest.approx(0.01, abs=5e-4)
    # Walls flaring alike: the midpoints stay on the line and every level is kept.
    kept_t, _, flaring = _diaphysis(t, line, width, config)
    assert len(kept_t) == len(t) and not flaring
    # A film showing only flaring bone: all levels kept, marked.
    short = t < 78.0
    kept_t, _, flaring = _diaphysis(t[short], (line + drift)[short], width[short], config)
    assert flaring and len(kept_t) == short.sum()


def test_inside_hull_with_margin() -> None:
    square = np.array([[0.0, 0.0], [0.0, 10.0], [10.0, 0.0], [10.0, 10.0], [5.0, 5.0]])
    probe = np.array([[5.0, 5.0], [0.5, 5.0], [-1.0, 5.0], [5.0, 9.9]])
    assert inside_hull(square, probe, 0.0).tolist() == [True, True, False, True]
    assert inside_hull(square, probe, 1.0).tolist() == [True, False, False, False]


def test_cut_axis_ignores_cement_against_the_outer_surface() -> None:
    # A femoral component on a lateral film, axis turned 20 degrees: the flange's inner face (the
    # anterior cut) runs along the axis, its outer face leans 9 degrees away, and a long cement mantle
    # (a resurfaced patella's) lies against that outer face; the posterior condyle is short.
    shape = (700, 700)
    origin = (100.0, 70.0)
    along, across = _frame(shape, origin, 20.0)
    lean = math.tan(math.radians(9.0))
    flange = (across >= 10.0) & (across <= 14.0 + lean * along) & (along >= 0) & (along <= 45.0)
    posterior = (across >= -18.0) & (across <= -10.0) & (along >= 0) & (along <= 14.0)
    base = (across >= -18.0) & (across <= 14.0 + lean * along) & (along >= 0) & (along <= 8.0)
    component = flange | posterior | base
    femur = (across > -10.0) & (across < 10.0) & (along > 8.0) & (along < 120.0)
    cement = (across > 14.0 + lean * along) & (across < 16.5 + lean * along) & (along > 6.0) & (along < 45.0)
    bone = (femur | cement) & ~component
    up = np.array([-math.cos(math.radians(20.0)), math.sin(math.radians(20.0))])
    axis = cut_axis(component, bone, SPACING, up)
    assert axis is not None
    axis = axis if axis @ up > 0 else -axis
    assert angle_from_vertical_deg(axis) == pytest.approx(-20.0, abs=0.5)
