"""Anatomical shaft axes of femur and tibia from their masks (midpoints between the cortices, line fit).

The axis of a long bone on a radiograph is the line through the midpoints of its diaphysis: at set
distances from the joint the shaft is cut perpendicular to the current axis estimate, the midpoint
between its two outer cortices is taken, and a straight line is fitted through the midpoints. The cut
direction is refined with the fitted axis until it settles (``MAX_REFINEMENTS``, ``SETTLED_DEG``): the
rough start, the joint's bisector, is 20 degrees or more off either bone of a flexed knee on a lateral
film. Levels that reach the film's edge or the collimator's shadow (``orthoseg.measure.field``) are cut
there and dropped, as are levels narrower than a share of the median width (the bone's end); too little
shaft left refuses the axis. Metaphyseal levels (wider than the shaft) whose midpoints drift off the
diaphysis' line are left out when enough diaphysis shows (``_diaphysis``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from orthoseg.measure.config import MeasurementConfig
from orthoseg.measure.field import NO_MARGINS, FieldMargins, near_field_edge
from orthoseg.measure.geometry import Spacing, normal_of, points_mm, unit

# Refinement rounds of the cut direction: at most this many, and done once a round turns the axis by
# less than ``SETTLED_DEG`` (at least three rounds always run).
MAX_REFINEMENTS = 12
SETTLED_DEG = 0.02
# Shaft levels more than this (mm) wider than the narrowest level are metaphysis (``_diaphysis``); the
# narrowest is this quantile of the level widths.
FLARE_MM = 1.0
FLARE_QUANTILE = 0.05
# Metaphyseal levels whose midpoints lie further than this (mm, on average) off the line through the
# diaphysis' levels are left out of the fit.
FLARE_DRIFT_MM = 0.15
# The metaphysis is left out only when this much (mm) of narrow shaft remains: a shorter stretch gives a
# noisier direction than the drift it removes.
DIAPHYSIS_MIN_MM = 40.0


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
        configured_start_mm: ``axis_start_mm`` of the configuration the fit ran with.
        flaring: the film shows less than ``axis_min_length_mm`` of shaft whose width is within
            ``FLARE_MM`` of its narrowest level: the whole fit lies in the metaphysis, whose walls are
            not symmetric about the axis on every film (the tibia's posterior wall flares more than
            its anterior one on a lateral film and tilts such an axis by 1-3 degrees; the femur's
            does not), so the caller may flag what is measured against it.
    """

    direction: np.ndarray
    point: np.ndarray
    length_mm: float
    residual_mm: float
    levels: int
    start_mm: float
    configured_start_mm: float = 0.0
    flaring: bool = False

    @property
    def direction_uncertainty_deg(self) -> float:
        """How far (degrees) the direction could be off: the standard error of the fitted line's slope,
        from the midpoints' scatter (``residual_mm``) over the levels' spread along the shaft.

        A few centimetres of metaphysis whose midpoints wander (a flexed femur cut by the film's top
        edge) give 1-3 degrees; a straight diaphysis a few hundredths.
        """
        if self.levels < 3 or self.length_mm <= 0:
            return float("inf")
        n = float(self.levels)
        spread = self.length_mm / (n - 1.0) * math.sqrt((n * n - 1.0) / 12.0)
        return math.degrees(math.atan(self.residual_mm / (math.sqrt(n) * spread)))

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


def _first_level(
    points: np.ndarray,
    on_border: np.ndarray,
    origin: np.ndarray,
    direction: np.ndarray,
    config: MeasurementConfig,
) -> float | None:
    """Distance from the joint of the first shaft level along ``direction``, None when too little shaft.

    Levels start at ``axis_start_mm``, or closer to the joint (never closer than ``axis_min_start_mm``)
    when the film shows too little shaft beyond it for ``axis_min_length_mm`` of fit.
    """
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
    return None if start < config.axis_min_start_mm else start


def _diaphysis(
    t: np.ndarray, s: np.ndarray, width: np.ndarray, config: MeasurementConfig
) -> tuple[np.ndarray, np.ndarray, bool]:
    """The levels to fit, and whether the film shows too little straight-walled shaft to tell.

    Levels wider than the narrowest (its ``FLARE_QUANTILE``, robust to one bad level) by more than
    ``FLARE_MM`` are metaphysis. Where its two walls flare alike (medial and lateral on AP) its
    midpoints stay on the diaphysis' line and help the fit; where one flares more (the tibia's posterior
    wall on a lateral film) they drift off it and tilt the axis. So with at least ``axis_min_length_mm``
    of narrow shaft, the metaphyseal levels are kept only when their midpoints lie within
    ``FLARE_DRIFT_MM`` (on average) of the line through the narrow ones. With less, all levels are kept
    and the fit is marked ``flaring``.
    """
    narrow = width <= float(np.quantile(width, FLARE_QUANTILE)) + FLARE_MM
    if narrow.all():
        return t, s, False
    span = float(t[narrow].max() - t[narrow].min()) if narrow.sum() >= 3 else 0.0
    if span < config.axis_min_length_mm:
        return t, s, True
    if span < DIAPHYSIS_MIN_MM:
        return t, s, False
    slope, intercept = np.polyfit(t[narrow], s[narrow], 1)
    drift = float(np.mean(s[~narrow] - (intercept + slope * t[~narrow])))
    if abs(drift) > FLARE_DRIFT_MM:
        return t[narrow], s[narrow], False
    return t, s, False


def fit_shaft_axis(
    mask: np.ndarray,
    spacing: Spacing,
    joint_point: np.ndarray,
    away_from_joint: np.ndarray,
    config: MeasurementConfig | None = None,
    field: FieldMargins | np.ndarray = NO_MARGINS,
) -> ShaftAxis | None:
    """Fit the anatomical axis of one long bone.

    Args:
        mask: (H, W) bone mask.
        spacing: (row, column) pixel spacing in mm.
        joint_point: a point at the joint line (mm); levels are measured from here.
        away_from_joint: rough direction along the bone away from the joint.
        config: thresholds (``axis_*``).
        field: the collimator's shadow along each edge, or the exposed-field mask of
            ``orthoseg.measure.field.detect_field`` (which follows a turned shutter); a level reaching
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
    result: ShaftAxis | None = None
    for round_ in range(MAX_REFINEMENTS):
        # The visible shaft and the first level follow the current direction: a rough start (the
        # joint's bisector of a flexed knee is 20 degrees or more off either bone) cuts the shaft
        # obliquely, and oblique cuts through a tapering bone shift the midpoints, so each round only
        # removes part of the error. Refine until the direction settles.
        start = _first_level(points, on_border, origin, direction, config)
        if start is None:
            return None
        t, s, width = _midpoints(points, origin, direction, start, config, on_border)
        if len(t) < 3:
            return None
        solid = width >= config.axis_width_fraction * float(np.median(width))
        # Drop the last level (the cut edge of the film or the bone's end is never a full cortex pair).
        if solid.sum() > 2:
            last = np.nonzero(solid)[0][-1]
            solid[last] = False
        t, s, width = t[solid], s[solid], width[solid]
        if len(t) < 3 or float(t.max() - t.min()) < config.axis_min_length_mm:
            return None
        t, s, flaring = _diaphysis(t, s, width, config)
        slope, intercept = np.polyfit(t, s, 1)
        residual = float(np.sqrt(np.mean((s - (intercept + slope * t)) ** 2)))
        normal = normal_of(direction)
        new_direction = unit(direction + slope * normal)
        point = origin + intercept * normal
        result = ShaftAxis(
            new_direction,
            point,
            float(t.max() - t.min()),
            residual,
            len(t),
            start,
            config.axis_start_mm,
            flaring,
        )
        direction = new_direction
        if round_ >= 2 and abs(math.degrees(math.atan(slope))) < SETTLED_DEG:
            break
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
