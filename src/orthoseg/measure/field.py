"""The exposed field of a radiograph: where the collimator's shadow lies along the film's edges.

A bone that leaves the exposed field through a collimated border is cut there as it would be by the
film's edge, and its mask (ground truth or model) stops at the shadow's edge, not at the image's. The
shaft axis must treat both alike: a level cut by the field's edge has its midpoint between one cortex
and the shutter, not between the two cortices (``orthoseg.measure.axes``).

A shutter's shadow is unexposed, so white on a presentation image, and uniform: the shutter's level,
with noise and the odd burned-in label, and nothing of the patient. Its edge is straight but seldom
parallel to the film's: the collimator is turned by a few degrees, and some films have a corner cut off
at an angle. Each film edge is searched for a band bounded by a straight line: for a set of tilts (within
``max_angle_deg``), lines parallel to the candidate boundary are walked inward from the film edge while
they stay uniform at the edge's shadow level; the tilt that keeps the band uniform deepest is the
shutter's. Each corner is searched alike with lines at 25-65 degrees. An edge whose outermost line is
not uniform, or not bright, or whose band is a sliver of the edge (a component's stem touching it), or
not flat (bright soft tissue grading off), has no shadow.

``detect_field`` returns the shadow's straight edges and the exposed-field mask; ``field_margins_px``
keeps the older per-edge margins (the deepest reach of each edge's shadow) for callers that work with
bands.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypedDict

import numpy as np

if TYPE_CHECKING:
    from typing_extensions import Unpack

FieldMargins = tuple[int, int, int, int]
"""(top, bottom, left, right): image lines from each edge that lie outside the exposed field."""

NO_MARGINS: FieldMargins = (0, 0, 0, 0)

EDGES = ("top", "bottom", "left", "right")
CORNERS = ("top_left", "top_right", "bottom_left", "bottom_right")


@dataclass(frozen=True)
class ShadowEdge:
    """One straight boundary of the collimator's shadow: pixels ``p`` (x = column, y = row, pixel
    centres) with ``(p - origin) . normal < depth_px`` lie in the shadow.

    Attributes:
        origin: (x, y) on the film's border: the middle of an edge, or a corner.
        normal: unit (x, y) pointing into the field.
        depth_px: distance of the boundary from ``origin`` along ``normal``.
        angle_deg: the boundary's tilt from its film edge (edges), or its normal's angle from the
            row axis (corners).
        level: the shadow's presentation value.
    """

    origin: tuple[float, float]
    normal: tuple[float, float]
    depth_px: float
    angle_deg: float
    level: float

    def shadow(self, shape: tuple[int, int]) -> np.ndarray:
        """(H, W) True in this boundary's shadow."""
        y = np.arange(shape[0], dtype=np.float64)[:, None] - self.origin[1]
        x = np.arange(shape[1], dtype=np.float64)[None, :] - self.origin[0]
        return x * self.normal[0] + y * self.normal[1] < self.depth_px


@dataclass(frozen=True)
class FieldEstimate:
    """The collimator's shadow found on a film.

    Attributes:
        shape: (H, W) of the film.
        edges: per film edge (top, bottom, left, right) its shutter's boundary, or None.
        corners: per corner (top-left, top-right, bottom-left, bottom-right) an oblique cut, or None.
    """

    shape: tuple[int, int]
    edges: tuple[ShadowEdge | None, ShadowEdge | None, ShadowEdge | None, ShadowEdge | None]
    corners: tuple[ShadowEdge | None, ShadowEdge | None, ShadowEdge | None, ShadowEdge | None]

    @property
    def collimated(self) -> bool:
        return any(e is not None for e in (*self.edges, *self.corners))

    def shadow(self) -> np.ndarray:
        """(H, W) True in the collimator's shadow."""
        out = np.zeros(self.shape, dtype=bool)
        for edge in (*self.edges, *self.corners):
            if edge is not None:
                out |= edge.shadow(self.shape)
        return out

    def mask(self) -> np.ndarray:
        """(H, W) True in the exposed field."""
        return ~self.shadow()

    def margins(self) -> FieldMargins:
        """How deep each edge's shadow reaches at its deepest (0 where the edge is exposed); oblique
        corner cuts are not in them."""
        out = []
        for side, edge in enumerate(self.edges):
            if edge is None:
                out.append(0)
                continue
            extent = self.shape[1] if side < 2 else self.shape[0]
            tilt = math.radians(edge.angle_deg)
            reach = edge.depth_px / math.cos(tilt) + abs(math.tan(tilt)) * extent / 2.0
            out.append(max(0, min(int(math.ceil(reach - 1e-6)), self.shape[0 if side < 2 else 1])))
        return out[0], out[1], out[2], out[3]


NO_FIELD_EDGES = (None, None, None, None)


def _walk(
    close: np.ndarray,
    origin: tuple[float, float],
    normal: tuple[float, float],
    along: np.ndarray,
    offsets: np.ndarray,
    uniform_fraction: float,
    min_samples: int,
    chunk: int = 24,
) -> int | None:
    """Walk lines ``(p - origin) . normal = k + 0.5`` (k in ``offsets``, sampled at ``along`` on the line)
    over ``close`` (True at the shadow's level). Returns the first k whose line is not uniform, or None
    when the first line judged (with at least ``min_samples`` pixels in the image) is not uniform."""
    height, width = close.shape
    nx, ny = normal
    started = False
    for first in range(0, len(offsets), chunk):
        block = offsets[first : first + chunk]
        d = block.astype(np.float64)[:, None] + 0.5
        xs = np.rint(origin[0] + d * nx - along[None, :] * ny).astype(np.intp)
        ys = np.rint(origin[1] + d * ny + along[None, :] * nx).astype(np.intp)
        inside = (xs >= 0) & (xs < width) & (ys >= 0) & (ys < height)
        values = close[np.clip(ys, 0, height - 1), np.clip(xs, 0, width - 1)] & inside
        count = inside.sum(axis=1)
        judged = np.flatnonzero(count >= min_samples)
        if judged.size == 0:
            if started:
                return int(block[0])  # the lines have left the image
            continue
        uniform = values.sum(axis=1)[judged] >= uniform_fraction * count[judged]
        if not started and not uniform[0]:
            return None
        started = True
        breaks = judged[~uniform]
        if breaks.size:
            return int(block[breaks[0]])
    return int(offsets[-1]) + 1 if started else None


def _close_to(image: np.ndarray, level: float, tolerance: float, max_hole: int) -> np.ndarray:
    """True where ``image`` is within ``tolerance`` of ``level``, and in the small pockets that such
    pixels enclose (a label's print burned into the shadow is shadow)."""
    from scipy import ndimage

    close = np.abs(image - np.float32(level)) <= tolerance
    holes = ndimage.binary_fill_holes(close) & ~close
    if holes.any():
        labels, count = ndimage.label(holes)
        sizes = np.bincount(labels.ravel(), minlength=count + 1)
        small = sizes <= max_hole
        small[0] = False
        close |= small[labels]
    return close


def _rotate(vector: tuple[float, float], degrees: float) -> tuple[float, float]:
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return c * vector[0] - s * vector[1], s * vector[0] + c * vector[1]


def _best_tilt(
    close: np.ndarray,
    origin: tuple[float, float],
    normal0: tuple[float, float],
    angles: list[float],
    half_length: float,
    max_depth: int,
    uniform_fraction: float,
) -> tuple[float, int] | None:
    """Among ``angles`` (degrees from ``normal0``), the tilt whose uniform band reaches deepest, with that
    depth (ties: the smaller tilt)."""
    best: tuple[float, int] | None = None
    step = max(1.0, 2.0 * half_length / 256.0)
    along = np.arange(-half_length, half_length + step, step)
    min_samples = max(8, int(0.05 * along.size))
    for angle in sorted(angles, key=abs):
        slope = abs(math.tan(math.radians(angle)))
        start = -int(math.ceil(slope * half_length)) - 1
        offsets = np.arange(start, max_depth)
        walked = _walk(close, origin, _rotate(normal0, angle), along, offsets, uniform_fraction, min_samples)
        if walked is not None and (best is None or walked > best[1]):
            best = (angle, walked)
    return best


def detect_field(
    pixels: np.ndarray,
    tolerance_fraction: float = 0.04,
    uniform_fraction: float = 0.9,
    max_fraction: float = 0.45,
    bright_fraction: float = 0.8,
    max_angle_deg: float = 8.0,
    min_support_fraction: float = 0.2,
    corners: bool = True,
) -> FieldEstimate:
    """The collimator's shadow on ``pixels`` (H, W): its straight edges and the exposed field.

    Args:
        pixels: presentation values at native resolution (any range).
        tolerance_fraction: a pixel belongs to the shadow when it is within this share of the image's
            robust range (0.5th to 99.5th percentile) of the shadow's level.
        uniform_fraction: share of a line's pixels that must be at the level for the line to be shadow
            (a burned-in label or a noisy pixel leaves the rest).
        max_fraction: no band reaches further than this share of the image's height or width.
        bright_fraction: the shadow's level must lie at least this far up the image's robust range: the
            shutter's shadow is unexposed, so white on a presentation image; a uniform dark band is air
            or a black mask around the image, where nothing is predicted anyway.
        max_angle_deg: largest tilt of a shutter's edge from its film edge.
        min_support_fraction: a shadow must run along at least this share of its film edge (a bright
            component touching the edge is no shutter).
        corners: also look for oblique corner cuts.
    """
    image = np.asarray(pixels, dtype=np.float32)
    shape = (int(image.shape[0]), int(image.shape[1])) if image.ndim == 2 else (0, 0)
    nothing = FieldEstimate(shape, NO_FIELD_EDGES, NO_FIELD_EDGES)
    if image.ndim != 2 or min(image.shape) < 8:
        return nothing
    low, high = np.percentile(image[::4, ::4], [0.5, 99.5])
    if not np.isfinite(high - low) or high <= low:
        return nothing
    tolerance = tolerance_fraction * float(high - low)
    bright = float(low + bright_fraction * (high - low))
    rows, cols = shape
    centre_x, centre_y = (cols - 1) / 2.0, (rows - 1) / 2.0
    # (origin on the border, inward normal, edge length, depth limit, outermost line) per film edge.
    sides = (
        ((centre_x, -0.5), (0.0, 1.0), cols, rows, image[:2]),
        ((centre_x, rows - 0.5), (0.0, -1.0), cols, rows, image[-2:]),
        ((-0.5, centre_y), (1.0, 0.0), rows, cols, image[:, :2].T),
        ((cols - 0.5, centre_y), (-1.0, 0.0), rows, cols, image[:, -2:].T),
    )
    coarse = [float(a) for a in np.arange(-max_angle_deg, max_angle_deg + 0.5, 2.0)]
    max_hole = int(0.02 * rows * cols)  # a burned-in label, not the exposed field
    levels = [_edge_level(side[4], bright, min_support_fraction) for side in sides]
    closes: list[tuple[float, np.ndarray]] = []  # one mask per shadow level (the shutters share one)
    found: list[ShadowEdge | None] = []
    for (origin, normal0, length, across, _), level in zip(sides, levels, strict=True):
        if level is None:
            found.append(None)
            continue
        close = _close_mask(closes, image, level, tolerance, max_hole)
        half = length / 2.0
        max_depth = int(max_fraction * across)
        best = _best_tilt(close, origin, normal0, coarse, half, max_depth, uniform_fraction)
        for step in (1.0, 0.5, 0.25, 0.1):
            if best is None:
                break
            around = [best[0] + step * i for i in (-1, 1) if abs(best[0] + step * i) <= max_angle_deg]
            best = _best_tilt(close, origin, normal0, [best[0], *around], half, max_depth, uniform_fraction)
        if best is None:
            found.append(None)
            continue
        angle, depth = _refine(close, origin, normal0, best, half)
        edge = ShadowEdge(origin, _rotate(normal0, angle), depth, angle, level)
        found.append(edge if _is_shadow(edge, image, length, tolerance, min_support_fraction) else None)
    edges = (found[0], found[1], found[2], found[3])
    cuts: tuple[ShadowEdge | None, ...] = (None, None, None, None)
    if corners:
        cuts = _corner_cuts(image, edges, bright, tolerance, max_fraction, closes)
    return FieldEstimate(shape, edges, (cuts[0], cuts[1], cuts[2], cuts[3]))


def _refine(
    close: np.ndarray,
    origin: tuple[float, float],
    normal0: tuple[float, float],
    best: tuple[float, int],
    half_length: float,
    window: int = 3,
) -> tuple[float, float]:
    """The boundary to a fraction of a pixel and a degree: a line fitted (least squares) to where each
    sample's run of shadow ends, over the samples that end within ``window`` lines of the walked
    boundary; the walked one when too few do (a graded, fuzzy boundary)."""
    angle, depth = best
    normal = _rotate(normal0, angle)
    height, width = close.shape
    along = np.arange(-half_length, half_length + 1.0, max(1.0, 2.0 * half_length / 256.0))
    offsets = np.arange(depth - window - 1, depth + window + 1)
    d = offsets.astype(np.float64)[:, None] + 0.5
    xs = np.rint(origin[0] + d * normal[0] - along[None, :] * normal[1]).astype(np.intp)
    ys = np.rint(origin[1] + d * normal[1] + along[None, :] * normal[0]).astype(np.intp)
    inside = (xs >= 0) & (xs < width) & (ys >= 0) & (ys < height)
    values = close[np.clip(ys, 0, height - 1), np.clip(xs, 0, width - 1)]
    usable = inside.all(axis=0) & values[0]  # in the image, and shadow on the first line
    if usable.sum() < 16:
        return angle, float(depth)
    ends = np.where((~values).any(axis=0), (~values).argmax(axis=0), len(offsets))
    inlier = usable & (ends > 0) & (ends < len(offsets))
    if inlier.sum() < 0.6 * usable.sum():
        return angle, float(depth)
    slope, intercept = np.polyfit(along[inlier], offsets[ends[inlier]].astype(np.float64), 1)
    tilt = math.atan(float(slope))
    if abs(math.degrees(tilt)) > 1.0 or abs(float(intercept) - depth) > window + 1:
        return angle, float(depth)  # not a correction of the walked line: keep that
    return angle - math.degrees(tilt), float(intercept) * math.cos(tilt)


def _close_mask(
    closes: list[tuple[float, np.ndarray]], image: np.ndarray, level: float, tolerance: float, max_hole: int
) -> np.ndarray:
    """``_close_to`` for ``level``, reusing one made for a level within a quarter tolerance of it."""
    for known, mask in closes:
        if abs(known - level) <= tolerance / 4.0:
            return mask
    mask = _close_to(image, level, tolerance, max_hole)
    closes.append((level, mask))
    return mask


def _edge_level(outer: np.ndarray, bright: float, min_support_fraction: float) -> float | None:
    """The shadow's level on a film edge's outermost lines (2, length): the median of their bright
    pixels, when at least ``min_support_fraction`` of the edge is bright at all."""
    values = np.minimum(outer[0], outer[1])  # a pixel of the shadow is bright on both lines
    lit = values >= bright
    if lit.mean() < min_support_fraction:
        return None
    return float(np.median(outer[0][lit]))


def _is_shadow(
    edge: ShadowEdge, image: np.ndarray, length: int, tolerance: float, min_support_fraction: float
) -> bool:
    """A band deep enough, long enough along its edge, and flat (pixel spread well inside the
    tolerance: bright soft tissue grades off, a shutter's shadow does not)."""
    tilt = math.radians(edge.angle_deg)
    half = length / 2.0
    # Depth of the boundary from the film edge along the edge: depth / cos(tilt) + s tan(tilt).
    positions = np.linspace(-half, half, 201)
    reach = edge.depth_px / math.cos(tilt) + positions * math.tan(tilt)
    if reach.max() < 2.0 or (reach >= 1.0).mean() < min_support_fraction:
        return False
    return _flat(edge, image, tolerance)


def _flat(edge: ShadowEdge, image: np.ndarray, tolerance: float) -> bool:
    """The shadow of ``edge`` is flat: its pixels' spread well inside the tolerance (soft tissue's and
    bone's texture is not). A shadow may still brighten away from the field (scatter and penumbra fall
    off), as a real CR's does."""
    shadow = edge.shadow(image.shape)
    sample = image[shadow][:: max(1, int(shadow.sum()) // 20000)]
    if sample.size < 16:
        return False
    return float(np.median(np.abs(sample - np.median(sample)))) <= tolerance / 3.0


def _corner_cuts(
    image: np.ndarray,
    edges: tuple[ShadowEdge | None, ...],
    bright: float,
    tolerance: float,
    max_fraction: float,
    closes: list[tuple[float, np.ndarray]],
) -> tuple[ShadowEdge | None, ShadowEdge | None, ShadowEdge | None, ShadowEdge | None]:
    """Oblique cuts across the corners: lines at 25-65 degrees walked in from each corner while they stay
    uniform (stricter than for edges: the lines are short); kept when the cut adds shadow of its own
    beyond the edges' bands."""
    rows, cols = image.shape
    edge_shadow = np.zeros(image.shape, dtype=bool)
    for edge in edges:
        if edge is not None:
            edge_shadow |= edge.shadow(image.shape)
    patch = max(3, min(rows, cols) // 100)
    max_depth = int(max_fraction * min(rows, cols))
    half = max_depth / math.sin(math.radians(25.0))
    out: list[ShadowEdge | None] = []
    for index in range(4):
        sy = 1.0 if index < 2 else -1.0  # inward along rows: down from a top corner
        sx = 1.0 if index in (0, 2) else -1.0
        origin = (-0.5 if sx > 0 else cols - 0.5, -0.5 if sy > 0 else rows - 0.5)
        corner = image[:patch] if sy > 0 else image[-patch:]
        corner = corner[:, :patch] if sx > 0 else corner[:, -patch:]
        if np.median(corner) < bright:
            out.append(None)
            continue
        level = float(np.median(corner))
        close = _close_mask(closes, image, level, tolerance, int(0.02 * rows * cols))
        best: tuple[float, int] | None = None
        along = np.arange(-half, half + 2.0, 2.0)
        for angles in ([25.0 + 5.0 * i for i in range(9)], [-2.0, -1.0, 1.0, 2.0]):
            if best is not None:
                angles = [best[0] + a for a in angles]
            for phi in angles:
                normal = (sx * math.cos(math.radians(phi)), sy * math.sin(math.radians(phi)))
                walked = _walk(close, origin, normal, along, np.arange(0, max_depth), 0.97, 4)
                if walked is not None and (best is None or walked > best[1]):
                    best = (phi, walked)
        if best is None or best[1] < max(8.0, 0.06 * min(rows, cols)):  # a cut, not a rounded corner
            out.append(None)
            continue
        phi = best[0]
        cut = ShadowEdge(
            origin,
            (sx * math.cos(math.radians(phi)), sy * math.sin(math.radians(phi))),
            float(best[1]),
            phi,
            level,
        )
        region = cut.shadow(image.shape)
        own = region & ~edge_shadow
        if own.sum() < 0.25 * region.sum() or not _flat(cut, image, tolerance):
            out.append(None)
            continue
        out.append(cut)
    return out[0], out[1], out[2], out[3]


class FieldOptions(TypedDict, total=False):
    """``detect_field``'s keyword arguments."""

    tolerance_fraction: float
    uniform_fraction: float
    max_fraction: float
    bright_fraction: float
    max_angle_deg: float
    min_support_fraction: float
    corners: bool


def field_mask(pixels: np.ndarray, **kwargs: Unpack[FieldOptions]) -> np.ndarray:
    """(H, W) True in the exposed field of ``pixels`` (``detect_field``'s arguments as keywords)."""
    return detect_field(pixels, **kwargs).mask()


def field_margins_px(
    pixels: np.ndarray,
    tolerance_fraction: float = 0.04,
    uniform_fraction: float = 0.9,
    max_fraction: float = 0.45,
    bright_fraction: float = 0.8,
) -> FieldMargins:
    """Lines outside the exposed field along each edge of ``pixels`` (H, W): how deep each shutter's
    shadow reaches at its deepest (the whole band when the shutter is square to the film; a tilted
    shutter's band is a wedge, and the margin is its wide end). See ``detect_field``.

    Returns:
        (top, bottom, left, right) depths in pixels; 0 where the edge is exposed.
    """
    return detect_field(
        pixels,
        tolerance_fraction=tolerance_fraction,
        uniform_fraction=uniform_fraction,
        max_fraction=max_fraction,
        bright_fraction=bright_fraction,
        corners=False,
    ).margins()


def near_field_edge(
    rows: np.ndarray,
    cols: np.ndarray,
    shape: tuple[int, int],
    margins: FieldMargins | np.ndarray,
    reach: int,
) -> np.ndarray:
    """True for pixel coordinates within ``reach`` pixels of the image edge or of the field's edge.

    ``margins`` is either the per-edge margins (``field_margins_px``) or the exposed-field mask (H, W)
    of ``detect_field(...).mask()``, which follows tilted shutters and corner cuts exactly.
    """
    height, width = shape
    if isinstance(margins, np.ndarray):
        from scipy import ndimage

        # Distance to the nearest shadow pixel or to the line just outside the image.
        distance = ndimage.distance_transform_edt(np.pad(margins.astype(bool), 1))
        return distance[rows + 1, cols + 1] <= reach
    top, bottom, left, right = margins
    return (
        (rows < top + reach)
        | (rows >= height - bottom - reach)
        | (cols < left + reach)
        | (cols >= width - right - reach)
    )
