"""Radiolucent lines: width (mm) of the dark band in bone along each component's interface, per zone.

For every interface point (bone pixel touching the component or its cement) an intensity profile is
sampled on the native-resolution image along the outward normal of the implant (bilinear, every
``line_step_mm``). A line is a dip below the bone's own level (median over ``line_reference_mm``) that
starts within ``line_search_mm`` of the interface and is deeper than ``line_min_contrast`` times the
image noise; its width is the length of the run below ``dip + line_level * (reference - dip)``
(full width at half depth with the default 0.5). Profiles leaving the bone or crossing metal are
discarded. Each point is assigned to a Knee Society zone from the side it lies on and the direction it
faces (see ``zone_of``); the zone's width is the ``line_zone_quantile`` of its profiles' widths.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from orthoseg.measure.config import MeasurementConfig
from orthoseg.measure.geometry import Spacing, normal_of, unit


@dataclass(frozen=True)
class InterfaceFrame:
    """Where a component sits: its top (tray top or condyle bottom) and the image's anatomical directions.

    Attributes:
        component: ``femur`` or ``tibia``.
        view: ``AP`` or ``LAT``.
        away: unit direction into the bone away from the joint (tibia: distal; femur: proximal).
        side: unit direction of the medial (AP) or anterior (lateral) side.
        origin: a point on the bone's axis at the joint (mm).
    """

    component: str
    view: str
    away: np.ndarray
    side: np.ndarray
    origin: np.ndarray


def image_noise(pixels: np.ndarray) -> float:
    """Robust noise level of an image: MAD of the difference of neighbouring pixels / sqrt(2)."""
    diff = np.diff(pixels.astype(np.float64), axis=1)
    mad = float(np.median(np.abs(diff - np.median(diff))))
    return max(1.4826 * mad / np.sqrt(2.0), 1e-6)


def profile_width(profile: np.ndarray, noise: float, config: MeasurementConfig) -> float:
    """Width (mm) of the lucent band of one profile starting at the interface (0 when there is none)."""
    step = config.line_step_mm
    r0, r1 = (int(round(v / step)) for v in config.line_reference_mm)
    reference = float(np.median(profile[r0:r1]))
    search_end = min(r0, len(profile))
    low = int(np.argmin(profile[:search_end]))
    dip = float(profile[low])
    if reference - dip < config.line_min_contrast * noise:
        return 0.0
    level = dip + config.line_level * (reference - dip)
    below = profile[:search_end] < level
    start = low
    while start > 0 and below[start - 1]:
        start -= 1
    end = low
    while end + 1 < search_end and below[end + 1]:
        end += 1
    if start * step > config.line_search_mm:
        return 0.0
    return float((end - start + 1) * step)


def zone_of(
    point: np.ndarray, normal: np.ndarray, depth: float, frame: InterfaceFrame, config: MeasurementConfig
) -> str | None:
    """Knee Society zone of an interface point (None when it belongs to none of the view's zones).

    ``depth`` is how far the point lies from the component's joint-side surface into the bone (mm).
    """
    facing_away = float(normal @ frame.away)
    facing_side = float(normal @ frame.side)
    on_side = float((point - frame.origin) @ frame.side) > 0
    shallow = depth <= config.tray_zone_depth_mm
    if frame.component == "tibia":
        if frame.view == "AP":
            if facing_away > 0.7:
                return ("tibia_1M" if on_side else "tibia_1L") if shallow else "tibia_3"
            if abs(facing_side) > 0.7 and not shallow:
                return "tibia_2M" if facing_side > 0 else "tibia_2L"
            return None
        if facing_away > 0.7:
            return ("tibia_1" if on_side else "tibia_2") if shallow else "tibia_3"
        if abs(facing_side) > 0.7 and not shallow:
            return "tibia_3"
        return None
    if frame.view == "AP":
        if facing_away > 0.7 and shallow:
            return "femur_1M" if on_side else "femur_1L"
        if not shallow and abs(facing_side) > 0.7:
            return "femur_2"
        return None
    if not shallow and abs(facing_side) > 0.7 and depth > 2 * config.tray_zone_depth_mm + 30:
        return "femur_4"
    if facing_away > 0.7:
        return "femur_2"
    if facing_side < -0.7:
        return "femur_1"
    if facing_side > 0.7:
        return "femur_3"
    return None


def zone_widths(
    pixels: np.ndarray,
    implant: np.ndarray,
    bone: np.ndarray,
    metal: np.ndarray,
    spacing: Spacing,
    frame: InterfaceFrame,
    config: MeasurementConfig,
    noise: float | None = None,
) -> dict[str, float]:
    """Radiolucent-line width (mm) per zone along one component's interface.

    Args:
        pixels: native-resolution presentation values (brighter = denser).
        implant: the component with its cement (the interface is this region's boundary in bone).
        bone: the host bone's mask.
        metal: every metal component (profiles crossing it are discarded).
        spacing: pixel spacing (mm).
        frame: the component's anatomical directions.
        config: ``line_*`` thresholds.
        noise: the film's noise level (``image_noise(pixels)``), when the caller has it already.
    """
    solid = ndimage.binary_fill_holes(implant)
    edge = ndimage.binary_dilation(solid) & ~solid & bone & ~metal
    rows, cols = np.nonzero(edge)
    if len(rows) == 0:
        return {}
    stride = max(1, int(round(config.line_profile_spacing_mm / min(spacing))))
    keep = (rows % stride == 0) | (cols % stride == 0)
    rows, cols = rows[keep][::stride], cols[keep][::stride]
    smooth = ndimage.gaussian_filter(solid.astype(np.float32), 1.5)
    gr = ndimage.sobel(smooth, axis=0)[rows, cols] / spacing[0]
    gc = ndimage.sobel(smooth, axis=1)[rows, cols] / spacing[1]
    norm = np.hypot(gr, gc)
    ok = norm > 0
    rows, cols, gr, gc, norm = rows[ok], cols[ok], gr[ok], gc[ok], norm[ok]
    normals = -np.stack([gr / norm, gc / norm], axis=1)  # out of the implant, into the bone (mm coords)
    steps = np.arange(0.0, config.line_profile_mm + 1e-9, config.line_step_mm)
    pr = rows[:, None] + normals[:, 0:1] * steps[None] / spacing[0]
    pc = cols[:, None] + normals[:, 1:2] * steps[None] / spacing[1]
    inside = (pr >= 0) & (pr <= pixels.shape[0] - 1) & (pc >= 0) & (pc <= pixels.shape[1] - 1)
    ri = np.clip(np.rint(pr).astype(np.int64), 0, pixels.shape[0] - 1)
    ci = np.clip(np.rint(pc).astype(np.int64), 0, pixels.shape[1] - 1)
    valid = np.all(inside & bone[ri, ci] & ~metal[ri, ci] & ~solid[ri, ci], axis=1)
    if not valid.any():
        return {}
    profiles = ndimage.map_coordinates(
        pixels.astype(np.float32), [pr[valid].ravel(), pc[valid].ravel()], order=1
    ).reshape(int(valid.sum()), len(steps))
    noise = image_noise(pixels) if noise is None else noise
    points = np.stack([rows[valid] * spacing[0], cols[valid] * spacing[1]], axis=1)
    normals = normals[valid]
    depth_all = (points - frame.origin) @ frame.away
    top = float(np.percentile(depth_all, 1.0))
    by_zone: dict[str, list[float]] = {}
    for point, normal, depth, profile in zip(points, normals, depth_all, profiles, strict=True):
        zone = zone_of(point, normal, float(depth - top), frame, config)
        if zone is not None:
            by_zone.setdefault(zone, []).append(profile_width(profile, noise, config))
    return {
        zone: round(float(np.quantile(widths, config.line_zone_quantile)), 2)
        for zone, widths in by_zone.items()
        if len(widths) >= config.line_min_profiles
    }


def frame_for(
    component: str, view: str, away: np.ndarray, side: np.ndarray, origin: np.ndarray
) -> InterfaceFrame:
    """An ``InterfaceFrame`` with unit directions; ``side`` is made perpendicular to ``away``."""
    away = unit(np.asarray(away, dtype=np.float64))
    across = normal_of(away)
    side = across if float(across @ side) >= 0 else -across
    return InterfaceFrame(component, view, away, side, np.asarray(origin, dtype=np.float64))
