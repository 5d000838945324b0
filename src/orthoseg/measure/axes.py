"""Anatomical shaft axes of femur and tibia from their masks (midpoints between the cortices, line fit).

The axis of a long bone on a radiograph is the line through the midpoints of its diaphysis: at set
distances from the joint the shaft is cut perpendicular to the current axis estimate, the midpoint
between its two outer cortices is taken, and a straight line is fitted through the midpoints. The cut
direction is refined twice with the fitted axis. Levels that reach the film's edge or the collimator's
shadow (``orthoseg.measure.field``) are cut there and dropped, as are levels narrower than a share of the
median width (the bone's end); too little shaft left refuses the axis.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from orthoseg.measure.config import MeasurementConfig
from orthoseg.measure.field import NO_MARGINS, FieldMargins, near_field_edge
from orthoseg.measure.geometry import Spacing, normal_of, points_mm, unit


@dataclass(frozen=True)
class ShaftAxis:
    """A fitted shaft axis.

    Attributes:
        direction: unit (row, column) direction pointing away from the joint (proximal for the femur,
            distal for the tibia), in mm coordinates.
        point: a point on the axis (mm).
        length_mm: length of shaft the fit used.
        residual_mm: RMS distance of the midpoints from the line.
        levels: number of levels used.
        start_mm: distance from the joint of the first level (below ``axis_start_mm`` when the film shows
            too little shaft: the fit then reaches into the metaphysis and is flagged ``short``).
    """

    direction: np.ndarray
    point: np.ndarray
    length_mm: float
    residual_mm: float
    levels: int
    start_mm: float
    configured_start_mm: float = 0.0

    @property
    def short(self) -> bool:
        """True when the fit had to start closer to the joint than configured."""
        return bool(self.start_mm < self.configured_start_mm)


def _midpoints(
    points: np.ndarray,
    origin: np.ndarray,
    direction: np.ndarray,
    start: float,
    config: MeasurementConfig,
    on_border: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Midpoint (t, s) and width of each shaft level; t is measured from ``origin`` along ``direction``.

    Levels holding a point of ``on_border`` (the bone cut by the film's edge) are dropped: their
    midpoint lies between a cortex and the edge, not between the two cortices.
    """
    normal = normal_of(direction)
    rel = points - origin
    t = rel @ direction
    s = rel @ normal
    keep = t >= start
    t, s = t[keep], s[keep]
    cut = on_border[keep] if on_border is not None else np.zeros(len(t), dtype=bool)
    if len(t) == 0:
        empty = np.zeros(0)
        return empty, empty, empty
    bins = np.floor((t - start) / config.axis_step_mm).astype(np.int64)
    order = np.argsort(bins, kind="stable")
    bins, s, t, cut = bins[order], s[order], t[order], cut[order]
    uniq, first = np.unique(bins, return_index=True)
    low = np.minimum.reduceat(s, first)
    high = np.maximum.reduceat(s, first)
    count = np.diff(np.append(first, len(s)))
    centre_t = start + (uniq + 0.5) * config.axis_step_mm
    width = high - low
    # A level with a hole (two runs) would have more extent than pixels: keep only solid levels.
    keep_level = (count > 0) & ~np.maximum.reduceat(cut, first)
    return centre_t[keep_level], ((low + high) / 2)[keep_level], width[keep_level]


def fit_shaft_axis(
    mask: np.ndarray,
    spacing: Spacing,
    joint_point: np.ndarray,
    away_from_joint: np.ndarray,
    config: MeasurementConfig | None = None,
    field: FieldMargins = NO_MARGINS,
) -> ShaftAxis | None:
    """Fit the anatomical axis of one long bone.

    Args:
        mask: (H, W) bone mask.
        spacing: (row, column) pixel spacing in mm.
        joint_point: a point at the joint line (mm); levels are measured from here.
        away_from_joint: rough direction along the bone away from the joint.
        config: thresholds (``axis_*``).
        field: the collimator's shadow along each edge (``orthoseg.measure.field``); a level reaching
            within ``axis_field_edge_mm`` of it, or of the image's edge, is cut and not used.

    Returns:
        The axis, or None when less than ``axis_min_length_mm`` of shaft is visible.
    """
    config = config or MeasurementConfig()
    points = points_mm(mask, spacing)
    if len(points) < 16:
        return None
    rows, cols = np.nonzero(mask)
    reach = max(1, int(round(config.axis_field_edge_mm / min(spacing))))
    on_border = near_field_edge(rows, cols, mask.shape, field, reach)
    direction = unit(np.asarray(away_from_joint, dtype=np.float64))
    origin = np.asarray(joint_point, dtype=np.float64)
    along = (points - origin) @ direction
    visible = float(np.percentile(along, 99.5))
    needed = config.axis_min_length_mm + 2 * config.axis_step_mm
    cut = along[on_border & (along > config.axis_min_start_mm)]
    if len(cut):
        # Levels from where the field's edge first touches the bone on are cut: the shaft ends there,
        # and a refined (tilted) cut direction may lose a level or two more to an oblique edge.
        visible = min(visible, float(np.percentile(cut, 0.5)))
        needed += 2 * config.axis_step_mm
    start = min(config.axis_start_mm, visible - needed)
    if start < config.axis_min_start_mm:
        return None
    result: ShaftAxis | None = None
    for _ in range(3):
        t, s, width = _midpoints(points, origin, direction, start, config, on_border)
        if len(t) < 3:
            return None
        solid = width >= config.axis_width_fraction * float(np.median(width))
        # Drop the last level (the cut edge of the film or the bone's end is never a full cortex pair).
        if solid.sum() > 2:
            last = np.nonzero(solid)[0][-1]
            solid[last] = False
        t, s = t[solid], s[solid]
        if len(t) < 3 or float(t.max() - t.min()) < config.axis_min_length_mm:
            return None
        slope, intercept = np.polyfit(t, s, 1)
        residual = float(np.sqrt(np.mean((s - (intercept + slope * t)) ** 2)))
        normal = normal_of(direction)
        new_direction = unit(direction + slope * normal)
        point = origin + intercept * normal
        result = ShaftAxis(
            new_direction, point, float(t.max() - t.min()), residual, len(t), start, config.axis_start_mm
        )
        direction = new_direction
    return result


def joint_centre(femur: np.ndarray, tibia: np.ndarray, spacing: Spacing) -> tuple[np.ndarray, np.ndarray]:
    """A point at the joint line and the rough proximal direction (tibia centroid toward femur centroid).

    The point is halfway between the femur's most distal and the tibia's most proximal points along the
    rough direction, at the middle of the two centroids across it.
    """
    fp = points_mm(femur, spacing)
    tp = points_mm(tibia, spacing)
    fc, tc = fp.mean(axis=0), tp.mean(axis=0)
    up = unit(fc - tc)
    if not np.any(up):
        up = np.array([-1.0, 0.0])
    low_femur = float(np.percentile(fp @ up, 0.5))
    high_tibia = float(np.percentile(tp @ up, 99.5))
    level = (low_femur + high_tibia) / 2
    mid = (fc + tc) / 2
    point = mid + (level - float(mid @ up)) * up
    return point, up
