"""The exposed field of a radiograph: how far the collimator's shadow reaches in from each film edge.

A bone that leaves the exposed field through a collimated border is cut there as it would be by the
film's edge, and its mask (ground truth or model) stops at the shadow's edge, not at the image's. The
shaft axis must treat both alike: a level cut by the field's edge has its midpoint between one cortex
and the shutter, not between the two cortices (``orthoseg.measure.axes``).

Collimators are aligned with the detector on knee films, so the shadow is a band along each edge
whose lines (rows along the top and bottom, columns along the sides) are uniform: the shutter's level,
with noise and the odd burned-in label, and nothing of the patient. The band is walked inward from the
edge while its lines stay uniform at the edge line's level. An edge whose outermost line is not uniform,
or not bright (a shutter's shadow is unexposed, white on a presentation image), has no band.
"""

from __future__ import annotations

import numpy as np

FieldMargins = tuple[int, int, int, int]
"""(top, bottom, left, right): image lines from each edge that lie outside the exposed field."""

NO_MARGINS: FieldMargins = (0, 0, 0, 0)


def _band_depth(lines: np.ndarray, tolerance: float, uniform_fraction: float, min_level: float) -> int:
    """How many leading lines of ``lines`` (line, values) stay within ``tolerance`` of the first's level
    (none when that level is below ``min_level``: a shutter's shadow is bright)."""
    level = float(np.median(lines[0]))
    if level < min_level:
        return 0
    close = np.abs(lines - level) <= tolerance
    uniform = close.mean(axis=1) >= uniform_fraction
    if not uniform[0]:
        return 0
    breaks = np.nonzero(~uniform)[0]
    return int(breaks[0]) if len(breaks) else len(lines)


def field_margins_px(
    pixels: np.ndarray,
    tolerance_fraction: float = 0.04,
    uniform_fraction: float = 0.9,
    max_fraction: float = 0.45,
    bright_fraction: float = 0.8,
) -> FieldMargins:
    """Lines outside the exposed field along each edge of ``pixels`` (H, W).

    Args:
        pixels: presentation values at native resolution (any range).
        tolerance_fraction: a pixel belongs to the shadow when it is within this share of the image's
            robust range (0.5th to 99.5th percentile) of the edge line's level.
        uniform_fraction: share of a line's pixels that must be at the level for the line to be shadow
            (a burned-in label or a noisy pixel leaves the rest).
        max_fraction: no band covers more than this share of the image's height or width.
        bright_fraction: a band's level must lie at least this far up the image's robust range: the
            shutter's shadow is unexposed, so white on a presentation image; a uniform dark band is air
            or a black mask around the image, where nothing is predicted anyway.

    Returns:
        (top, bottom, left, right) depths in pixels; 0 where the edge is exposed.
    """
    image = np.asarray(pixels, dtype=np.float32)
    if image.ndim != 2 or min(image.shape) < 8:
        return NO_MARGINS
    # Every 4th pixel along a line is plenty to judge it, and keeps this cheap on 3000-pixel films.
    low, high = np.percentile(image[::4, ::4], [0.5, 99.5])
    if not np.isfinite(high - low) or high <= low:
        return NO_MARGINS
    tolerance = tolerance_fraction * float(high - low)
    rows, cols = image.shape
    max_rows, max_cols = int(max_fraction * rows), int(max_fraction * cols)
    bright = float(low + bright_fraction * (high - low))
    top = _band_depth(image[:max_rows, ::4], tolerance, uniform_fraction, bright)
    bottom = _band_depth(image[::-1][:max_rows, ::4], tolerance, uniform_fraction, bright)
    left = _band_depth(image.T[:max_cols, ::4], tolerance, uniform_fraction, bright)
    right = _band_depth(image.T[::-1][:max_cols, ::4], tolerance, uniform_fraction, bright)
    return top, bottom, left, right


def near_field_edge(
    rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int], margins: FieldMargins, reach: int
) -> np.ndarray:
    """True for pixel coordinates within ``reach`` pixels of the image edge or of the field's edge."""
    top, bottom, left, right = margins
    height, width = shape
    return (
        (rows < top + reach)
        | (rows >= height - bottom - reach)
        | (cols < left + reach)
        | (cols >= width - right - reach)
    )
