"""Lines and extents of the implant components on the image (what the angles and categories use).

* ``condylar_line`` (AP, femoral component): the line tangent to the distal surfaces of both condyles
  (the edge of the lower convex hull that spans the component's middle).
* ``tray_line`` (AP and lateral, tibial component): a robust line fit through the top edge of the tray
  (outliers such as a hinge post are trimmed).
* ``cut_axis`` (lateral, femoral component): the component's proximal-distal axis from the orientation of
  its bone-facing edges (anterior, distal and posterior cuts are parallel or perpendicular to it).
* ``extent_along``: how far a mask reaches along a direction (stem length, tray width).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from orthoseg.measure.geometry import Spacing, normal_of, points_mm, theil_sen, unit


def _profile(
    points: np.ndarray, along: np.ndarray, across: np.ndarray, step: float, top: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Per bin across: the extreme coordinate along ``along`` (max if ``top`` else min)."""
    u = points @ across
    v = points @ along
    bins = np.floor((u - u.min()) / step).astype(np.int64)
    order = np.argsort(bins, kind="stable")
    bins, u, v = bins[order], u[order], v[order]
    uniq, first = np.unique(bins, return_index=True)
    ext = (np.maximum if top else np.minimum).reduceat(v, first)
    centre = u.min() + (uniq + 0.5) * step
    return centre, ext


def extent_along(mask: np.ndarray, spacing: Spacing, direction: np.ndarray) -> tuple[float, float] | None:
    """(low, high) 1st/99th percentile of the mask's coordinate along ``direction`` (mm), None if empty."""
    points = points_mm(mask, spacing)
    if len(points) == 0:
        return None
    v = points @ unit(direction)
    low, high = np.percentile(v, [1.0, 99.0])
    return float(low), float(high)


def condylar_line(mask: np.ndarray, spacing: Spacing, up: np.ndarray) -> np.ndarray | None:
    """Unit direction of the distal condylar tangent of a femoral component on AP (None if not found).

    Args:
        mask: femoral component mask.
        spacing: pixel spacing (mm).
        up: proximal direction of the femur (mm coordinates).
    """
    points = points_mm(mask, spacing)
    if len(points) < 50:
        return None
    up = unit(up)
    across = normal_of(up)
    step = min(spacing)
    u, v = _profile(points, up, across, step, top=False)
    if len(u) < 10:
        return None
    middle = (u.min() + u.max()) / 2
    # Lower convex hull (v minimal) of the profile, monotone chain over u.
    hull: list[int] = []
    for i in range(len(u)):
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            if (u[b] - u[a]) * (v[i] - v[a]) - (v[b] - v[a]) * (u[i] - u[a]) <= 0:
                hull.pop()
            else:
                break
        hull.append(i)
    for a, b in zip(hull[:-1], hull[1:], strict=True):
        if u[a] <= middle <= u[b] and u[b] - u[a] > 0.2 * (u.max() - u.min()):
            return unit(across * (u[b] - u[a]) + up * (v[b] - v[a]))
    return None


def tray_line(mask: np.ndarray, spacing: Spacing, up: np.ndarray, trim_mm: float = 0.6) -> np.ndarray | None:
    """Unit direction of the top edge of a tibial tray (AP or lateral), None when too small.

    The top edge (the most proximal component pixel of each column across the limb) is fitted over the
    middle 90% of the tray's width with a robust line (a hinge post or a rim is trimmed away).
    """
    points = points_mm(mask, spacing)
    if len(points) < 50:
        return None
    up = unit(up)
    across = normal_of(up)
    u, v = _profile(points, up, across, min(spacing), top=True)
    span = u.max() - u.min()
    keep = (u > u.min() + 0.05 * span) & (u < u.max() - 0.05 * span)
    if keep.sum() < 10:
        return None
    u, v = u[keep], v[keep]
    # The tray top is the highest flat run: drop anything far below the upper envelope (notches, gaps).
    upper = v >= np.percentile(v, 20) - 2.0
    _, slope = theil_sen(u[upper], v[upper], trim_mm=trim_mm)
    return unit(across + slope * up)


# Bone or cement counts as facing a cut only this far (mm) inside the component's convex hull.
HULL_MARGIN_MM = 0.5
# Pieces of that bone smaller than this share of the largest do not lie in the U.
INNER_PIECE_FRACTION = 0.2


def inside_hull(shape_points: np.ndarray, points: np.ndarray, margin: float) -> np.ndarray:
    """True for each of ``points`` lying more than ``margin`` inside the convex hull of ``shape_points``
    (all (N, 2) in mm); all True when the hull is degenerate."""
    try:
        hull = ConvexHull(shape_points)
    except QhullError:
        return np.ones(len(points), dtype=bool)
    # Each facet: normal . x + offset <= 0 inside, with a unit normal (distance in mm).
    signed = points @ hull.equations[:, :2].T + hull.equations[:, 2]
    return np.max(signed, axis=1) < -margin


def cut_axis(
    component: np.ndarray,
    bone: np.ndarray,
    spacing: Spacing,
    up: np.ndarray,
    max_tilt_deg: float = 30.0,
    step_deg: float = 0.1,
    reach_mm: float = 45.0,
) -> np.ndarray | None:
    """Proximal axis of a femoral component on a lateral view, from its bone-facing edges.

    The anterior and posterior cut surfaces run along the component's axis, so the component's boundary
    pixels that face bone (or cement) line up best, seen along that axis: for every candidate direction
    within ``max_tilt_deg`` of ``up`` (every ``step_deg``) the pixels are projected across it into
    pixel-wide bins, and the direction whose projection is sharpest (largest sum of squared bin counts)
    is the axis. Straight runs, not local gradients (which lean toward the pixel grid's diagonals),
    decide; distal cuts and chamfers, whose angles differ between designs, add no sharp peak. Only
    edges within ``reach_mm`` of the component's distal end count: a revision stem follows the canal,
    not the box. Only edges facing bone or cement inside the component's U count (the piece of it more
    than ``HULL_MARGIN_MM`` inside the component's convex hull): a resurfaced patella's cement mantle
    against the outer face of the flange, a straight run at another angle, once outscored the cuts.
    """
    if np.count_nonzero(component) < 50:
        return None
    boundary = component & ~ndimage.binary_erosion(component)
    # The cuts face bone inside the component's U (its convex hull); the outer (articular) surface can
    # touch cement that is not the femur's (a resurfaced patella's mantle lies against the flange).
    bone_rows, bone_cols = np.nonzero(bone)
    bone_points = np.stack([bone_rows * spacing[0], bone_cols * spacing[1]], axis=1)
    inner = np.zeros_like(bone, dtype=bool)
    within = inside_hull(points_mm(component, spacing), bone_points, HULL_MARGIN_MM)
    inner[bone_rows[within], bone_cols[within]] = True
    # What lies in the U is one piece (bone, its cement, around the lugs or box); a thin sliver between
    # the rounded outer surface and the hull (the patella's cement) is a separate small piece.
    labels, count = ndimage.label(inner)
    if count > 1:
        sizes = np.bincount(labels.ravel())[1:]
        inner = np.isin(labels, 1 + np.nonzero(sizes >= INNER_PIECE_FRACTION * sizes.max())[0])
    edge = boundary & ndimage.binary_dilation(inner, iterations=2)
    rows, cols = np.nonzero(edge)
    if len(rows) < 20:
        return None
    points = np.stack([rows * spacing[0], cols * spacing[1]], axis=1)
    height = points @ unit(up)
    distal_end = float(np.percentile(points_mm(component, spacing) @ unit(up), 0.5))
    points = points[height <= distal_end + reach_mm]
    if len(points) < 20:
        return None
    points -= points.mean(axis=0)
    base = math.atan2(float(up[1]), float(up[0]))
    tilts = np.arange(-max_tilt_deg, max_tilt_deg + step_deg / 2, step_deg)
    angles = base + np.radians(tilts)
    across = np.stack([-np.sin(angles), np.cos(angles)], axis=1)  # normal of each candidate (row, col)
    offsets = points @ across.T  # (N, candidates), mm
    width = min(spacing)
    scores = np.empty(len(tilts))
    for k in range(len(tilts)):
        bins = np.floor(offsets[:, k] / width).astype(np.int64)
        counts = np.bincount(bins - bins.min())
        scores[k] = float(np.sum(counts.astype(np.float64) ** 2))
    scores = ndimage.gaussian_filter1d(scores, 0.5 / step_deg)
    angle = float(angles[int(np.argmax(scores))])
    return np.array([math.cos(angle), math.sin(angle)])
