"""A zone has a line when one runs along a real length of it: run-length reading, sharp-edge rule."""

from __future__ import annotations

import numpy as np
import pytest

from orthoseg.measure.config import MeasurementConfig
from orthoseg.measure.lucency import frame_for, profile_width, sustained_width, zone_widths

CONFIG = MeasurementConfig()


def _windows(widths: list[float], stride_mm: float = 1.5) -> tuple[np.ndarray, np.ndarray]:
    """Window centres every ``stride_mm`` along the interface with the given widths."""
    return np.arange(len(widths)) * stride_mm, np.asarray(widths, dtype=np.float64)


def test_line_along_part_of_a_zone_reads_its_width() -> None:
    # 30 mm of interface, a 2 mm line along 9 mm of it (a quantile of all windows would read 0).
    centres, widths = _windows([0.0] * 8 + [2.0] * 7 + [0.0] * 6)
    assert sustained_width(centres, widths, run_mm=9.0, fill=0.5) == pytest.approx(2.0)


def test_isolated_dark_window_is_not_a_line() -> None:
    centres, widths = _windows([0.0] * 8 + [2.5] + [0.0] * 12)
    assert sustained_width(centres, widths, run_mm=9.0, fill=0.5) == 0.0
    # Shorter runs accept shorter lines: the rule is the run length, not a hidden constant.
    assert sustained_width(centres, widths, run_mm=0.0, fill=0.5) == pytest.approx(2.5)


def test_fill_is_the_share_of_the_stretch_that_must_reach_the_width() -> None:
    # 9 mm stretches hold 7 windows; a 1.5 mm line along 4 of them (6 mm, with a gap) reaches 4/7.
    centres, widths = _windows([0.0] * 5 + [1.5, 1.5, 0.0, 1.5, 1.5] + [0.0] * 6)
    assert sustained_width(centres, widths, run_mm=9.0, fill=0.5) == pytest.approx(1.5)
    assert sustained_width(centres, widths, run_mm=9.0, fill=0.75) == 0.0


def test_widest_sustained_line_wins() -> None:
    centres, widths = _windows([1.0] * 8 + [0.0] * 4 + [2.2] * 8)
    assert sustained_width(centres, widths, run_mm=6.0, fill=1.0) == pytest.approx(2.2)


def test_line_at_the_end_of_a_zone_reads_like_one_in_its_middle() -> None:
    # A zone whose interface has a gap (a few profiles 6 mm before the rest were discarded): the line
    # along its last 4 mm holds 9 of the 13 windows of the stretch that ends at the zone's end, but no
    # stretch that starts at a window both reaches 9 mm and holds it.
    centres = np.concatenate([[-26.7, -16.4, -4.1], np.linspace(1.7, 7.0, 13)])
    widths = np.asarray([0.0] * 7 + [1.9] * 9)
    assert sustained_width(centres, widths, run_mm=9.0, fill=0.5) == pytest.approx(1.9)
    # Mirrored, the same line at the zone's start reads the same.
    assert sustained_width(-centres[::-1], widths[::-1].copy(), run_mm=9.0, fill=0.5) == pytest.approx(1.9)


def test_zone_shorter_than_the_run_is_one_stretch() -> None:
    centres, widths = _windows([1.2, 1.3, 0.0, 1.1])  # 4.5 mm of interface
    assert sustained_width(centres, widths, run_mm=9.0, fill=0.5) == pytest.approx(1.1)
    assert sustained_width(np.array([]), np.array([]), run_mm=9.0, fill=0.5) == 0.0


def _x(step: float = CONFIG.line_step_mm) -> np.ndarray:
    return np.arange(-CONFIG.line_lead_mm, CONFIG.line_profile_mm + 1e-9, step)


def test_slow_climb_from_canal_to_cortex_is_not_a_line() -> None:
    """Metal, then dark bone brightening smoothly over ~2.4 mm to a cortex-like level, then bone."""
    x = _x()
    profile = np.full(x.shape, 100.0)
    ramp = (x >= 0) & (x < 2.4)
    profile[ramp] = 40.0 + 90.0 / (1.0 + np.exp(-(x[ramp] - 1.2) / 0.6))  # rises over ~2.4 mm
    profile[x < 0] = 200.0
    assert profile_width(profile, noise=2.0, config=CONFIG) == 0.0
    lenient = CONFIG.model_copy(update={"line_max_edge_mm": 100.0})
    assert profile_width(profile, noise=2.0, config=lenient) > 1.0


def test_blurred_line_keeps_its_width() -> None:
    """A 1.5 mm band blurred like a film (sigma 0.2 mm) still has sharp edges."""
    from scipy import ndimage

    x = _x()
    profile = np.full(x.shape, 100.0)
    profile[x < 2.3] = 130.0
    profile[x < 1.5] = 40.0
    profile[x < 0] = 200.0
    blurred = ndimage.gaussian_filter1d(profile, 0.2 / CONFIG.line_step_mm)
    assert profile_width(blurred, noise=2.0, config=CONFIG) == pytest.approx(1.5, abs=0.1)


def test_tray_line_under_part_of_a_zone_is_found() -> None:
    """A 1.6 mm line under 9 mm of the 30 mm medial half of a drawn tray; none laterally."""
    spacing = 0.2
    shape = (300, 400)
    rows = np.arange(shape[0])[:, None] * np.ones(shape[1])[None]
    cols = np.ones(shape[0])[:, None] * np.arange(shape[1])[None]
    tray = (rows >= 100) & (rows < 115) & (cols >= 50) & (cols < 350)
    tibia = (rows >= 100) & (cols >= 40) & (cols < 360)
    pixels = np.where(tibia, 100.0, 10.0)
    below = (rows - 115) * spacing
    part = (cols >= 230) & (cols < 275)
    pixels[(below >= 0) & (below < 1.6) & part & tibia] = 45.0
    pixels[(below >= 1.6) & (below < 2.4) & part & tibia] = 130.0
    pixels[tray] = 250.0
    frame = frame_for(
        "tibia", "AP", np.array([1.0, 0.0]), np.array([0.0, 1.0]), np.array([100 * spacing, 200 * spacing])
    )
    widths = zone_widths(pixels, tray, tibia, tray, (spacing, spacing), frame, CONFIG)
    assert widths["tibia_1M"] == pytest.approx(1.6, abs=0.25)
    assert widths["tibia_1L"] == pytest.approx(0.0, abs=0.05)
    # Read as a quantile of the whole zone (a run as long as the zone), the partial line is missed.
    whole = CONFIG.model_copy(update={"line_run_mm": 100.0})
    assert zone_widths(pixels, tray, tibia, tray, (spacing, spacing), frame, whole)["tibia_1M"] < 1.0


def test_an_augment_block_under_the_tray_is_tray_not_stem_tip() -> None:
    """A revision tray with a 10 mm augment under its medial half and a 60 mm stem: the augment's underside
    faces distally below the tray zone's depth, yet it is tray (zone 1M); only the stem's end is the tip."""
    spacing = 0.2
    shape = (560, 400)
    rows = np.arange(shape[0])[:, None] * np.ones(shape[1])[None]
    cols = np.ones(shape[0])[:, None] * np.arange(shape[1])[None]
    tray = (rows >= 100) & (rows < 115) & (cols >= 50) & (cols < 350)
    augment = (rows >= 115) & (rows < 165) & (cols >= 225) & (cols < 345)  # 10 mm deep, medial half
    stem = (rows >= 115) & (rows < 415) & (cols >= 180) & (cols < 220)  # 60 mm long
    implant = tray | augment | stem
    tibia = (rows >= 100) & (cols >= 40) & (cols < 360)
    pixels = np.where(tibia, 100.0, 10.0)
    under_augment = (rows >= 165) & (rows < 173) & (cols >= 240) & (cols < 330)  # a 1.6 mm line
    pixels[under_augment] = 45.0
    pixels[(rows >= 173) & (rows < 177) & (cols >= 240) & (cols < 330)] = 130.0
    pixels[implant] = 250.0
    frame = frame_for(
        "tibia", "AP", np.array([1.0, 0.0]), np.array([0.0, 1.0]), np.array([100 * spacing, 200 * spacing])
    )
    widths = zone_widths(pixels, implant, tibia, implant, (spacing, spacing), frame, CONFIG)
    assert widths["tibia_1M"] == pytest.approx(1.6, abs=0.25)
    assert widths.get("tibia_3", 0.0) == pytest.approx(0.0, abs=0.05)
