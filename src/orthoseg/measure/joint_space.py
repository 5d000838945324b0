"""Medial and lateral joint space on an AP image: the gap between femoral and tibial sides, in mm.

What is measured. The joint space of a compartment is the gap, along the tibial axis, between the
lowest point of the femoral condyle (or of the femoral component's runner) and the tibial plateau (or
the tray) under it: where the condyle rests. The femoral side is the femur with its component, the tibial
side the tibia with its tray (so a native knee, a UKA's unreplaced compartment and a TKA are measured
alike). A polyethylene insert is radiolucent and in no mask, so on a replaced compartment the gap is
condyle (metal) to tray (metal), the insert-thickness proxy a reader measures on the film.

How it is read from the masks (all lengths in mm):

1. Compartments. Each is the half of the proximal tibia on its side of the tibia's mid-width; the gap is
   read over the central ``joint_band_fraction`` of that half, per 0.5 mm column across the tibial axis:
   the lowest femoral pixel and the highest tibial pixel of every column. Columns where the tibial side
   rises more than ``joint_plateau_peak_mm`` above the compartment's median (a tibial spine, a rim, a
   tray's edge) are not read.
2. Contact. The columns where the femoral side lies within ``joint_condyle_window_mm`` of its lowest
   point in the compartment are the condyle's contact; the gap is the median over them (the median
   steadies the one-pixel steps of a mask edge). Gaps are between mask edges, not pixel centres: one
   pixel's extent along the axis is taken off.
3. Plateau rim (native plateaus; see ``rim_dome``). On an AP film the beam runs along the plateau, which
   slopes posteriorly (~7 degrees) relative to the beam: the mask's top edge over a native plateau is the
   plateau's anterior (or, if the beam is tilted past the slope, posterior) rim, not the plateau under the
   condyle, which rests near the plateau's mid-depth. The rim follows the plateau's roughly elliptical
   outline, so across the tibia it forms a dome, ``A * sqrt(1 - (x / s)**2)`` above the plateau's
   mid-depth line, with ``A`` = half the plateau's depth times the tangent of the slope relative to the
   beam. The dome is fitted to the tibial top edge and subtracted, so the gap runs to the plateau's
   mid-depth height. A metal tray seen along its surface shows a flat top: the fit gives ``A`` ~ 0 and
   changes nothing. Without that correction a native gap reads ~1.5-2.5 mm small (on the simulator's
   films, ``tan(slope) * ~18 mm``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from orthoseg.measure.config import MeasurementConfig
from orthoseg.measure.geometry import Spacing, normal_of, points_mm, unit

BIN_MM = 0.5
"""Width (mm) of the columns across the tibial axis in which the mask edges are read."""


def _by_bin(u: np.ndarray, v: np.ndarray, edges: np.ndarray, top: bool) -> np.ndarray:
    """Per bin of ``u`` (bin ``edges``), the largest (``top``) or smallest ``v``; NaN for empty bins."""
    out = np.full(len(edges) - 1, np.nan)
    idx = np.digitize(u, edges) - 1
    ok = (idx >= 0) & (idx < len(out))
    idx, v = idx[ok], v[ok]
    if len(v) == 0:
        return out
    order = np.argsort(idx, kind="stable")
    idx, v = idx[order], v[order]
    uniq, first = np.unique(idx, return_index=True)
    out[uniq] = (np.maximum if top else np.minimum).reduceat(v, first)
    return out


def rim_dome(
    x: np.ndarray,
    top: np.ndarray,
    select: np.ndarray,
    width_fraction: float,
    rms_max_mm: float,
) -> float | None:
    """Height ``A`` (mm) of the plateau rim's dome over the plateau's mid-depth line; None when unfit.

    Fits ``top = b0 + b1 * x + A * sqrt(1 - (x / width_fraction)**2)`` by least squares over the
    ``select``-ed columns. ``x`` is the column's position across the tibia as a fraction of the tibia's
    half-width (0 at mid-width), ``top`` the tibial side's top edge (mm, along the tibial axis),
    ``width_fraction`` the rim's half-width as a fraction of the tibia's (the articular rim lies a little
    inside the metaphysis' widest outline). ``b0 + b1 * x`` is the plateau's height along its mid-depth
    (a plane seen edge-on), ``A`` half the plateau's depth times the tangent of its slope against the beam.

    Returns None when fewer than 6 columns are given, when the fit leaves a root-mean-square residual
    above ``rms_max_mm`` (the edge is not one plateau's rim: a tray beside a native plateau, a step), or
    when ``A`` is negative (no dome: nothing to correct).
    """
    x, top = x[select], top[select]
    if len(x) < 6:
        return None
    dome = np.sqrt(np.clip(1.0 - (x / width_fraction) ** 2, 0.0, None))
    design = np.stack([np.ones_like(x), x, dome], axis=1)
    coef, *_ = np.linalg.lstsq(design, top, rcond=None)
    rms = float(np.sqrt(np.mean((top - design @ coef) ** 2)))
    height = float(coef[2])
    if rms > rms_max_mm or height < 0:
        return None
    return height


def _plateau_columns(top: np.ndarray, select: np.ndarray, peak_mm: float) -> np.ndarray:
    """``select`` without the columns rising more than ``peak_mm`` above their median (spines, rims)."""
    ok = select & np.isfinite(top)
    if ok.any():
        ok &= top <= np.median(top[ok]) + peak_mm
    return ok


def rim_correction(
    x: np.ndarray, top: np.ndarray, config: MeasurementConfig
) -> Callable[[np.ndarray], np.ndarray] | None:
    """What to take off the tibial top edge at position ``x`` to reach the plateau's mid-depth (mm).

    The dome is first fitted over both compartments' plateaus together (one plateau, the most columns),
    between ``joint_rim_fit_inner_fraction`` and ``joint_rim_fit_outer_fraction`` of the half-width
    (spines inside, the rim's corner and osteophytes outside). Where that fails (a UKA: a flat tray
    beside a native plateau) each compartment is fitted alone, out to
    ``joint_rim_fit_outer_fraction_single`` (a single compartment needs the rim's bend toward its corner);
    see ``compartment_rim_correction``. Returns None when the joint fit fails.
    """
    inner, outer = config.joint_rim_fit_inner_fraction, config.joint_rim_fit_outer_fraction
    select = np.zeros(len(x), dtype=bool)
    for sign in (1.0, -1.0):
        side = (sign * x >= inner) & (sign * x <= outer)
        select |= _plateau_columns(top, side, config.joint_plateau_peak_mm)
    if not ((select & (x > 0)).sum() >= 3 and (select & (x < 0)).sum() >= 3):
        return None
    height = rim_dome(x, top, select, config.joint_rim_width_fraction, config.joint_rim_fit_rms_max_mm)
    return None if height is None else _dome_of(height, config.joint_rim_width_fraction)


def compartment_rim_correction(
    x: np.ndarray, top: np.ndarray, sign: float, config: MeasurementConfig
) -> Callable[[np.ndarray], np.ndarray] | None:
    """As ``rim_correction``, from one compartment's columns alone (``sign``: +1 for x > 0, -1 for x < 0)."""
    inner, outer = config.joint_rim_fit_inner_fraction, config.joint_rim_fit_outer_fraction_single
    side = (sign * x >= inner) & (sign * x <= outer)
    select = _plateau_columns(top, side, config.joint_plateau_peak_mm)
    height = rim_dome(x, top, select, config.joint_rim_width_fraction, config.joint_rim_fit_rms_max_mm)
    return None if height is None else _dome_of(height, config.joint_rim_width_fraction)


def _dome_of(height: float, width_fraction: float) -> Callable[[np.ndarray], np.ndarray]:
    def dome(x: np.ndarray) -> np.ndarray:
        return height * np.sqrt(np.clip(1.0 - (x / width_fraction) ** 2, 0.0, None))

    return dome


def contact_gap(femoral: np.ndarray, tibial: np.ndarray, window_mm: float, peak_mm: float) -> float | None:
    """Gap (mm) under the condyle's lowest point from per-column edges along the tibial axis.

    ``femoral`` is the femoral side's lowest point and ``tibial`` the tibial side's top (already
    corrected to the plateau's mid-depth where that applies) per column; NaN where a side is absent.
    Columns where the tibial side rises more than ``peak_mm`` above its median are left out; of the
    rest, those where the femoral side is within ``window_mm`` of its lowest point are the contact,
    and the gap is the median of ``femoral - tibial`` over them. None when no column qualifies.
    """
    gap = femoral - tibial
    ok = _plateau_columns(tibial, np.isfinite(gap), peak_mm)
    if not ok.any():
        return None
    under = ok & (femoral <= np.min(femoral[ok]) + window_mm)
    return float(np.median(gap[under]))


def joint_spaces(
    upper: np.ndarray,
    lower: np.ndarray,
    spacing: Spacing,
    centre: np.ndarray,
    up: np.ndarray,
    medial: np.ndarray,
    config: MeasurementConfig,
) -> tuple[float | None, float | None]:
    """(medial, lateral) joint space in mm; None for a compartment where no gap can be read.

    Args:
        upper: femur and femoral component together.
        lower: tibia and tibial component together.
        spacing: pixel spacing (mm).
        centre: a point at the joint centre (mm).
        up: proximal direction of the tibial axis.
        medial: medial image direction.
        config: the ``joint_*`` settings (see the module docstring).
    """
    up = unit(up)
    across = normal_of(up)
    if float(across @ medial) < 0:
        across = -across
    # One pixel's extent along the axis: edges lie half a pixel beyond the pixel centres on each side.
    pixel_mm = abs(float(up[0])) * spacing[0] + abs(float(up[1])) * spacing[1]
    lp = points_mm(lower, spacing) - centre
    lv = lp @ up
    # Tibial width near the joint decides the compartments' extent.
    near = lv >= np.percentile(lv, 99.5) - 15.0
    lu_near = lp[near] @ across
    if len(lu_near) < 10:
        return None, None
    half_low, half_high = float(np.percentile(lu_near, 1.0)), float(np.percentile(lu_near, 99.0))
    mid, half = (half_low + half_high) / 2, (half_high - half_low) / 2
    if half <= 0:
        return None, None
    lu = lp @ across
    up_pts = points_mm(upper, spacing) - centre
    uu, uv = up_pts @ across, up_pts @ up
    # The tibial top edge across the whole width, for the rim's dome.
    edges = np.arange(half_low, half_high + BIN_MM, BIN_MM)
    x_all = ((edges[:-1] + edges[1:]) / 2 - mid) / half
    top_all = _by_bin(lu, lv, edges, top=True)
    rim = rim_correction(x_all, top_all, config)
    result: list[float | None] = []
    for lo, hi, sign in ((mid, half_high, 1.0), (half_low, mid, -1.0)):
        width = hi - lo
        c = (lo + hi) / 2
        a, b = c - config.joint_band_fraction * width / 2, c + config.joint_band_fraction * width / 2
        band = np.arange(a, b + BIN_MM, BIN_MM)
        if len(band) < 3:
            result.append(None)
            continue
        x = ((band[:-1] + band[1:]) / 2 - mid) / half
        femoral = _by_bin(uu, uv, band, top=False)
        tibial = _by_bin(lu, lv, band, top=True)
        dome = rim if rim is not None else compartment_rim_correction(x_all, top_all, sign, config)
        if dome is not None:
            tibial = tibial - dome(x)
        gap = contact_gap(femoral, tibial, config.joint_condyle_window_mm, config.joint_plateau_peak_mm)
        value = None if gap is None else gap - pixel_mm
        result.append(value if value is not None and 0 <= value <= config.joint_space_max_mm else None)
    return result[0], result[1]
