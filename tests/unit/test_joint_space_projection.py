"""Joint space read where the truth defines it: under the condyle's lowest point, to the plateau's
mid-depth, between mask edges (orthoseg.measure.joint_space)."""

from __future__ import annotations

import numpy as np
import pytest

from orthoseg.measure.config import MeasurementConfig
from orthoseg.measure.joint_space import contact_gap, joint_spaces, rim_dome

SPACING = (0.2, 0.2)
UP = np.array([-1.0, 0.0])  # proximal: toward row 0
MEDIAL = np.array([0.0, 1.0])  # medial: toward increasing columns
PLATEAU_ROW = 300  # first tibial row of the plateau's mid-depth line
CENTRE_COL, HALF_PX = 300, 190  # tibia: columns 110-489 (38 mm half-width)


def _dome_mm(cols: np.ndarray, height_mm: float, fraction: float = 0.94) -> np.ndarray:
    x = (cols - CENTRE_COL) / HALF_PX
    return height_mm * np.sqrt(np.clip(1.0 - (x / fraction) ** 2, 0.0, None))


def _knee(rim_mm: float, medial_gap_px: int, lateral_gap_px: int) -> tuple[np.ndarray, np.ndarray]:
    """A tibia whose top edge is the plateau's anterior rim, a dome ``rim_mm`` high over the mid-depth
    line at row ``PLATEAU_ROW``, and two flat condyles ``*_gap_px`` background rows above that line."""
    femur = np.zeros((600, 600), dtype=bool)
    tibia = np.zeros((600, 600), dtype=bool)
    cols = np.arange(CENTRE_COL - HALF_PX, CENTRE_COL + HALF_PX)
    rise = np.rint(_dome_mm(cols, rim_mm) / SPACING[0]).astype(int)
    for col, r in zip(cols, rise, strict=True):
        tibia[PLATEAU_ROW - r :, col] = True
    femur[:150, 120:480] = True
    femur[: PLATEAU_ROW - lateral_gap_px, 130:285] = True
    femur[: PLATEAU_ROW - medial_gap_px, 315:470] = True
    return femur, tibia


def _measure(femur: np.ndarray, tibia: np.ndarray) -> tuple[float | None, float | None]:
    centre = np.array([PLATEAU_ROW * SPACING[0], CENTRE_COL * SPACING[1]])
    return joint_spaces(femur, tibia, SPACING, centre, UP, MEDIAL, MeasurementConfig())


def test_sloped_plateau_rim_is_taken_off_the_gap() -> None:
    """The anterior rim of a posteriorly sloped plateau rises 2.5 mm above the plateau's mid-depth
    (on AP, 7 degrees over ~20 mm): the gap is read to the mid-depth line, not to the rim."""
    femur, tibia = _knee(rim_mm=2.5, medial_gap_px=25, lateral_gap_px=30)
    medial, lateral = _measure(femur, tibia)
    assert medial is not None and lateral is not None
    assert medial == pytest.approx(25 * SPACING[0], abs=0.25)
    assert lateral == pytest.approx(30 * SPACING[0], abs=0.25)


def test_flat_tray_is_read_as_it_is() -> None:
    """A tray seen along its surface has a flat top: no dome, nothing taken off (edge to edge)."""
    femur, tibia = _knee(rim_mm=0.0, medial_gap_px=50, lateral_gap_px=45)
    medial, lateral = _measure(femur, tibia)
    assert medial == pytest.approx(50 * SPACING[0], abs=1e-6)
    assert lateral == pytest.approx(45 * SPACING[0], abs=1e-6)


def test_rim_dome_recovers_its_height_on_a_tilted_plateau() -> None:
    x = np.linspace(-0.9, 0.9, 145)
    top = 1.0 + 0.8 * x + 3.0 * np.sqrt(1.0 - (x / 0.94) ** 2)
    select = (np.abs(x) >= 0.3) & (np.abs(x) <= 0.85)
    assert rim_dome(x, top, select, 0.94, 0.25) == pytest.approx(3.0, abs=1e-6)


def test_rim_dome_refuses_a_step_and_a_trough() -> None:
    x = np.linspace(-0.9, 0.9, 145)
    select = (np.abs(x) >= 0.3) & (np.abs(x) <= 0.85)
    # A flat tray on one side, a plateau 3 mm lower on the other (a UKA): not one rim.
    step = np.where(x > 0, 3.0, 0.0)
    assert rim_dome(x, step, select, 0.94, 0.25) is None
    # An edge that sags in the middle is no rim dome: nothing to correct.
    trough = -2.0 * np.sqrt(1.0 - (x / 0.94) ** 2)
    assert rim_dome(x, trough, select, 0.94, 0.25) is None
    assert rim_dome(x[:4], step[:4], np.ones(4, dtype=bool), 0.94, 0.25) is None


def test_contact_gap_is_read_under_the_lowest_point_not_at_the_smallest_gap() -> None:
    """The condyle's lowest point is over columns 3-4; further out the plateau rises toward a rim and
    the gap narrows, but that is not where the condyle rests."""
    femoral = np.array([9.0, 8.0, 7.0, 6.0, 6.2, 7.5, 8.5])
    tibial = np.array([1.5, 1.2, 0.6, 0.0, 0.1, 2.0, 2.6])
    assert contact_gap(femoral, tibial, window_mm=0.5, peak_mm=2.0) == pytest.approx(6.05)
    assert float(np.min(femoral - tibial)) < 6.0  # the smallest gap would read less


def test_contact_gap_leaves_out_a_spine_and_absent_columns() -> None:
    femoral = np.array([5.0, 5.0, 5.0, 5.0, np.nan])
    tibial = np.array([0.0, 0.0, 4.5, 0.0, 0.0])  # a spine in column 2
    assert contact_gap(femoral, tibial, window_mm=0.5, peak_mm=2.0) == pytest.approx(5.0)
    assert contact_gap(np.full(3, np.nan), np.zeros(3), window_mm=0.5, peak_mm=2.0) is None
