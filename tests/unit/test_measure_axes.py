"""Shaft axes recovered from synthetic bone masks with a known angle; refused when too short."""

from __future__ import annotations

import math

import numpy as np
import pytest

from orthoseg.measure.axes import fit_shaft_axis
from orthoseg.measure.config import MeasurementConfig
from orthoseg.measure.geometry import angle_from_vertical_deg, signed_angle_deg

SHAPE = (700, 500)


def _shaft(angle_deg: float, spacing: tuple[float, float], length_mm: float = 160.0) -> np.ndarray:
    """A 28 mm wide shaft hanging from row 0 at the image centre, turned toward +columns by angle_deg."""
    rows, cols = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]].astype(np.float64)
    y, x = rows * spacing[0], cols * spacing[1]
    a = math.radians(angle_deg)
    top = np.array([0.0, SHAPE[1] * spacing[1] / 2])
    along = (y - top[0]) * math.cos(a) + (x - top[1]) * math.sin(a)
    across = -(y - top[0]) * math.sin(a) + (x - top[1]) * math.cos(a)
    return (along >= 0) & (along <= length_mm) & (np.abs(across) <= 14.0)


@pytest.mark.parametrize("angle", [-7.5, -2.0, 0.0, 3.3, 9.0])
@pytest.mark.parametrize("spacing", [(0.3, 0.3), (0.3, 0.2)])
def test_axis_angle_is_recovered(angle: float, spacing: tuple[float, float]) -> None:
    mask = _shaft(angle, spacing)
    a = math.radians(angle)
    joint = np.array([160.0 * math.cos(a), SHAPE[1] * spacing[1] / 2 + 160.0 * math.sin(a)])
    axis = fit_shaft_axis(mask, spacing, joint, np.array([-1.0, 0.0]))
    assert axis is not None
    assert angle_from_vertical_deg(axis.direction) == pytest.approx(angle, abs=0.15)
    assert axis.direction[0] < 0  # points away from the joint (up the image)
    assert not axis.short
    assert axis.residual_mm < 0.3


def test_short_shaft_is_refused_and_a_shortish_one_flagged() -> None:
    config = MeasurementConfig(axis_start_mm=50, axis_min_start_mm=30, axis_min_length_mm=15)
    spacing = (0.3, 0.3)
    joint = np.array([0.0, SHAPE[1] * spacing[1] / 2])
    for length, expect in ((40.0, "refused"), (60.0, "short"), (120.0, "ok")):
        mask = _shaft(0.0, spacing, length)
        # The joint at the shaft's lower end: flip so the shaft runs up from the joint.
        mask = mask[::-1]
        joint_row = (SHAPE[0] - 1) * spacing[0] - 0.0
        axis = fit_shaft_axis(mask, spacing, np.array([joint_row, joint[1]]), np.array([-1.0, 0.0]), config)
        if expect == "refused":
            assert axis is None
        else:
            assert axis is not None and axis.short == (expect == "short")


def _bent_stub(spacing: tuple[float, float], length_mm: float, bend_mm: float) -> np.ndarray:
    """A 28 mm wide shaft rising ``length_mm`` from the image's bottom (the joint), its centre line
    wandering sideways by up to ``bend_mm`` (waves 20 mm long: a metaphysis whose midpoints wander)."""
    rows, cols = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]].astype(np.float64)
    along = (SHAPE[0] - 1 - rows) * spacing[0]
    bow = bend_mm * np.sin(2.0 * np.pi * along / 20.0)
    across = cols * spacing[1] - SHAPE[1] * spacing[1] / 2 - bow
    return (along <= length_mm) & (np.abs(across) <= 14.0)


def test_the_direction_uncertainty_tells_a_straight_shaft_from_a_wandering_stub() -> None:
    spacing = (0.3, 0.3)
    config = MeasurementConfig(axis_start_mm=50, axis_min_start_mm=30, axis_min_length_mm=15)
    joint = np.array([(SHAPE[0] - 1) * spacing[0], SHAPE[1] * spacing[1] / 2])
    up = np.array([-1.0, 0.0])
    straight = fit_shaft_axis(_bent_stub(spacing, 180.0, 0.0), spacing, joint, up, config)
    assert straight is not None and straight.direction_uncertainty_deg < 0.1
    # 30 mm of fit whose midpoints swing by 2 mm: the line through them could be degrees off.
    stub = fit_shaft_axis(_bent_stub(spacing, 84.0, 2.0), spacing, joint, up, config)
    assert stub is not None and stub.length_mm < 35.0
    assert stub.direction_uncertainty_deg > config.axis_max_uncertainty_deg


def test_angles_are_not_measured_against_an_uncertain_axis() -> None:
    """The femur a wandering stub, the tibia a straight shaft: the femoral axis is refused with its
    reason, the tibial one kept."""
    from orthoseg.measure.field import NO_MARGINS
    from orthoseg.measure.image import CHANNEL, _axes, _Record

    spacing = (0.3, 0.3)
    config = MeasurementConfig(axis_start_mm=50, axis_min_start_mm=30, axis_min_length_mm=15)
    femur = _bent_stub(spacing, 84.0, 2.0)
    gap = 20  # rows of joint space between the femur's end and the tibia
    masks = np.zeros((len(CHANNEL), 2 * SHAPE[0] + gap, SHAPE[1]), dtype=bool)
    masks[CHANNEL["femur"], : SHAPE[0]] = femur
    masks[CHANNEL["tibia"], SHAPE[0] + gap :] = _bent_stub(spacing, 180.0, 0.0)[::-1]
    record = _Record()
    _, _, femur_axis, tibia_axis = _axes(masks, spacing, config, record, NO_MARGINS)
    assert femur_axis is None and tibia_axis is not None
    assert any(f.startswith("femur_axis:shaft too short or curved") for f in record.flags), record.flags
    assert "femur_axis_deg" not in record.values and "tibia_axis_deg" in record.values


def test_signed_angle_follows_the_named_side() -> None:
    up = np.array([-1.0, 0.0])
    toward_plus = np.array([-math.cos(0.1), math.sin(0.1)])
    assert signed_angle_deg(up, toward_plus, np.array([0.0, 1.0]), up) == pytest.approx(math.degrees(0.1))
    assert signed_angle_deg(up, toward_plus, np.array([0.0, -1.0]), up) == pytest.approx(-math.degrees(0.1))
