"""Medial and lateral joint space on an AP image: the gap between femoral and tibial sides, in mm.

The femoral side is the femur with its component, the tibial side the tibia with its tray (so a native
knee, a UKA's unreplaced compartment and a TKA are measured alike). Each compartment is the half of the
joint on its side of the joint centre; over the central ``joint_band_fraction`` of that half the gap
along the tibial axis is read per 0.5 mm column, and the compartment's joint space is the smallest gap
under the condyle: only columns where the femoral side lies within ``joint_condyle_window_mm`` of its lowest
point in the compartment count (the condyle's flat distal surface on AP), and only columns where the tibial
side is within ``joint_plateau_peak_mm`` of its median height in the band (the plateau, not a spine or a
rim). Elsewhere in the band the gap runs from the notch roof or a component's edge to the tibial spines,
which is not the articular gap.
A polyethylene insert is radiolucent and not in any mask, so on a TKA or a UKA's replaced compartment the
gap read is condyle (metal) to tray (metal), which is what a reader measures on the film.

On an AP film a posteriorly sloped plateau or tray shows its highest (anterior) rim, so the gap read
here is smaller than the gap at the contact point by about half the plateau depth times the slope's
tangent; no correction is applied (the slope is not visible on AP).
"""

from __future__ import annotations

import numpy as np

from orthoseg.measure.config import MeasurementConfig
from orthoseg.measure.geometry import Spacing, normal_of, points_mm, unit


def _by_bin(u: np.ndarray, v: np.ndarray, edges: np.ndarray, top: bool) -> np.ndarray:
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
        config: ``joint_band_fraction``, ``joint_condyle_window_mm``, ``joint_space_max_mm``.
    """
    up = unit(up)
    across = normal_of(up)
    if float(across @ medial) < 0:
        across = -across
    lp = points_mm(lower, spacing) - centre
    # Tibial width near the joint decides the compartments' extent.
    lv = lp @ up
    near = lv >= np.percentile(lv, 99.5) - 15.0
    lu = lp[near] @ across
    if len(lu) < 10:
        return None, None
    half_low, half_high = float(np.percentile(lu, 1.0)), float(np.percentile(lu, 99.0))
    mid = (half_low + half_high) / 2
    up_pts = points_mm(upper, spacing) - centre
    result: list[float | None] = []
    for lo, hi in ((mid, half_high), (half_low, mid)):
        width = hi - lo
        c = (lo + hi) / 2
        a, b = c - config.joint_band_fraction * width / 2, c + config.joint_band_fraction * width / 2
        edges = np.arange(a, b + 0.5, 0.5)
        if len(edges) < 3:
            result.append(None)
            continue
        femoral = _by_bin(up_pts @ across, up_pts @ up, edges, top=False)
        tibial = _by_bin(lp @ across, lv, edges, top=True)
        gap = femoral - tibial
        # Only under the condyle's distal surface: columns where the femoral side comes within
        # ``joint_condyle_window_mm`` of its lowest point in this compartment. Elsewhere in the band the gap
        # runs from the notch or a component's edge down to the tibial spines or a native rim, which
        # is not the articular gap.
        ok = np.isfinite(gap)
        if ok.any():
            # The plateau, not the spines or a rim: columns well above the compartment's median tibial
            # height are left out (the spines sit at the inner end of the band, a rim at the outer one).
            ok &= tibial <= np.nanmedian(tibial[ok]) + config.joint_plateau_peak_mm
        if not ok.any():
            result.append(None)
            continue
        under = ok & (femoral <= np.nanmin(femoral[ok]) + config.joint_condyle_window_mm)
        value = float(np.min(gap[under]))
        result.append(value if 0 <= value <= config.joint_space_max_mm else None)
    return result[0], result[1]
