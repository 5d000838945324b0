"""Radiolucent lines: width (mm) of the dark band in bone along each component's interface, per zone.

Interface points (bone pixels touching the component or its cement, about one per
``line_profile_spacing_mm`` of interface) each get an intensity profile sampled on the native-resolution
image along the outward normal of the implant (bilinear, every ``line_step_mm``); profiles leaving the
bone or crossing metal are discarded. Each point is assigned to a Knee Society zone from the side it
lies on and the direction it faces (see ``zone_of``). Within a zone, neighbouring profiles are averaged
in windows of ``line_average_profiles``; a window's line runs from the steepest fall near the interface
to the steepest rise after it, and counts when its floor lies ``line_min_contrast`` noise levels below
the bone further in and its far edge is sharp (``line_max_edge_mm``; see ``profile_width``). The zone's
width is the widest line sustained along ``line_run_mm`` of contiguous interface (``sustained_width``):
a zone has a line when one runs along a real length of it, even if not along all of it, and reports that
line's width.

A line is only seen at its width where the beam runs along the interface: on a film whose beam is tilted
against the tray, a line under it is smeared over several millimetres and reads narrower and fainter.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from orthoseg.measure.config import MeasurementConfig
from orthoseg.measure.drawing import MeasurementDrawing, ZoneMark
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


def texture_noise(pixels: np.ndarray, bone: np.ndarray, spacing: Spacing, scale_mm: float) -> float:
    """How much the bone's own grey level varies over ``scale_mm`` (robust SD, presentation units).

    Trabecular texture, not detector noise, is what a lucent line must stand out from: the MAD of the
    differences between bone pixels ``scale_mm`` apart (along rows and columns), over sqrt(2).
    """
    values = pixels.astype(np.float64)
    diffs = []
    for axis in (0, 1):
        k = max(1, int(round(scale_mm / spacing[axis])))
        a = [slice(None), slice(None)]
        b = [slice(None), slice(None)]
        a[axis], b[axis] = slice(k, None), slice(None, -k)
        ok = bone[tuple(a)] & bone[tuple(b)]
        diffs.append((values[tuple(a)] - values[tuple(b)])[ok])
    diff = np.concatenate(diffs)
    if len(diff) < 16:
        return image_noise(pixels)
    mad = float(np.median(np.abs(diff - np.median(diff))))
    return max(1.4826 * mad / np.sqrt(2.0), 1e-6)


def profile_width(profile: np.ndarray, noise: float, config: MeasurementConfig) -> float:
    """Width (mm) of the lucent band of one profile starting at the interface (0 when there is none).

    The profile starts ``line_lead_mm`` inside the implant (so a line that begins right at the interface
    still shows its falling edge) and runs ``line_profile_mm`` into the bone, every ``line_step_mm``.

    The band's edges are where the (lightly smoothed) profile falls and rises fastest: its near edge
    within ``line_search_mm`` of the interface, its far edge before the reference window. Blur moves
    neither edge of a band wider than the blur, so the width does not depend on the band's contrast or on
    the bright cement and sclerotic rim beside it. The band counts only when its floor lies at least
    ``line_min_contrast`` times ``noise`` (the bone's texture level, see ``texture_noise``) below both
    the bone reference and the bone just beyond its far edge (within ``line_rim_mm``, where the
    sclerotic rim that borders a real line sits): a band that only drifts back up is texture. The rim
    itself must stand ``line_min_rim_contrast`` noise levels above the bone further in (0 accepts lines
    without a sclerotic margin). Where the bone darkens away from the implant (beside a stem in the
    middle of the tibia on AP the projected bone thins toward the cortex), "the bone" at the band and at
    the rim is the straight-line trend of the bone beyond the rim carried back to them, when that is
    brighter than the reference. The far edge must be an edge: its rise from the floor to the rim, over its
    steepest slope (a length, mm), at most ``line_max_edge_mm`` (bone that brightens over millimetres, as
    from the medullary canal to the cortex beside a stem, is no line). And the
    band must be one dark run: at least ``line_fill_fraction`` of it below half way between its floor and
    the lower of its two borders (the implant or cement side, and the rim side).
    """
    step = config.line_step_mm
    lead = int(round(config.line_lead_mm / step))
    r0, r1 = (lead + int(round(v / step)) for v in config.line_reference_mm)
    reference = float(np.median(profile[r0:r1]))
    smooth = ndimage.gaussian_filter1d(profile.astype(np.float64), config.line_smooth_mm / step)
    grad = np.gradient(smooth)
    search_end = min(lead + int(round(config.line_search_mm / step)) + 1, r0 - 1)
    near = int(np.argmin(grad[:search_end]))
    if grad[near] >= 0 or near + 2 >= r0:
        return 0.0
    far = near + 1 + int(np.argmax(grad[near + 1 : r0]))
    if grad[far] <= 0:
        return 0.0
    floor = float(np.min(smooth[near : far + 1]))
    rim = int(round(config.line_rim_mm / step))
    beyond = float(np.max(smooth[far : far + rim + 1]))
    # Bone that darkens away from the implant (a stem in the middle of the tibia on AP: the projected
    # bone thins toward the cortex) reads darker at the reference than beside the line; its level at
    # the band and at the rim is the trend of the bone beyond the rim, carried back to them.
    bone_level = _bone_trend(smooth, far + 2 * rim + 1, r1)
    at_band = max(reference, bone_level(0.5 * (near + far)))
    at_rim = max(reference, bone_level(far + 0.5 * rim))
    if min(at_band, beyond) - floor < config.line_min_contrast * noise:
        return 0.0
    if beyond - at_rim < config.line_min_rim_contrast * noise:
        return 0.0  # no sclerotic margin: a darker stretch of bone, not a fibrous membrane
    if (beyond - floor) / (grad[far] / step) > config.line_max_edge_mm:
        return 0.0  # the far side climbs slowly: a gradient of the bone (canal to cortex), not an edge
    before = float(np.max(smooth[max(near - rim, 0) : near + 1]))
    half_depth = (min(before, beyond) + floor) / 2
    if np.mean(smooth[near + 1 : far] < half_depth) < config.line_fill_fraction:
        return 0.0  # not one dark band between the edges (a distant dip, or texture)
    return float((far - near) * step)


def _bone_trend(smooth: np.ndarray, start: int, end: int) -> Callable[[float], float]:
    """The straight-line trend of a profile's bone between samples ``start`` and ``end``, as the level
    it gives at any sample (-inf everywhere when there are too few samples to fit one)."""
    if end - start < 8:
        return lambda at: -np.inf
    samples = np.arange(start, end, dtype=np.float64)
    slope, intercept = np.polyfit(samples, smooth[start:end], 1)
    return lambda at: float(slope * at + intercept)


def zone_of(
    point: np.ndarray,
    normal: np.ndarray,
    depth: float,
    frame: InterfaceFrame,
    config: MeasurementConfig,
    tip_depth: float | None = None,
) -> str | None:
    """Knee Society zone of an interface point (None when it belongs to none of the view's zones).

    ``depth`` is how far the point lies from the component's joint-side surface into the bone (mm).
    ``tip_depth``: a tibial point facing distally belongs to the tip zone from this depth on; above it
    (and below ``tray_zone_depth_mm``) it is the underside of an augment block or a step of the tray, in
    the tray's zone. None: from ``tray_zone_depth_mm``.
    """
    facing_away = float(normal @ frame.away)
    facing_side = float(normal @ frame.side)
    on_side = float((point - frame.origin) @ frame.side) > 0
    shallow = depth <= config.tray_zone_depth_mm
    if frame.component == "tibia" and facing_away > 0.7 and not shallow and tip_depth is not None:
        shallow = depth < tip_depth
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


def _interface_points(edge: np.ndarray, spacing: Spacing, every_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Interface pixels thinned to about one per ``every_mm`` of interface (one per square cell)."""
    rows, cols = np.nonzero(edge)
    if len(rows) == 0:
        return rows, cols
    cell_r = np.floor(rows * spacing[0] / every_mm).astype(np.int64)
    cell_c = np.floor(cols * spacing[1] / every_mm).astype(np.int64)
    _, first = np.unique(cell_r * (int(cell_c.max()) + 1) + cell_c, return_index=True)
    return rows[first], cols[first]


def _window_widths(
    profiles: np.ndarray, along: np.ndarray, noise: float, config: MeasurementConfig
) -> tuple[np.ndarray, np.ndarray]:
    """(centre along the interface in mm, width in mm) of each window of ``line_average_profiles``
    neighbouring profiles, windows overlapping by half, sorted along the interface.

    Neighbours are consecutive along the interface (sorted by ``along``, mm); averaging lowers the noise
    by the square root of the window, so faint lines show without a lower threshold.
    """
    order = np.argsort(along, kind="stable")
    size = max(1, min(config.line_average_profiles, len(order)))
    centres, widths = [], []
    for start in range(0, len(order) - size + 1, max(1, size // 2)):
        members = order[start : start + size]
        mean = profiles[members].mean(axis=0)
        centres.append(float(np.mean(along[members])))
        widths.append(profile_width(mean, noise / np.sqrt(size), config))
    return np.asarray(centres, dtype=np.float64), np.asarray(widths, dtype=np.float64)


def sustained_width(centres: np.ndarray, widths: np.ndarray, run_mm: float, fill: float) -> float:
    """Widest line (mm) sustained over ``run_mm`` of contiguous interface: the zone's reading.

    Every stretch of interface ``run_mm`` long reads the width that at least ``fill`` of its windows
    reach; the zone reads the widest stretch. The stretches are those that start at a window (the
    windows whose centres, in mm along the interface, lie within ``run_mm`` after it) and those that end
    at one (within ``run_mm`` before it), so a line at either end of a zone is read like one in its
    middle. A line along part of a zone is thus read at its width however little of the zone it covers,
    as long as it runs along about ``fill`` times ``run_mm`` of interface, while an isolated window
    (texture, a vessel) does not make a line. A zone shorter than ``run_mm`` is one stretch. No windows
    read 0.
    """
    if len(widths) == 0:
        return 0.0
    order = np.argsort(centres, kind="stable")
    centres, widths = centres[order], widths[order]
    quantile = 1.0 - fill
    if centres[-1] - centres[0] <= run_mm:
        return float(np.quantile(widths, quantile, method="lower"))
    best = 0.0
    for i in range(len(centres)):
        stretches = []
        if centres[-1] - centres[i] >= run_mm:  # starting here
            stretches.append(widths[i : int(np.searchsorted(centres, centres[i] + run_mm, side="right"))])
        if centres[i] - centres[0] >= run_mm:  # ending here
            stretches.append(widths[int(np.searchsorted(centres, centres[i] - run_mm, side="left")) : i + 1])
        for stretch in stretches:
            best = max(best, float(np.quantile(stretch, quantile, method="lower")))
    return best


def zone_widths(
    pixels: np.ndarray,
    implant: np.ndarray,
    bone: np.ndarray,
    metal: np.ndarray,
    spacing: Spacing,
    frame: InterfaceFrame,
    config: MeasurementConfig,
    noise: float | None = None,
    drawing: MeasurementDrawing | None = None,
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
        noise: the bone's texture level (``texture_noise``), when the caller has it already.
        drawing: when given, receives a ``ZoneMark`` per measured zone.
    """
    solid = ndimage.binary_fill_holes(implant)
    edge = ndimage.binary_dilation(solid) & ~solid & bone & ~metal
    rows, cols = _interface_points(edge, spacing, config.line_profile_spacing_mm)
    if len(rows) == 0:
        return {}
    smooth = ndimage.gaussian_filter(solid.astype(np.float32), 1.5)
    gr = ndimage.sobel(smooth, axis=0)[rows, cols] / spacing[0]
    gc = ndimage.sobel(smooth, axis=1)[rows, cols] / spacing[1]
    norm = np.hypot(gr, gc)
    ok = norm > 0
    rows, cols, gr, gc, norm = rows[ok], cols[ok], gr[ok], gc[ok], norm[ok]
    normals = -np.stack([gr / norm, gc / norm], axis=1)  # out of the implant, into the bone (mm coords)
    steps = np.arange(-config.line_lead_mm, config.line_profile_mm + 1e-9, config.line_step_mm)
    pr = rows[:, None] + normals[:, 0:1] * steps[None] / spacing[0]
    pc = cols[:, None] + normals[:, 1:2] * steps[None] / spacing[1]
    inside = (pr >= 0) & (pr <= pixels.shape[0] - 1) & (pc >= 0) & (pc <= pixels.shape[1] - 1)
    ri = np.clip(np.rint(pr).astype(np.int64), 0, pixels.shape[0] - 1)
    ci = np.clip(np.rint(pc).astype(np.int64), 0, pixels.shape[1] - 1)
    into_bone = steps >= 0
    valid = np.all(inside, axis=1) & np.all(
        (bone[ri, ci] & ~metal[ri, ci] & ~solid[ri, ci])[:, into_bone], axis=1
    )
    if not valid.any():
        return {}
    profiles = ndimage.map_coordinates(
        pixels.astype(np.float32), [pr[valid].ravel(), pc[valid].ravel()], order=1
    ).reshape(int(valid.sum()), len(steps))
    if noise is None:
        noise = texture_noise(pixels, bone & ~metal, spacing, config.line_texture_scale_mm)
    points = np.stack([rows[valid] * spacing[0], cols[valid] * spacing[1]], axis=1)
    normals = normals[valid]
    depth_all = (points - frame.origin) @ frame.away
    top = float(np.percentile(depth_all, 1.0))
    # The tip zone starts half way down the deepest anchor (keel, stem, peg): an augment block under the
    # tray, 5-10 mm deep, faces distally too but is tray.
    tip_depth = max(config.tray_zone_depth_mm, 0.5 * (float(np.percentile(depth_all, 99.0)) - top))
    zones = np.array(
        [
            zone_of(point, normal, float(depth - top), frame, config, tip_depth) or ""
            for point, normal, depth in zip(points, normals, depth_all, strict=True)
        ]
    )
    out: dict[str, float] = {}
    for zone in sorted(set(zones) - {""}):
        members = np.nonzero(zones == zone)[0]
        if len(members) < config.line_min_profiles:
            continue
        zone_points = points[members]
        centred = zone_points - zone_points.mean(axis=0)
        along = centred @ np.linalg.svd(centred, full_matrices=False)[2][0]
        centres, widths = _window_widths(profiles[members], along, noise, config)
        width = round(sustained_width(centres, widths, config.line_run_mm, config.line_run_fill), 2)
        out[zone] = width
        if drawing is not None:
            pixel_points = zone_points / np.asarray(spacing)
            middle = pixel_points[np.argsort(along)[len(along) // 2]]
            drawing.zones.append(
                ZoneMark(
                    zone,
                    width,
                    (float(middle[0]), float(middle[1])),
                    pixel_points,
                    width >= config.line_flag_mm,
                )
            )
    return out


def frame_for(
    component: str, view: str, away: np.ndarray, side: np.ndarray, origin: np.ndarray
) -> InterfaceFrame:
    """An ``InterfaceFrame`` with unit directions; ``side`` is made perpendicular to ``away``."""
    away = unit(np.asarray(away, dtype=np.float64))
    across = normal_of(away)
    side = across if float(across @ side) >= 0 else -across
    return InterfaceFrame(component, view, away, side, np.asarray(origin, dtype=np.float64))
