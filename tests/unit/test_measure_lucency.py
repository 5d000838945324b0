"""Radiolucent lines of known width recovered from drawn intensity profiles and a drawn interface."""

from __future__ import annotations

import numpy as np
import pytest

from orthoseg.measure.config import MeasurementConfig
from orthoseg.measure.lucency import frame_for, profile_width, zone_widths

CONFIG = MeasurementConfig()


def _profile(width_mm: float, step: float = CONFIG.line_step_mm, rim_mm: float = 0.8) -> np.ndarray:
    """Cement at 200 before the interface, a lucent band of ``width_mm`` at 40 from it, then a sclerotic
    rim at 130 and bone at 100 (sampled from ``line_lead_mm`` inside the implant)."""
    x = np.arange(-CONFIG.line_lead_mm, CONFIG.line_profile_mm + 1e-9, step)
    profile = np.full(x.shape, 100.0)
    profile[x < width_mm + rim_mm] = 130.0
    profile[x < width_mm] = 40.0
    profile[x < 0] = 200.0
    return profile


@pytest.mark.parametrize("width", [0.5, 1.0, 1.7, 2.5, 3.0])
def test_width_of_a_drawn_band(width: float) -> None:
    assert profile_width(_profile(width), noise=2.0, config=CONFIG) == pytest.approx(width, abs=0.06)


def test_no_band_and_noise_only_give_zero() -> None:
    flat = _profile(0.0, rim_mm=0.0)
    assert profile_width(flat, noise=2.0, config=CONFIG) == 0.0
    rng = np.random.default_rng(0)
    noisy = flat + rng.normal(0.0, 1.0, flat.shape)
    assert profile_width(noisy, noise=2.0, config=CONFIG) == 0.0


def test_band_away_from_the_interface_is_not_a_line() -> None:
    profile = _profile(0.0, rim_mm=0.0)
    lead = int(round(CONFIG.line_lead_mm / CONFIG.line_step_mm))
    profile[lead + 40 : lead + 60] = 40.0  # starts 2 mm into the bone
    assert profile_width(profile, noise=2.0, config=CONFIG) == 0.0


def test_texture_that_drifts_back_is_not_a_line() -> None:
    """A shallow trough that only slowly returns to the bone level (texture, not a bordered line)."""
    profile = _profile(0.0, rim_mm=0.0)
    x = np.arange(len(profile)) * CONFIG.line_step_mm - CONFIG.line_lead_mm
    profile[x >= 0] = 100.0 - 6.0 * np.exp(-(((x[x >= 0] - 1.5) / 1.0) ** 2))
    assert profile_width(profile, noise=2.0, config=CONFIG) == 0.0


def _darkening_bone(profile: np.ndarray, per_mm: float) -> np.ndarray:
    """``profile`` on bone that darkens by ``per_mm`` for every mm away from the implant (a stem in the
    middle of the tibia on an AP film: the projected bone thins toward the cortex)."""
    x = np.arange(len(profile)) * CONFIG.line_step_mm - CONFIG.line_lead_mm
    return profile - per_mm * np.clip(x, 0.0, None)


@pytest.mark.parametrize("width", [1.0, 1.7, 2.5])
def test_a_line_beside_bone_that_darkens_away_from_the_implant_is_read(width: float) -> None:
    """The bone 5 mm out is darker than the line's floor; beside the line it is brighter."""
    profile = _darkening_bone(_profile(width), per_mm=20.0)
    assert np.median(profile[-30:]) < 40.0 + 1.0  # the far reference alone would call this no line
    assert profile_width(profile, noise=2.0, config=CONFIG) == pytest.approx(width, abs=0.06)


def test_cement_on_bone_that_darkens_away_is_no_line() -> None:
    """A cemented stem without a line on the same bone: cement, then bone that fades away."""
    profile = _darkening_bone(_profile(0.0, rim_mm=0.0), per_mm=20.0)
    assert profile_width(profile, noise=2.0, config=CONFIG) == 0.0
    rng = np.random.default_rng(1)
    for _ in range(20):
        noisy = profile + rng.normal(0.0, 2.0, profile.shape)
        assert profile_width(noisy, noise=2.0, config=CONFIG) == 0.0


def _tray_scene(width_mm: float, spacing: float = 0.2) -> tuple[np.ndarray, ...]:
    """A tibial tray (metal) on a tibia, a lucent band of ``width_mm`` under its medial half only."""
    shape = (300, 400)
    rows = np.arange(shape[0])[:, None] * np.ones(shape[1])[None]
    cols = np.ones(shape[0])[:, None] * np.arange(shape[1])[None]
    tray = (rows >= 100) & (rows < 115) & (cols >= 50) & (cols < 350)
    tibia = (rows >= 100) & (cols >= 40) & (cols < 360)
    pixels = np.where(tibia, 100.0, 10.0)
    below = (rows - 115) * spacing
    medial = cols >= 200
    pixels[(below >= 0) & (below < width_mm) & medial & tibia] = 45.0
    pixels[(below >= width_mm) & (below < width_mm + 0.8) & medial & tibia] = 130.0
    pixels[tray] = 250.0
    return pixels, tray, tibia


@pytest.mark.parametrize("width", [0.8, 1.5, 2.4])
def test_tray_zone_widths_from_a_drawn_interface(width: float) -> None:
    spacing = 0.2
    pixels, tray, tibia = _tray_scene(width, spacing)
    # Distal is +rows; medial is +columns; the joint above the tray.
    frame = frame_for(
        "tibia", "AP", np.array([1.0, 0.0]), np.array([0.0, 1.0]), np.array([100 * spacing, 200 * spacing])
    )
    widths = zone_widths(pixels, tray, tibia, tray, (spacing, spacing), frame, CONFIG)
    assert widths["tibia_1M"] == pytest.approx(width, abs=0.25)
    assert widths["tibia_1L"] == pytest.approx(0.0, abs=0.05)
