"""Entry and exit of rays through a solid given only a local quadratic model of its implicit function
along each ray: vertex steps and samples to find a point inside, bracketed Newton steps for both roots,
and exact chords every few pixels interpolated in between where that is accurate. Used by
``orthoseg.synth.lobe_trace`` for lobes that lean toward the beam; u is mm along a ray's projection.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

# The local quadratic of a solid along rays (u, s, x): (a2, b1, c0, u - mid, sample index).
RayModel = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, ...]]
# Exact chords of the rays at flat pixel indices: (entry, exit, midpoint, signed squared half chord,
# root on the solid's end).
ExactChords = Callable[[np.ndarray], tuple[np.ndarray, ...]]

# Roots are accurate to ROOT_ERR mm (the interpolation's error bound, and the caller's first-order
# expansion); Newton steps run until they move by less than ROOT_TOL mm (ROOT_STEPS at most); a ray's
# deepest point is sought by VERTEX_STEPS steps, then SAMPLES samples along it.
ROOT_ERR = 0.02
ROOT_TOL = 0.02
ROOT_STEPS = 12
VERTEX_STEPS = 3
SAMPLES = 16


def coarse_to_fine(
    exact: ExactChords, rows_n: int, cols_n: int, step: int, ua: np.ndarray, ub: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Chords on a rows_n x cols_n grid from exact ones every ``step`` pixels: the chord's midpoint and
    signed squared half length (smooth across the silhouette) interpolated bilinearly, and exact
    chords in the cells where that is not accurate to ~ROOT_ERR (by the coarse second differences),
    next to the silhouette or where a chord ends on the lobe's end."""
    ri = np.unique(np.append(np.arange(0, rows_n, step), rows_n - 1))
    ci = np.unique(np.append(np.arange(0, cols_n, step), cols_n - 1))
    nodes = (ri[:, None] * cols_n + ci[None, :]).ravel()
    lo_n, hi_n, mid_n, sq_n, ends_n = exact(nodes)
    grid = (len(ri), len(ci))
    mid_n, sq_n, ends_n = mid_n.reshape(grid), sq_n.reshape(grid), ends_n.reshape(grid)

    def second(v: np.ndarray) -> np.ndarray:
        """|second difference| along both axes at each node (edges: their neighbour's)."""
        out = np.zeros_like(v)
        for axis in (0, 1):
            if v.shape[axis] < 3:
                continue
            d = np.abs(np.diff(v, 2, axis=axis))
            pad = [(0, 0), (0, 0)]
            pad[axis] = (1, 1)
            out += np.pad(d, pad, mode="edge")
        return out

    # Interpolation error bound of each node's neighbourhood, and the cells (by their top-left node)
    # where it is too large for the chord (or the silhouette) or a chord ends on the lobe's end.
    err_sq = second(sq_n) / 8.0
    err_mid = second(mid_n) / 8.0
    sq_cap = np.maximum(sq_n, 0.0)
    doubt_n = (err_mid + err_sq / (2.0 * np.sqrt(sq_cap) + 1e-6) > ROOT_ERR) & (sq_n > -4.0 * err_sq - 1e-3)
    doubt_n |= ends_n
    cell = doubt_n[:-1, :-1] | doubt_n[1:, :-1] | doubt_n[:-1, 1:] | doubt_n[1:, 1:]
    # Every pixel's cell and weights.
    a = np.clip(np.searchsorted(ri, np.arange(rows_n), side="right") - 1, 0, len(ri) - 2)
    b = np.clip(np.searchsorted(ci, np.arange(cols_n), side="right") - 1, 0, len(ci) - 2)
    wa = ((np.arange(rows_n) - ri[a]) / (ri[a + 1] - ri[a])).astype(np.float32)[:, None]
    wb = ((np.arange(cols_n) - ci[b]) / (ci[b + 1] - ci[b])).astype(np.float32)[None, :]

    def bilinear(v: np.ndarray) -> np.ndarray:
        top = v[a][:, b] * (1 - wb) + v[a][:, b + 1] * wb
        bottom = v[a + 1][:, b] * (1 - wb) + v[a + 1][:, b + 1] * wb
        return (top * (1 - wa) + bottom * wa).ravel()

    mid, sq = bilinear(mid_n), bilinear(sq_n)
    half = np.sqrt(np.maximum(sq, 0.0))
    lo = np.maximum(mid - half, ua)
    hi = np.minimum(mid + half, ub)
    np.maximum(hi, lo, out=hi)
    np.copyto(hi, lo, where=sq <= 0.0)
    redo = np.flatnonzero(cell[a][:, b].ravel())
    if len(redo):
        lo[redo], hi[redo] = exact(redo)[:2]
    lo[nodes], hi[nodes] = lo_n, hi_n
    return lo, hi


def solve_rays(
    model: RayModel,
    s: np.ndarray,
    x: np.ndarray,
    ua: np.ndarray,
    ub: np.ndarray,
    u: np.ndarray,
    lo: np.ndarray | None = None,
    hi: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Entry and exit (u; equal for a miss) of rays (flat arrays) from the expansion points ``u``: vertex
    steps (kept only where they go deeper) and, failing those, samples along the ray find a point inside,
    then ``newton_roots``; with ``lo`` and ``hi``, ``u`` is inside and they are first estimates of the
    roots."""
    if lo is not None and hi is not None:
        return newton_roots(model, s, x, ua, ub, u, lo.copy(), hi.copy(), np.ones(len(u), dtype=bool))
    a2, b1, depth, ec, _ = model(u, s, x)
    best_a2, best_b1 = a2, b1
    u = u.copy()
    # Deepest point: vertex steps of the local quadratic, kept only where they go deeper (else halved).
    step = -b1 / (2.0 * a2)
    for _ in range(VERTEX_STEPS):
        cand = np.clip(u + step, ua, ub)
        a2, b1, c0, _, _ = model(cand, s, x)
        deeper = c0 < depth
        np.copyto(u, cand, where=deeper)
        np.copyto(depth, c0, where=deeper)
        np.copyto(best_a2, a2, where=deeper)
        np.copyto(best_b1, b1, where=deeper)
        step = np.where(deeper, -b1 / (2.0 * a2), 0.5 * step)
    # Rays still without a point inside: samples along their length (all at once).
    where = np.flatnonzero(depth >= 0.0)
    if len(where):
        frac = ((np.arange(SAMPLES, dtype=np.float32) + 0.5) / SAMPLES)[:, None]
        ua_d, ub_d = ua[where], ub[where]
        cand = (ua_d + frac * (ub_d - ua_d)).ravel()
        c0 = model(cand, np.tile(s[where], SAMPLES), np.tile(x[where], SAMPLES))[2]
        c0 = c0.reshape(SAMPLES, len(where))
        best = np.argmin(c0, axis=0)
        u_d = cand.reshape(SAMPLES, len(where))[best, np.arange(len(where))]
        better = c0[best, np.arange(len(where))] < depth[where]
        sel = where[better]
        if len(sel):
            a2, b1, c0, _, _ = model(u_d[better], s[sel], x[sel])
            u[sel], depth[sel], best_a2[sel], best_b1[sel] = u_d[better], c0, a2, b1
    hit = depth < 0.0  # the ray crosses the lobe
    root = np.sqrt(np.maximum(best_b1 * best_b1 - 4.0 * best_a2 * depth, 0.0))
    lo = np.clip(u + (-best_b1 - root) / (2.0 * best_a2), ua, u)
    hi = np.clip(u + (-best_b1 + root) / (2.0 * best_a2), u, ub)
    return newton_roots(model, s, x, ua, ub, u, lo, hi, hit)


def newton_roots(
    model: RayModel,
    s: np.ndarray,
    x: np.ndarray,
    ua: np.ndarray,
    ub: np.ndarray,
    u: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    hit: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Entry and exit of rays with a point ``u`` inside (where ``hit``) from first estimates: Newton
    steps of the local quadratic inside a bracket (outside, inside), both roots at once, until they
    move by less than ROOT_TOL (rays still moving are compressed out after each step)."""
    n = len(u)
    est = np.concatenate([lo, hi])
    active = np.flatnonzero(np.concatenate([hit, hit]))
    sign = np.where(active < n, np.float32(-1.0), np.float32(1.0))
    out_u = np.concatenate([ua, ub])[active]
    in_u = np.concatenate([u, u])[active]
    s2, x2 = np.concatenate([s, s]), np.concatenate([x, x])
    last_step = np.full(len(active), np.inf, dtype=np.float32)
    for _ in range(ROOT_STEPS):
        if not len(active):
            break
        e = est[active]
        a2, b1, c0, _, _ = model(e, s2[active], x2[active])
        inside = c0 < 0.0
        np.copyto(in_u, e, where=inside)
        np.copyto(out_u, e, where=~inside)
        disc = b1 * b1 - 4.0 * a2 * c0
        new = e + (-b1 + sign * np.sqrt(np.maximum(disc, 0.0))) / (2.0 * a2)
        low, high = np.minimum(out_u, in_u), np.maximum(out_u, in_u)
        # Bisect where Newton leaves the bracket or its step is not half the last one (oscillation).
        bad = (disc < 0.0) | (new < low - 1e-3) | (new > high + 1e-3) | (np.abs(new - e) > 0.5 * last_step)
        np.clip(new, low, high, out=new)
        np.copyto(new, 0.5 * (low + high), where=bad)
        est[active] = new
        last_step = np.abs(new - e)
        moving = last_step > ROOT_TOL
        active, out_u, in_u = active[moving], out_u[moving], in_u[moving]
        sign, last_step = sign[moving], last_step[moving]
    lo, hi = est[:n], est[n:]
    np.copyto(hi, lo, where=~hit)
    return lo, hi
