"""Plane geometry in millimetres on the image: points of a mask, frames along an axis, signed angles.

Coordinates are (row_mm, column_mm): pixel index times the pixel spacing, so anisotropic pixels are
handled once here. Angles are in degrees.
"""

from __future__ import annotations

import math

import numpy as np

Spacing = tuple[float, float]


def points_mm(mask: np.ndarray, spacing: Spacing) -> np.ndarray:
    """(N, 2) pixel centres of ``mask`` as (row_mm, column_mm)."""
    rows, cols = np.nonzero(mask)
    return np.stack([rows * spacing[0], cols * spacing[1]], axis=1).astype(np.float64)


def unit(vector: np.ndarray) -> np.ndarray:
    """``vector`` scaled to length 1 (a zero vector is returned unchanged)."""
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


def normal_of(direction: np.ndarray) -> np.ndarray:
    """``direction`` turned by +90 degrees in (row, column) coordinates."""
    return np.array([-direction[1], direction[0]], dtype=np.float64)


def cross(a: np.ndarray, b: np.ndarray) -> float:
    """z-component of the 2D cross product a x b."""
    return float(a[0] * b[1] - a[1] * b[0])


def angle_between_deg(a: np.ndarray, b: np.ndarray) -> float:
    """Unsigned angle between two directions, 0-180 degrees (0 = same orientation)."""
    cosine = float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))
    return math.degrees(math.acos(max(-1.0, min(1.0, cosine))))


def signed_angle_deg(a: np.ndarray, b: np.ndarray, toward: np.ndarray, reference: np.ndarray) -> float:
    """Angle from ``a`` to ``b`` (degrees), positive when the turn goes like ``reference`` toward ``toward``.

    ``reference`` is a direction close to ``a`` and ``b`` (e.g. the limb's proximal direction) and
    ``toward`` a side of the image (e.g. lateral): turning ``reference`` toward ``toward`` is positive.
    """
    sense = 1.0 if cross(reference, toward) >= 0 else -1.0
    return sense * math.degrees(math.atan2(cross(a, b), float(np.dot(a, b))))


def angle_from_vertical_deg(direction: np.ndarray) -> float:
    """Angle of a (row, column) direction against the image vertical, positive toward increasing columns."""
    row, col = float(direction[0]), float(direction[1])
    if row < 0:
        row, col = -row, -col
    return math.degrees(math.atan2(col, row))


def oriented(direction: np.ndarray, toward: np.ndarray) -> np.ndarray:
    """``direction`` or its opposite, whichever points along ``toward``."""
    return direction if float(np.dot(direction, toward)) >= 0 else -direction


def theil_sen(x: np.ndarray, y: np.ndarray, trim_mm: float = 1.0, rounds: int = 3) -> tuple[float, float]:
    """Robust line y = a + b x: Theil-Sen start, then least squares on points within ``trim_mm``.

    Returns:
        (intercept a, slope b).
    """
    from scipy.stats import theilslopes

    if len(x) > 400:
        pick = np.linspace(0, len(x) - 1, 400).astype(np.int64)
        slope, intercept, _, _ = theilslopes(y[pick], x[pick])
    else:
        slope, intercept, _, _ = theilslopes(y, x)
    for _ in range(rounds):
        keep = np.abs(y - (intercept + slope * x)) <= trim_mm
        if keep.sum() < 3:
            break
        slope, intercept = np.polyfit(x[keep], y[keep], 1)
    return float(intercept), float(slope)
