"""Measurements from native-resolution masks: areas, implant type, fixation, tibiofemoral angle, quality.

What is measured now (simple, explainable rules; every length from the DICOM pixel spacing):

- ``<structure>_area_px`` and ``<structure>_area_mm2`` for every structure of the label contract.
- ``implant_type``: from which components are present and their geometry (see ``classify_implant``).
- ``fixation``: ``cemented`` when a cement mantle is segmented and a component is present, else
  ``uncemented``; None without a component. No plausible knee (see the quality flag): implant type
  ``unknown``, fixation and angles None.
- ``femur_axis_deg`` / ``tibia_axis_deg`` and ``tibiofemoral_angle_deg``: anatomical shaft axes and the
  angle between them (see ``shaft_axis``).
- ``quality_flag``: whether the numbers can be trusted at all (see ``QUALITY_FLAGS``).

Left for a later issue (DESIGN.md section 5): radiolucent line width per KSRES zone, medial and lateral
joint space, component angles against the bone axes (alpha/beta), varus/valgus sign of the
tibiofemoral angle, and separate measurement of both knees on a standing bilateral film.
"""

from __future__ import annotations

import logging
import math

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from orthoseg.labels import NUM_STRUCTURES, STRUCTURE_NAMES, structure

logger = logging.getLogger(__name__)

IMPLANT_TYPES: tuple[str, ...] = (
    "native",
    "uka_medial",
    "uka_lateral",
    "uka",
    "tka",
    "revision_tka",
    "tka_or_uka",
    "unknown",
)
"""``uka``: unicompartmental, side unknown (no laterality); ``tka_or_uka``: lateral view, where the width
rule cannot tell them apart; ``unknown``: only one component found or no knee found."""

QUALITY_FLAGS: tuple[str, ...] = (
    "ok",
    "no_knee_found",
    "implausible_anatomy",
    "bilateral_film",
    "no_pixel_spacing",
)
"""Ordered from most to least severe; ``quality_flag`` holds the most severe that applies."""

_LATERAL_VIEWS = frozenset({"LL", "ML", "LM", "RL", "LAT", "LATERAL", "XCL", "LLD", "RLD"})


class MeasurementConfig(BaseModel):
    """Thresholds of the measurement rules (millimetres unless the name says otherwise).

    Attributes:
        min_bone_area_mm2: femur or tibia smaller than this counts as not found (a knee film shows
            several thousand mm² of each).
        min_component_area_mm2: smallest area that counts as an implant component being present.
        min_cement_area_mm2: smallest cement area that counts as a cemented fixation.
        stem_extent_mm: a tibial component reaching further than this below its top (the plateau) is a
            stemmed revision component (primary keels are ~40-50 mm).
        uka_width_fraction: a tibial component narrower than this fraction of the tibia at tray level is
            unicompartmental.
        shaft_fraction: share of each bone's visible length, farthest from the joint, used as its shaft.
        overlap_fraction_max: femur and tibia masks overlapping more than this fraction of the smaller one
            are not a plausible knee.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_bone_area_mm2: float = Field(default=1000.0, ge=0)
    min_component_area_mm2: float = Field(default=100.0, ge=0)
    min_cement_area_mm2: float = Field(default=20.0, ge=0)
    stem_extent_mm: float = Field(default=60.0, gt=0)
    uka_width_fraction: float = Field(default=0.6, gt=0, lt=1)
    shaft_fraction: float = Field(default=0.5, gt=0.1, le=1.0)
    overlap_fraction_max: float = Field(default=0.5, gt=0, le=1)


class ImageMeasurements(BaseModel):
    """Measurements of one image; ``None`` where a value cannot be measured honestly.

    Areas are given in pixels always and in mm² only when the file has a pixel spacing. Angles are in
    degrees: axis angles against the image's vertical (column) direction, positive toward increasing
    columns; the tibiofemoral angle is the unsigned angle between the two shaft axes (0 = collinear).
    """

    model_config = ConfigDict(extra="forbid")

    femur_area_px: int = 0
    tibia_area_px: int = 0
    fibula_area_px: int = 0
    patella_area_px: int = 0
    femoral_component_area_px: int = 0
    tibial_component_area_px: int = 0
    cement_area_px: int = 0
    femur_area_mm2: float | None = None
    tibia_area_mm2: float | None = None
    fibula_area_mm2: float | None = None
    patella_area_mm2: float | None = None
    femoral_component_area_mm2: float | None = None
    tibial_component_area_mm2: float | None = None
    cement_area_mm2: float | None = None
    implant_type: str = "unknown"
    fixation: str | None = None
    tibial_component_extent_mm: float | None = None
    tibial_component_width_fraction: float | None = None
    femur_axis_deg: float | None = None
    tibia_axis_deg: float | None = None
    tibiofemoral_angle_deg: float | None = None
    quality_flag: str = "ok"
    quality_notes: str = ""


def structure_areas_px(masks: np.ndarray) -> dict[str, int]:
    """Pixel count of every structure's mask, keyed ``<name>_area_px``."""
    return {f"{name}_area_px": int(np.count_nonzero(masks[i])) for i, name in enumerate(STRUCTURE_NAMES)}


def structure_areas_mm2(masks: np.ndarray, pixel_spacing_mm: tuple[float, float]) -> dict[str, float]:
    """Area of every structure's mask in mm² (pixel count x row spacing x column spacing)."""
    pixel_area_mm2 = float(pixel_spacing_mm[0]) * float(pixel_spacing_mm[1])
    return {
        f"{name}_area_mm2": float(np.count_nonzero(masks[i])) * pixel_area_mm2
        for i, name in enumerate(STRUCTURE_NAMES)
    }


def _points_mm(mask: np.ndarray, spacing: tuple[float, float]) -> np.ndarray:
    """(N, 2) pixel centres of ``mask`` as (row_mm, column_mm)."""
    rows, cols = np.nonzero(mask)
    return np.stack([rows * spacing[0], cols * spacing[1]], axis=1).astype(np.float64)


def _angle_from_vertical_deg(direction: np.ndarray) -> float:
    """Angle of a (row, column) direction against the image vertical, positive toward increasing columns."""
    row, col = float(direction[0]), float(direction[1])
    if row < 0:
        row, col = -row, -col
    return math.degrees(math.atan2(col, row))


def shaft_axis(
    mask: np.ndarray,
    spacing_mm: tuple[float, float],
    toward_joint: np.ndarray,
    shaft_fraction: float = 0.5,
) -> np.ndarray | None:
    """Anatomical axis of a long bone's shaft as a unit (row, column) direction pointing toward the joint.

    Method: the bone's pixels (in mm) are projected on ``toward_joint`` (a rough longitudinal direction,
    e.g. femur centroid -> tibia centroid). The part of the bone farthest from the joint
    (``shaft_fraction`` of its visible length) is the shaft; it is cut into thin slabs perpendicular to
    ``toward_joint`` and the centroid of each slab is a point of the midline (for a strip with parallel
    cortices the midpoint of every chord lies on its centre line, whatever the slab direction). Slabs
    narrower than 80% of the median width (the bone's own end, the film edge) are dropped, and a straight
    line is fitted through the remaining midpoints by least squares. This follows the usual
    radiographic definition (line through the mid-diaphysis) and ignores the flared metaphysis and
    condyles.

    Returns:
        The unit axis, or None when fewer than four usable slabs remain (too little shaft visible).
    """
    points = _points_mm(mask, spacing_mm)
    if len(points) < 16:
        return None
    d = np.asarray(toward_joint, dtype=np.float64)
    d = d / np.linalg.norm(d)
    n = np.array([-d[1], d[0]])
    t = points @ d
    s = points @ n
    t_min, t_max = float(t.min()), float(t.max())
    length = t_max - t_min
    if length <= 0:
        return None
    # The joint end of this bone has the largest t (its points run toward the joint).
    shaft = t <= t_min + shaft_fraction * length
    t, s = t[shaft], s[shaft]
    step = max(float(max(spacing_mm)) * 2.0, (float(t.max()) - float(t.min())) / 40.0)
    bins = np.floor((t - float(t.min())) / step).astype(np.int64)
    count = np.bincount(bins)
    valid = count > 0
    if valid.sum() < 4:
        return None
    centre_t = np.bincount(bins, weights=t)[valid] / count[valid]
    centre_s = np.bincount(bins, weights=s)[valid] / count[valid]
    width = count[valid].astype(np.float64)
    keep = width >= 0.8 * float(np.median(width))
    if keep.sum() < 4:
        return None
    slope, _ = np.polyfit(centre_t[keep], centre_s[keep], 1, w=np.sqrt(width[keep]))
    axis = d + slope * n
    return axis / np.linalg.norm(axis)


def angle_between_deg(a: np.ndarray, b: np.ndarray) -> float:
    """Unsigned angle between two directions in degrees (0 = parallel, oriented the same way)."""
    cosine = float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))
    return math.degrees(math.acos(max(-1.0, min(1.0, cosine))))


def _span(values: np.ndarray) -> float:
    """Robust extent of a set of coordinates (1st to 99th percentile), tolerant of stray pixels."""
    low, high = np.percentile(values, [1.0, 99.0])
    return float(high - low)


def classify_implant(
    masks: np.ndarray,
    spacing_mm: tuple[float, float],
    distal: np.ndarray,
    *,
    laterality: str = "",
    view_position: str = "",
    columns_toward_patient_left: bool = True,
    config: MeasurementConfig | None = None,
) -> tuple[str, float | None, float | None]:
    """Guess the implant type from which components are present and their geometry.

    Rules, in order:

    - no component -> ``native``; only one of femoral/tibial component -> ``unknown``.
    - the tibial component reaches more than ``stem_extent_mm`` below its top along ``distal`` (the
      tibia's axis, pointing away from the knee) -> ``revision_tka`` (stemmed).
    - on a lateral view the width rule does not apply -> ``tka_or_uka``.
    - the tibial component covers less than ``uka_width_fraction`` of the tibia's width at tray level ->
      unicompartmental; the side comes from laterality and which half of the tibia it sits on, assuming
      the image columns run toward ``columns_toward_patient_left`` (radiological AP convention; from
      PatientOrientation when present). No laterality -> ``uka``.
    - otherwise ``tka``.

    Returns:
        (implant type, tibial component extent in mm below its top, its width as a fraction of the
        tibia's width at tray level); the last two are None when there is no tibial component.
    """
    config = config or MeasurementConfig()
    pixel_area = spacing_mm[0] * spacing_mm[1]
    femoral = np.count_nonzero(masks[structure("femoral_component").channel]) * pixel_area
    tibial_mask = masks[structure("tibial_component").channel]
    tibial = np.count_nonzero(tibial_mask) * pixel_area
    has_femoral = femoral >= config.min_component_area_mm2
    has_tibial = tibial >= config.min_component_area_mm2
    if not has_femoral and not has_tibial:
        return "native", None, None
    if not has_tibial:
        return "unknown", None, None
    d = np.asarray(distal, dtype=np.float64)
    d = d / np.linalg.norm(d)
    n = np.array([-d[1], d[0]])
    component = _points_mm(tibial_mask, spacing_mm)
    t_comp = component @ d
    top = float(np.percentile(t_comp, 1.0))
    extent_mm = float(np.percentile(t_comp, 99.0)) - top
    width_fraction: float | None = None
    tibia_points = _points_mm(masks[structure("tibia").channel], spacing_mm)
    tray_band_mm = 15.0
    in_band = np.abs(tibia_points @ d - (top + tray_band_mm / 2)) <= tray_band_mm / 2
    comp_band = np.abs(t_comp - (top + tray_band_mm / 2)) <= tray_band_mm / 2
    side_toward_plus_col: bool | None = None
    if in_band.sum() >= 16 and comp_band.sum() >= 4:
        tibia_s = tibia_points[in_band] @ n
        comp_s = component[comp_band] @ n
        tibia_width = _span(tibia_s)
        if tibia_width > 0:
            width_fraction = _span(comp_s) / tibia_width
        low, high = np.percentile(tibia_s, [1.0, 99.0])
        offset_s = float(comp_s.mean()) - (low + high) / 2
        # n is a (row, column) direction; its column component says which way +s points on the image.
        side_toward_plus_col = (offset_s * n[1]) > 0
    if not has_femoral:
        return "unknown", extent_mm, width_fraction
    if extent_mm > config.stem_extent_mm:
        return "revision_tka", extent_mm, width_fraction
    if view_position.upper() in _LATERAL_VIEWS:
        return "tka_or_uka", extent_mm, width_fraction
    if width_fraction is not None and width_fraction < config.uka_width_fraction:
        if side_toward_plus_col is None or laterality.upper() not in {"L", "R"}:
            return "uka", extent_mm, width_fraction
        toward_patient_left = side_toward_plus_col == columns_toward_patient_left
        # A right knee's medial side faces the patient's left (the midline), a left knee's the right.
        medial = toward_patient_left if laterality.upper() == "R" else not toward_patient_left
        return ("uka_medial" if medial else "uka_lateral"), extent_mm, width_fraction
    return "tka", extent_mm, width_fraction


def classify_fixation(
    masks: np.ndarray, spacing_mm: tuple[float, float], config: MeasurementConfig
) -> str | None:
    """``cemented`` / ``uncemented`` when a component is present, else None (nothing is fixed)."""
    pixel_area = spacing_mm[0] * spacing_mm[1]
    components = (
        np.count_nonzero(masks[structure("femoral_component").channel])
        + np.count_nonzero(masks[structure("tibial_component").channel])
    ) * pixel_area
    if components < config.min_component_area_mm2:
        return None
    cement = np.count_nonzero(masks[structure("cement").channel]) * pixel_area
    return "cemented" if cement >= config.min_cement_area_mm2 else "uncemented"


def measure_image(
    masks: np.ndarray,
    pixel_spacing_mm: tuple[float, float] | None,
    *,
    laterality: str = "",
    view_position: str = "",
    columns_toward_patient_left: bool = True,
    config: MeasurementConfig | None = None,
) -> ImageMeasurements:
    """Measure one image from its native-resolution masks.

    Args:
        masks: (7, H, W) boolean masks in label-contract order, at the image's native size.
        pixel_spacing_mm: (row, column) spacing from the file; None when it has none (then only pixel
            areas are given, mm-based rules use a nominal spacing and the quality flag says so).
        laterality: 'L', 'R', 'B' (both knees) or ''.
        view_position: DICOM ViewPosition ('AP', 'PA', 'LL', ...), decides which rules apply.
        columns_toward_patient_left: image columns increase toward the patient's left (PatientOrientation
            row direction 'L', the radiological AP convention).
        config: rule thresholds.

    Raises:
        ValueError: when ``masks`` does not have the label contract's shape.
    """
    from orthoseg.preprocessing import FALLBACK_SPACING_MM

    config = config or MeasurementConfig()
    masks = np.asarray(masks).astype(bool, copy=False)
    if masks.ndim != 3 or masks.shape[0] != NUM_STRUCTURES:
        raise ValueError(f"masks must have shape ({NUM_STRUCTURES}, H, W); got {masks.shape}")
    values: dict[str, object] = dict(structure_areas_px(masks))
    notes: list[str] = []
    flags: set[str] = set()
    if pixel_spacing_mm is not None:
        values.update(structure_areas_mm2(masks, pixel_spacing_mm))
        spacing = (float(pixel_spacing_mm[0]), float(pixel_spacing_mm[1]))
    else:
        flags.add("no_pixel_spacing")
        notes.append(f"no pixel spacing in the file: mm-based rules use a nominal {FALLBACK_SPACING_MM} mm")
        spacing = (FALLBACK_SPACING_MM, FALLBACK_SPACING_MM)
    if laterality.upper() == "B":
        flags.add("bilateral_film")
        notes.append("both knees on one film: the masks are measured as one knee")

    pixel_area = spacing[0] * spacing[1]
    femur = masks[structure("femur").channel]
    tibia = masks[structure("tibia").channel]
    femur_mm2 = np.count_nonzero(femur) * pixel_area
    tibia_mm2 = np.count_nonzero(tibia) * pixel_area
    if femur_mm2 < config.min_bone_area_mm2 or tibia_mm2 < config.min_bone_area_mm2:
        flags.add("no_knee_found")
        notes.append(
            f"femur {femur_mm2:.0f} mm², tibia {tibia_mm2:.0f} mm² "
            f"(each needs {config.min_bone_area_mm2:.0f})"
        )
    else:
        overlap = np.count_nonzero(femur & tibia) / min(np.count_nonzero(femur), np.count_nonzero(tibia))
        if overlap > config.overlap_fraction_max:
            flags.add("implausible_anatomy")
            notes.append(f"femur and tibia overlap on {overlap:.0%} of the smaller bone")

    if "no_knee_found" in flags or "implausible_anatomy" in flags:
        values["implant_type"] = "unknown"
    else:
        values["fixation"] = classify_fixation(masks, spacing, config)
        femur_centre = _points_mm(femur, spacing).mean(axis=0)
        tibia_centre = _points_mm(tibia, spacing).mean(axis=0)
        distal = tibia_centre - femur_centre
        if np.linalg.norm(distal) < 1e-6:
            distal = np.array([1.0, 0.0])
        femur_axis = shaft_axis(femur, spacing, distal, config.shaft_fraction)
        tibia_axis = shaft_axis(tibia, spacing, -distal, config.shaft_fraction)
        if femur_axis is not None:
            values["femur_axis_deg"] = _angle_from_vertical_deg(femur_axis)
        else:
            notes.append("femoral shaft too short to fit an axis")
        if tibia_axis is not None:
            values["tibia_axis_deg"] = _angle_from_vertical_deg(tibia_axis)
        else:
            notes.append("tibial shaft too short to fit an axis")
        if femur_axis is not None and tibia_axis is not None:
            # The femur axis points toward the knee, the tibia's toward the knee too: flip one.
            values["tibiofemoral_angle_deg"] = angle_between_deg(femur_axis, -tibia_axis)
        implant, extent_mm, width_fraction = classify_implant(
            masks,
            spacing,
            -tibia_axis if tibia_axis is not None else distal,
            laterality=laterality,
            view_position=view_position,
            columns_toward_patient_left=columns_toward_patient_left,
            config=config,
        )
        values["implant_type"] = implant
        values["tibial_component_extent_mm"] = extent_mm
        values["tibial_component_width_fraction"] = width_fraction
    values["quality_flag"] = next((flag for flag in QUALITY_FLAGS[1:] if flag in flags), "ok")
    values["quality_notes"] = "; ".join(notes)
    return ImageMeasurements(**values)  # type: ignore[arg-type]
