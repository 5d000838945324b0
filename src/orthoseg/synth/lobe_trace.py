"""Where each detector ray enters and leaves a ``Lobe``: the closed-form chord of one cross-section when
the lobe's axis lies across the beam, root finding along the ray when it leans toward the beam (its
section then changes along the ray: a flexed femur or component on an AP film). Depths in mm along the
beam, on the pixel grid of ``orthoseg.synth.geometry.trace``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from orthoseg.synth.geometry import Profile, _linear
from orthoseg.synth.ray_roots import ROOT_ERR, coarse_to_fine, solve_rays


def _lobe_tables(p: Profile, n: np.ndarray, g: np.ndarray, rho: float) -> np.ndarray:
    """Per-t quantities of a lobe for one ray direction, padded with an empty section at both ends.

    Rows: centre offset across the ray, 1 / half-width, half chord through the centre (depth units),
    centre depth, and the depth slope of chord midpoints (conjugate diameter).
    """
    rm, ra = p.rm, p.ra
    valid = (rm > 1e-6) & (ra > 1e-6)
    safe_rm = np.where(valid, rm, 1.0)
    safe_ra = np.where(valid, ra, 1.0)
    w = np.sqrt((safe_rm * n[0]) ** 2 + (safe_ra * n[1]) ** 2)
    quad = (g[0] / safe_rm) ** 2 + (g[1] / safe_ra) ** 2
    kappa = -(n[0] * g[0] / safe_rm**2 + n[1] * g[1] / safe_ra**2) / quad
    tables = np.zeros((5, len(rm) + 2), dtype=np.float32)
    tables[0, 1:-1] = p.cm * n[0] + p.ca * n[1]
    tables[1, 1:-1] = np.where(valid, 1.0 / w, 0.0)
    tables[2, 1:-1] = np.where(valid, safe_rm * safe_ra / w, 0.0) / rho
    tables[3, 1:-1] = (p.cm * g[0] + p.ca * g[1]) / rho
    tables[4, 1:-1] = np.where(valid, kappa, 0.0) / rho
    return tables


# A lobe counts as untilted when its axis leans toward the beam by less than this (tan of the angle
# between the ray and the cross-section planes), or when a ray's t changes by less than half a profile
# sample inside it (``_reach_along``): the closed form below is then exact.
TILT_EPS = 1e-6
# Tilted lobes (``_tilted_interval``): a section thinner across the ray than sqrt(THIN) times its
# chord has its implicit function rescaled; a root is taken where a first-order expansion errs by at
# most ROOT_ERR mm (``ray_roots`` for the iterations that follow); rays are solved exactly every
# COARSE_MM (at least every other pixel) and interpolated in between where that is accurate.
THIN = 0.01
COARSE_MM = 0.8


def lobe_interval(
    p: Profile,
    q_base: np.ndarray,
    q_i: np.ndarray,
    q_j: np.ndarray,
    d: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    rho = float(np.hypot(d[0], d[1]))
    if rho < 1e-3:
        raise ValueError("beam parallel to a lobe axis: lobes need rays across their axis")
    if abs(d[2]) < TILT_EPS * rho or abs(d[2]) * _reach_along(p, d) < 0.5 * p.dt * rho:
        return _untilted_interval(p, q_base, q_i, q_j, d, rows, cols, rho)
    if all(np.ptp(v) < 1e-9 for v in (p.cm, p.ca, p.rm, p.ra)):
        return _cylinder_interval(p, q_base, q_i, q_j, d, rows, cols, rho)
    return _tilted_interval(p, q_base, q_i, q_j, d, rows, cols, rho)


def _reach_along(p: Profile, d: np.ndarray) -> float:
    """How far (mm) the lobe reaches from its axis along the beam's projection on the sections: a ray's
    t changes by at most this times d_t / |d_(m,a)| while it is inside. Below half a profile sample
    the closed form's section is as exact as its rounding of t to the samples."""
    rho = float(np.hypot(d[0], d[1]))
    g0, g1 = d[0] / rho, d[1] / rho
    centre = p.cm * g0 + p.ca * g1
    half = np.sqrt((p.rm * g0) ** 2 + (p.ra * g1) ** 2)
    return float(np.max(np.abs(centre) + half))


def _cylinder_interval(
    p: Profile,
    q_base: np.ndarray,
    q_i: np.ndarray,
    q_j: np.ndarray,
    d: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    rho: float,
) -> tuple[np.ndarray, np.ndarray]:
    """A lobe of one cross-section (an elliptic cylinder): its chord, cut to the lobe's extent along t."""
    one = Profile(0.0, p.dt, p.cm[:1], p.ca[:1], p.rm[:1], p.ra[:1])
    flat = np.array([q_base[0], q_base[1], 0.0])
    # The untilted chord of the section (t does not matter), then where the ray's t leaves the lobe.
    lo, hi = _untilted_interval(one, flat, q_i * [1, 1, 0], q_j * [1, 1, 0], d * [1, 1, 0], rows, cols, rho)
    ends = [(p.t0 - 0.5 * p.dt - q_base[2]) / d[2], (p.t1 + 0.5 * p.dt - q_base[2]) / d[2]]
    first, second = min(ends), max(ends)
    np.maximum(lo, _linear(np.array([-q_i[2], -q_j[2]]) / d[2], first, rows, cols), out=lo)
    np.minimum(hi, _linear(np.array([-q_i[2], -q_j[2]]) / d[2], second, rows, cols), out=hi)
    np.maximum(hi, lo, out=hi)
    return lo, hi


def _ray_coordinates(
    q_base: np.ndarray, q_i: np.ndarray, q_j: np.ndarray, d: np.ndarray, rho: float
) -> tuple[
    np.ndarray, np.ndarray, tuple[np.ndarray, float], tuple[np.ndarray, float], tuple[np.ndarray, float]
]:
    """The section-plane ray direction g, the direction n across it, and three quantities linear in the
    pixel (i, j), each as (coefficients, constant): the ray's offset across the axis (mm), the depth of
    its closest approach to the axis (mm along the beam), and the lobe's t there."""
    g = np.array([d[0], d[1]]) / rho
    n = np.array([-g[1], g[0]])

    def across(v: np.ndarray) -> float:
        return float(v[0] * n[0] + v[1] * n[1])

    def closest_tau(v: np.ndarray) -> float:
        return float(-(v[0] * d[0] + v[1] * d[1]) / rho**2)

    offset = (np.array([across(q_i), across(q_j)]), across(q_base))
    tau_coef, tau_const = np.array([closest_tau(q_i), closest_tau(q_j)]), closest_tau(q_base)
    t_at_tau = (
        np.array([q_i[2] + tau_coef[0] * d[2], q_j[2] + tau_coef[1] * d[2]]),
        q_base[2] + tau_const * d[2],
    )
    return g, n, offset, (tau_coef, tau_const), t_at_tau


def _untilted_interval(
    p: Profile,
    q_base: np.ndarray,
    q_i: np.ndarray,
    q_j: np.ndarray,
    d: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    rho: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Rays across the axis (t constant along each ray): the chord of one cross-section, closed form."""
    g, n, (off_coef, off_const), (tau_star_coef, tau_star_const), (t_coef, t_const) = _ray_coordinates(
        q_base, q_i, q_j, d, rho
    )
    tables = _lobe_tables(p, n, g, rho)
    # Index into the padded tables: 0 and n+1 are empty sections (rays past the ends find nothing).
    index = _linear(t_coef / p.dt, (t_const - p.t0) / p.dt + 1.5, rows, cols)
    np.clip(index, 0.0, len(p.rm) + 1.0, out=index)
    index = index.astype(np.intp)
    cs_t, inv_w_t, half_t, cg_t, kappa_t = (np.take(tables[k], index, mode="clip") for k in range(5))
    off = _linear(off_coef, off_const, rows, cols)
    off -= cs_t
    z = off * inv_w_t
    np.multiply(z, z, out=z)
    np.subtract(1.0, z, out=z)
    np.maximum(z, 0.0, out=z)
    np.sqrt(z, out=z)
    z *= half_t  # half chord
    mid = _linear(tau_star_coef, tau_star_const, rows, cols)
    mid += cg_t
    kappa_t *= off
    mid += kappa_t
    return mid - z, mid + z


def _tilted_tables(p: Profile, n: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-t section quantities for rays at an angle to the sections, and their steps to the next t.

    In the section plane (u along the ray's projection g, s across it) the section at t is
    ``lam (u - cg - kap (s - cs))^2 + eta (s - cs)^2 - nu <= 0``: centre (cs, cg), chord midpoints
    drifting by kap per unit s. With w2 the squared half width across the ray and h2 the squared half
    chord through the centre, (lam, eta, nu) = (w2, h2, w2 h2) / max(w2, THIN h2): the ellipse's
    implicit function scaled so that it stays bounded where a section thins to a line across the ray
    or to a point. Where the profile has no section, nu continues below zero, so that the function
    keeps rising away from the lobe. Rows 0-5 at each profile sample, rows 6-11 their differences to
    the next sample (the last repeated), for linear interpolation; row 12 a bound on the second
    derivative of G along t (per sample squared), for the error of the linear expansion. Also returns
    the sections' extent across the ray, (cs - w, cs + w) (+-inf where there is no section).
    """
    rm, ra = p.rm, p.ra
    valid = (rm > 1e-6) & (ra > 1e-6)
    w2 = (rm * n[0]) ** 2 + (ra * n[1]) ** 2
    h2 = (rm * ra) ** 2 / np.maximum(w2, 1e-30)
    scale = np.maximum(np.maximum(w2, THIN * h2), 1e-30)
    tables = np.empty((13, len(rm)), dtype=np.float64)
    tables[0] = p.cm * n[0] + p.ca * n[1]
    tables[1] = p.cm * g[0] + p.ca * g[1]
    tables[2] = -(n[0] * g[0] * ra**2 + n[1] * g[1] * rm**2) / np.maximum(w2, 1e-30)
    tables[3] = w2 / scale
    tables[4] = h2 / scale
    tables[5] = w2 * h2 / scale
    w = np.sqrt(w2)
    extent = np.stack([np.where(valid, tables[0] - w, np.inf), np.where(valid, tables[0] + w, -np.inf)])
    index = np.arange(len(rm))
    if not valid.any():
        tables[3:5] = 1.0
        tables[5] = -1.0  # no section anywhere: every ray misses
    elif not valid.all():
        good = index[valid]
        for row in (2, 3, 4):
            tables[row] = np.interp(index, good, tables[row][good])
        # Beyond a section that vanishes, nu falls on (by its value at the last section, at least
        # 1 mm^2 per sample): rays there are outside, the more so the further from the lobe.
        after = np.clip(np.searchsorted(good, index), 0, len(good) - 1)
        near = np.where(
            np.abs(index - good[after - 1]) < np.abs(index - good[after]), good[after - 1], good[after]
        )
        drop = np.maximum(tables[5][near], 1.0)
        tables[5] = np.where(valid, tables[5], tables[5][near] - drop * np.abs(index - near))
    tables[6:12, :-1] = np.diff(tables[:6], axis=1)
    tables[6:12, -1] = tables[6:12, -2]
    # Bend: a bound on |d2G/dx2| (x in samples) at fixed u and s, from the tables' second differences,
    # bounding |u - mid| by the half chord and |off| by the half width (the neighbours' largest).
    second = np.zeros((6, len(rm)))
    second[:, 1:-1] = np.abs(tables[:6, 2:] - 2.0 * tables[:6, 1:-1] + tables[:6, :-2])
    h = ndimage.maximum_filter1d(np.sqrt(np.where(valid, h2, 0.0)), 3, mode="nearest")
    ww = ndimage.maximum_filter1d(w, 3, mode="nearest")
    lam, eta, kap = tables[3], tables[4], np.abs(tables[2])
    slope = np.abs(tables[6:12])
    tables[12] = (
        2.0 * lam * h * (second[1] + ww * second[2] + kap * second[0])
        + h**2 * second[3]
        + ww**2 * second[4]
        + 2.0 * eta * ww * second[0]
        + second[5]
        # the squares of the first-order changes (mid, off) also bend G
        + 2.0 * lam * (slope[1] + ww * slope[2] + kap * slope[0]) ** 2
        + 2.0 * eta * slope[0] ** 2
    )
    return tables.astype(np.float32), extent


def _tilted_interval(
    p: Profile,
    q_base: np.ndarray,
    q_i: np.ndarray,
    q_j: np.ndarray,
    d: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    rho: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Rays that run along the axis as they cross it: root finding with the section varying along the ray.

    Along a ray, u (distance along the ray's projection on the section plane, from its point closest
    to the axis) sets t = t* + k u, with k the tangent of the ray's angle to the section planes. The
    ray is inside where G(u) = lam (u - mid)^2 + eta off^2 - nu < 0 (``_tilted_tables``; off = s - cs,
    mid = cg + kap off, all at t) and t is on the lobe. Expanding the tables to first order in t about
    a point makes G a quadratic in u with a closed-form vertex and roots.

    Each ray is expanded about the chord midpoint of the section at t*; its roots are kept where the
    expansion's neglected bend of G (a bound from the tables' second differences) moves them by less
    than ROOT_ERR, and a miss where the quadratic has no root by a margin. The other rays that could
    reach the lobe are solved: bracketed Newton steps from those roots where the midpoint is inside;
    else vertex steps (kept only where they go deeper) and, failing those, samples along the ray find
    a point inside, if any, then the Newton steps. Profiles are interpolated linearly between samples.
    On grids finer than COARSE_MM the rays are solved every few pixels and interpolated in between
    (``ray_roots.coarse_to_fine``).
    """
    g, n, (off_coef, off_const), (tau_coef, tau_const), (t_coef, t_const) = _ray_coordinates(
        q_base, q_i, q_j, d, rho
    )
    kt = float(d[2] / rho)
    shape = (len(rows), len(cols))
    s_all = _linear(off_coef, off_const, rows, cols).ravel()
    # Index coordinate x = (t - t0) / dt of the ray's closest approach; the ray's t is x * dt + t0.
    x_all = _linear(t_coef / p.dt, (t_const - p.t0) / p.dt, rows, cols).ravel()
    tables, extent = _tilted_tables(p, n, g)
    rows12 = np.ascontiguousarray(tables[:12])
    last = len(p.rm) - 2
    dx = np.float32(kt / p.dt)  # index units per mm of u
    kt32 = np.float32(kt)
    inv_dt = np.float32(1.0 / p.dt)

    def model(u: np.ndarray, s: np.ndarray, x_star: np.ndarray) -> tuple[np.ndarray, ...]:
        """(a2, b1, c0, u - mid, sample index) with G(u + v) ~ a2 v^2 + b1 v + c0 about u."""
        x = x_star + dx * u
        k = np.clip(x, 0.0, last).astype(np.intp)
        f = x - k
        cs, cg, kap, lam, eta, nu, dcs, dcg, dkap, dlam, deta, dnu = np.take(rows12, k, axis=1)
        off = s - (cs + f * dcs)
        kap_f = kap + f * dkap
        ec = u - (cg + f * dcg + kap_f * off)
        c = 1.0 - kt32 * (dcg + dkap * off - kap_f * dcs) * inv_dt
        lam_f = lam + f * dlam
        lam_v = kt32 * dlam * inv_dt
        eta_f = eta + f * deta
        eta_v = kt32 * deta * inv_dt
        cs_v = kt32 * dcs * inv_dt
        c0 = lam_f * ec * ec + eta_f * off * off - (nu + f * dnu)
        b1 = 2.0 * lam_f * ec * c + lam_v * ec * ec + eta_v * off * off - 2.0 * eta_f * off * cs_v
        b1 -= kt32 * dnu * inv_dt
        a2 = lam_f * c * c + 2.0 * lam_v * ec * c + eta_f * cs_v * cs_v - 2.0 * eta_v * off * cs_v
        return np.maximum(a2, 1e-4), b1, c0, ec, k

    # The lobe's extent along t (as the untilted chord: half a sample beyond the end samples) and along
    # the ray's projection (over all sections), in u.
    ua_all = (np.float32(-0.5) - x_all) / dx
    ub_all = (np.float32(last + 1.5) - x_all) / dx
    if kt < 0:
        ua_all, ub_all = ub_all, ua_all
    valid = np.isfinite(extent[0])
    half_u = np.sqrt((p.rm * g[0]) ** 2 + (p.ra * g[1]) ** 2)
    centre_u = p.cm * g[0] + p.ca * g[1]
    u_min = float(np.min((centre_u - half_u)[valid])) if valid.any() else 0.0
    u_max = float(np.max((centre_u + half_u)[valid])) if valid.any() else 0.0
    np.maximum(ua_all, np.float32(u_min), out=ua_all)
    np.minimum(ub_all, np.float32(u_max), out=ub_all)
    span_nodes = int(np.ceil(abs(kt) * (u_max - u_min) / p.dt)) + 3
    reach_lo = ndimage.minimum_filter1d(extent[0], span_nodes, mode="nearest").astype(np.float32)
    reach_hi = ndimage.maximum_filter1d(extent[1], span_nodes, mode="nearest").astype(np.float32)
    bend_span = ndimage.maximum_filter1d(tables[12], span_nodes, mode="nearest")
    u_centre = np.float32(0.5 * (u_min + u_max))

    def exact(sel: np.ndarray) -> tuple[np.ndarray, ...]:
        """Entry and exit (u) of the rays ``sel`` (flat indices), their midpoint and signed squared half
        chord (of the local quadratic, < 0 for a miss), and whether a root sits on the lobe's end."""
        s, x, ua, ub = s_all[sel], x_all[sel], ua_all[sel], ub_all[sel]
        # Rays that can reach the lobe: within the sections' reach across the ray over the t they span.
        k = np.clip(np.rint(x + dx * u_centre), 0, last + 1).astype(np.intp)
        reach = (ua < ub) & (s >= np.take(reach_lo, k)) & (s <= np.take(reach_hi, k))
        lo, hi = np.zeros(len(sel), dtype=np.float32), np.zeros(len(sel), dtype=np.float32)
        mid, sq = np.zeros(len(sel), dtype=np.float32), np.full(len(sel), -1e6, dtype=np.float32)
        idx = np.flatnonzero(reach)
        if not len(idx):
            return lo, hi, mid, sq, np.zeros(len(sel), dtype=bool)
        s, x, ua, ub = s[idx], x[idx], ua[idx], ub[idx]
        # Expand about the chord midpoint of the section at t*.
        k = np.clip(np.rint(x), 0, last + 1).astype(np.intp)
        u = np.clip(np.take(tables[1], k) + np.take(tables[2], k) * (s - np.take(tables[0], k)), ua, ub)
        a2, b1, c0, _, k = model(u, s, x)
        disc = b1 * b1 - 4.0 * a2 * c0
        root = np.sqrt(np.maximum(disc, 0.0))
        lo_r = np.clip(u + (-b1 - root) / (2.0 * a2), ua, ub)
        hi_r = np.clip(u + (-b1 + root) / (2.0 * a2), ua, ub)
        # Error of the roots (and of the miss) from the expansion's neglected bend of G over the t
        # between the expansion point and them (the bend's largest over the span of t a ray covers).
        bend = np.take(bend_span, k) * np.float32(0.5 * (kt / p.dt) ** 2)
        slope_lo = np.maximum(np.abs(b1 + 2.0 * a2 * (lo_r - u)), 1e-6)
        slope_hi = np.maximum(np.abs(b1 + 2.0 * a2 * (hi_r - u)), 1e-6)
        good = (bend * (lo_r - u) ** 2 <= ROOT_ERR * slope_lo) & (
            bend * (hi_r - u) ** 2 <= ROOT_ERR * slope_hi
        )
        vertex = -b1 / (2.0 * a2)
        inside = c0 < 0.0
        sure_miss = (c0 + 0.5 * b1 * vertex > 2.0 * bend * vertex**2 + 1e-3) & (disc < 0.0)
        refine = np.flatnonzero(inside & ~good)
        if len(refine):
            lo_r[refine], hi_r[refine] = solve_rays(
                model, s[refine], x[refine], ua[refine], ub[refine], u[refine], lo_r[refine], hi_r[refine]
            )
        doubt = np.flatnonzero(~(inside | sure_miss))
        if len(doubt):
            lo_r[doubt], hi_r[doubt] = solve_rays(model, s[doubt], x[doubt], ua[doubt], ub[doubt], u[doubt])
        hit = inside | (hi_r > lo_r)
        np.copyto(hi_r, lo_r, where=~hit)
        lo[idx], hi[idx] = lo_r, hi_r
        mid[idx] = np.where(hit, 0.5 * (lo_r + hi_r), u + vertex)
        sq[idx] = np.where(hit, (0.5 * (hi_r - lo_r)) ** 2, np.minimum(disc, 0.0) / (4.0 * a2 * a2))
        ends = np.zeros(len(sel), dtype=bool)
        ends[idx] = hit & ((lo_r <= ua + 1e-4) | (hi_r >= ub - 1e-4))
        return lo, hi, mid, sq, ends

    rows_n, cols_n = shape
    step = max(2, int(COARSE_MM / float(np.linalg.norm(q_i))))
    if step == 1 or rows_n < 3 * step or cols_n < 3 * step:
        lo_all, hi_all = exact(np.arange(rows_n * cols_n))[:2]
    else:
        lo_all, hi_all = coarse_to_fine(exact, rows_n, cols_n, step, ua_all, ub_all)
    tau = _linear(tau_coef, tau_const, rows, cols)
    inv_rho = np.float32(1.0 / rho)
    return tau + lo_all.reshape(shape) * inv_rho, tau + hi_all.reshape(shape) * inv_rho
