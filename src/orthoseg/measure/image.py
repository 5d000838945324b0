"""``measure_image``: every measurement of one radiograph from its native-resolution masks (and pixels)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from orthoseg.labels import NUM_STRUCTURES, STRUCTURE_NAMES, structure
from orthoseg.measure import angles, components
from orthoseg.measure.axes import ShaftAxis, fit_shaft_axis, joint_centre
from orthoseg.measure.category import classify
from orthoseg.measure.config import MeasurementConfig
from orthoseg.measure.drawing import MeasurementDrawing
from orthoseg.measure.field import NO_MARGINS, FieldMargins, detect_field
from orthoseg.measure.geometry import Spacing, angle_from_vertical_deg
from orthoseg.measure.joint_space import joint_spaces
from orthoseg.measure.lucency import frame_for, texture_noise, zone_widths
from orthoseg.measure.result import AP_ZONES, LATERAL_ZONES, QUALITY_FLAGS, ImageMeasurements
from orthoseg.measure.sides import anterior_side, is_lateral_view, medial_side

CHANNEL = {name: structure(name).channel for name in STRUCTURE_NAMES}


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


class _Record:
    """Values and flags collected while measuring."""

    def __init__(self) -> None:
        self.values: dict[str, object] = {}
        self.flags: list[str] = []
        self.notes: list[str] = []
        self.image_flags: set[str] = set()

    def flag(self, name: str, reason: str) -> None:
        self.flags.append(f"{name}:{reason}")


def _axes(
    masks: np.ndarray,
    spacing: Spacing,
    config: MeasurementConfig,
    record: _Record,
    field: FieldMargins | np.ndarray,
) -> tuple[np.ndarray, np.ndarray, ShaftAxis | None, ShaftAxis | None]:
    femur, tibia = masks[CHANNEL["femur"]], masks[CHANNEL["tibia"]]
    centre, up = joint_centre(femur, tibia, spacing)
    fitted = {
        "femur_axis": fit_shaft_axis(femur, spacing, centre, up, config, field),
        "tibia_axis": fit_shaft_axis(tibia, spacing, centre, -up, config, field),
    }
    for name, key in (("femur_axis", "femur_axis_deg"), ("tibia_axis", "tibia_axis_deg")):
        axis = fitted[name]
        if axis is None:
            record.flag(name, "too little shaft visible to fit")
            continue
        if axis.direction_uncertainty_deg > config.axis_max_uncertainty_deg:
            # A short stretch of wandering midpoints: no angle measured against it would be a fact.
            record.flag(
                name,
                f"shaft too short or curved to fit ({axis.length_mm:.0f} mm, direction uncertain by "
                f"{axis.direction_uncertainty_deg:.1f} degrees)",
            )
            fitted[name] = None
            continue
        record.values[key] = angle_from_vertical_deg(axis.direction)
        if axis.short:
            record.flag(name, f"short shaft (fit from {axis.start_mm:.0f} mm)")
        if axis.residual_mm > config.axis_max_residual_mm:
            record.flag(name, f"midpoints off the line by {axis.residual_mm:.1f} mm RMS")
    return centre, up, fitted["femur_axis"], fitted["tibia_axis"]


# The shaft axes each angle is measured against.
_ANGLE_AXES = {
    "tibiofemoral_angle_deg": ("femur", "tibia"),
    "femoral_component_angle_deg": ("femur",),
    "tibial_component_angle_deg": ("tibia",),
    "femoral_flexion_angle_deg": ("femur",),
    "tibial_slope_angle_deg": ("tibia",),
}


def _flag_angles_on_short_axes(
    femur_axis: ShaftAxis | None, tibia_axis: ShaftAxis | None, record: _Record
) -> None:
    """Flag every angle measured against a short axis: fitted partly in the metaphysis, whose flare and
    (on lateral films) the femur's bow can turn it by several degrees, so the angle is not a fact."""
    short = {
        name
        for name, axis in (("femur", femur_axis), ("tibia", tibia_axis))
        if axis is not None and axis.short
    }
    for key, bones in _ANGLE_AXES.items():
        if record.values.get(key) is None:
            continue
        on_short = [bone for bone in bones if bone in short]
        if on_short:
            record.flag(key, f"measured against a short {' and '.join(on_short)} axis")
    # A lateral tibia fitted only in its flaring metaphysis (the posterior wall flares more than the
    # anterior) reads the slope 1-3 degrees high: not a fact either.
    slope = "tibial_slope_angle_deg"
    if record.values.get(slope) is not None and tibia_axis is not None and tibia_axis.flaring:
        if "tibia" not in short:
            record.flag(slope, "tibial axis fitted in the flaring metaphysis")


def _check(record: _Record, key: str, value: float | None, limit: float, centre: float = 0.0) -> None:
    if value is None:
        return
    record.values[key] = value
    if abs(value - centre) > limit:
        record.flag(key, f"implausible ({value:.1f})")


def _ap_angles(
    masks: np.ndarray,
    spacing: Spacing,
    femur_axis: ShaftAxis | None,
    tibia_axis: ShaftAxis | None,
    medial: np.ndarray,
    config: MeasurementConfig,
    record: _Record,
) -> None:
    if femur_axis is not None and tibia_axis is not None:
        value = angles.tibiofemoral_deg(femur_axis.direction, -tibia_axis.direction, medial)
        _check(record, "tibiofemoral_angle_deg", value, config.tibiofemoral_plausible_deg)
    present = record.values.get("implant_type") not in ("native", "unknown")
    if not present:
        return
    femoral, tibial = masks[CHANNEL["femoral_component"]], masks[CHANNEL["tibial_component"]]
    if femur_axis is not None and np.any(femoral):
        if str(record.values["implant_type"]).startswith("uka"):
            record.flag("femoral_component_angle_deg", "single-condyle component: no condylar line")
        else:
            line = components.condylar_line(femoral, spacing, femur_axis.direction)
            if line is None:
                record.flag("femoral_component_angle_deg", "condylar tangent not found")
            else:
                value = angles.alpha_deg(femur_axis.direction, line, medial)
                _check(
                    record, "femoral_component_angle_deg", value, config.component_angle_plausible_deg, 90.0
                )
    if tibia_axis is not None and np.any(tibial):
        line = components.tray_line(tibial, spacing, -tibia_axis.direction)
        if line is not None:
            value = angles.beta_deg(tibia_axis.direction, line, medial)
            _check(record, "tibial_component_angle_deg", value, config.component_angle_plausible_deg, 90.0)


def _lateral_angles(
    masks: np.ndarray,
    spacing: Spacing,
    femur_axis: ShaftAxis | None,
    tibia_axis: ShaftAxis | None,
    anterior: np.ndarray,
    config: MeasurementConfig,
    record: _Record,
) -> None:
    femoral, tibial = masks[CHANNEL["femoral_component"]], masks[CHANNEL["tibial_component"]]
    if femur_axis is not None and np.any(femoral):
        axis = components.cut_axis(
            femoral, masks[CHANNEL["femur"]] | masks[CHANNEL["cement"]], spacing, femur_axis.direction
        )
        if axis is None:
            record.flag("femoral_flexion_angle_deg", "component edges not found")
        else:
            value = angles.gamma_deg(femur_axis.direction, axis, anterior)
            _check(record, "femoral_flexion_angle_deg", value, config.flexion_plausible_deg)
    if tibia_axis is not None and np.any(tibial):
        line = components.tray_line(tibial, spacing, -tibia_axis.direction)
        if line is not None:
            value = angles.delta_deg(tibia_axis.direction, line, anterior)
            _check(record, "tibial_slope_angle_deg", value, config.component_angle_plausible_deg, 90.0)


def _lines(
    pixels: np.ndarray,
    masks: np.ndarray,
    spacing: Spacing,
    view: str,
    centre: np.ndarray,
    up: np.ndarray,
    side: np.ndarray,
    config: MeasurementConfig,
    record: _Record,
    drawing: MeasurementDrawing | None = None,
) -> None:
    metal = masks[CHANNEL["femoral_component"]] | masks[CHANNEL["tibial_component"]]
    cement = masks[CHANNEL["cement"]] & ~masks[CHANNEL["patella"]]
    zones = AP_ZONES if view == "AP" else LATERAL_ZONES
    prefix = "line_ap_" if view == "AP" else "line_lat_"
    sums: dict[str, float] = {}
    present_all: list[str] = []
    widths_all: list[float] = []
    for bone, comp, away in (("femur", "femoral_component", up), ("tibia", "tibial_component", -up)):
        component = masks[CHANNEL[comp]]
        if not np.any(component):
            continue
        reach = max(1, int(round(4.0 / min(spacing))))
        implant = component | (cement & ndimage.binary_dilation(component, iterations=reach))
        frame = frame_for(bone, view, away, side, centre)
        host = masks[CHANNEL[bone]]
        noise = texture_noise(pixels, host & ~metal, spacing, config.line_texture_scale_mm)
        widths = zone_widths(pixels, implant, host, metal, spacing, frame, config, noise, drawing)
        own = [z for z in zones if z.startswith(bone)]
        for zone in own:
            if zone in widths:
                record.values[f"{prefix}{zone}_mm"] = widths[zone]
        measured = [widths[z] for z in own if z in widths]
        if measured:
            sums[bone] = float(sum(measured))
            widths_all.extend(measured)
            if len(measured) >= 2 and all(w >= config.line_present_mm for w in measured):
                present_all.append(bone)
    if "femur" in sums:
        record.values["line_femoral_sum_mm"] = round(sums["femur"], 2)
    if "tibia" in sums:
        record.values["line_tibial_sum_mm"] = round(sums["tibia"], 2)
    if widths_all:
        record.values["line_max_mm"] = max(widths_all)
        reasons = []
        if max(widths_all) >= config.line_flag_mm:
            reasons.append("wide")
        if present_all:
            reasons.append("all_zones:" + ",".join(present_all))
        record.values["line_flag"] = "; ".join(reasons) or None


def measure_image(
    masks: np.ndarray,
    pixel_spacing_mm: tuple[float, float] | None,
    *,
    laterality: str = "",
    view_position: str = "",
    columns_toward_patient_left: bool = True,
    config: MeasurementConfig | None = None,
    pixels: np.ndarray | None = None,
    drawing: MeasurementDrawing | None = None,
    exposed_field: np.ndarray | None = None,
) -> ImageMeasurements:
    """Measure one image from its native-resolution masks.

    Args:
        masks: (7, H, W) boolean masks in label-contract order, at the image's native size.
        pixel_spacing_mm: (row, column) spacing; None: pixel areas only, mm rules use a nominal spacing
            and the quality flag says so.
        laterality: 'L', 'R', 'B' (both knees: flagged and not measured as one knee) or ''.
        view_position: DICOM ViewPosition ('AP', 'PA', 'LL', ...): AP or lateral rules.
        columns_toward_patient_left: image columns increase toward the patient's left (AP convention).
        config: thresholds.
        pixels: (H, W) native presentation values; without them radiolucent lines are None.
        drawing: when given, receives the fitted axes, reference lines and zone marks to draw.
        exposed_field: (H, W) True inside the collimated field, when the caller found it already
            (``orthoseg.measure.field.detect_field(pixels).mask()``, which post-processing computes);
            None: found here from ``pixels``.

    Raises:
        ValueError: when ``masks`` does not have the label contract's shape.
    """
    from orthoseg.preprocessing import FALLBACK_SPACING_MM

    config = config or MeasurementConfig()
    masks = np.asarray(masks).astype(bool, copy=False)
    if masks.ndim != 3 or masks.shape[0] != NUM_STRUCTURES:
        raise ValueError(f"masks must have shape ({NUM_STRUCTURES}, H, W); got {masks.shape}")
    record = _Record()
    record.values.update(structure_areas_px(masks))
    if pixel_spacing_mm is not None:
        record.values.update(structure_areas_mm2(masks, pixel_spacing_mm))
        spacing = (float(pixel_spacing_mm[0]), float(pixel_spacing_mm[1]))
    else:
        record.image_flags.add("no_pixel_spacing")
        record.notes.append(f"no pixel spacing: mm-based rules use a nominal {FALLBACK_SPACING_MM} mm")
        spacing = (FALLBACK_SPACING_MM, FALLBACK_SPACING_MM)
    _measure(
        masks,
        spacing,
        laterality,
        view_position,
        columns_toward_patient_left,
        config,
        pixels,
        record,
        drawing,
        exposed_field,
    )
    flags = record.image_flags | ({"partial"} if record.flags else set())
    record.values["quality_flag"] = next((f for f in QUALITY_FLAGS[1:] if f in flags), "ok")
    record.values["measurement_flags"] = "; ".join(record.flags)
    record.values["quality_notes"] = "; ".join(record.notes)
    return ImageMeasurements.model_validate(record.values)


def _measure(
    masks: np.ndarray,
    spacing: Spacing,
    laterality: str,
    view_position: str,
    columns_left: bool,
    config: MeasurementConfig,
    pixels: np.ndarray | None,
    record: _Record,
    drawing: MeasurementDrawing | None = None,
    exposed_field: np.ndarray | None = None,
) -> None:
    pixel_area = spacing[0] * spacing[1]
    femur, tibia = masks[CHANNEL["femur"]], masks[CHANNEL["tibia"]]
    femur_mm2 = np.count_nonzero(femur) * pixel_area
    tibia_mm2 = np.count_nonzero(tibia) * pixel_area
    if femur_mm2 < config.min_bone_area_mm2 or tibia_mm2 < config.min_bone_area_mm2:
        record.image_flags.add("no_knee_found")
        record.notes.append(
            f"femur {femur_mm2:.0f} mm², tibia {tibia_mm2:.0f} mm² "
            f"(each needs {config.min_bone_area_mm2:.0f})"
        )
        return
    overlap = np.count_nonzero(femur & tibia) / min(np.count_nonzero(femur), np.count_nonzero(tibia))
    if overlap > config.overlap_fraction_max:
        record.image_flags.add("implausible_anatomy")
        record.notes.append(f"femur and tibia overlap on {overlap:.0%} of the smaller bone")
        return
    if laterality.strip().upper() == "B":
        record.image_flags.add("bilateral_film")
        record.notes.append("both knees on one film: not measured as one knee")
        return
    lateral_view = is_lateral_view(view_position)
    view = "LAT" if lateral_view else "AP"
    # The exposed field as a mask: it follows a turned shutter and a cut corner exactly.
    field: FieldMargins | np.ndarray
    if exposed_field is not None:
        field = exposed_field
    else:
        field = detect_field(pixels).mask() if pixels is not None else NO_MARGINS
    centre, up, femur_axis, tibia_axis = _axes(masks, spacing, config, record, field)
    if drawing is not None:
        for label, axis in (("femur axis", femur_axis), ("tibia axis", tibia_axis)):
            if axis is not None:
                half = axis.length_mm / 2
                drawing.add_line(label, axis.point, axis.direction, half, spacing, axis.start_mm + half)
    if lateral_view:
        side = anterior_side(up, femur, masks[CHANNEL["patella"]], tibia, masks[CHANNEL["fibula"]], spacing)
    else:
        side = medial_side(laterality, columns_left, up, tibia, masks[CHANNEL["fibula"]], spacing)
    if side is None:
        record.flag("side", "medial/anterior side undecidable")
    down = tibia_axis.direction if tibia_axis is not None else -up
    medial = None if (side is None or lateral_view) else side.direction
    call = classify(masks, spacing, down, medial, lateral_view, config)
    record.values["implant_type"] = call.category
    record.values["fixation"] = call.fixation
    record.values["category_evidence"] = "; ".join(f"{k}={v}" for k, v in call.evidence.items())
    record.values["tibial_component_extent_mm"] = call.evidence.get("tibial_extent_mm")
    record.values["tibial_component_width_fraction"] = call.evidence.get("tray_width_fraction")
    if side is None:
        return
    if lateral_view:
        _lateral_angles(masks, spacing, femur_axis, tibia_axis, side.direction, config, record)
    else:
        _ap_angles(masks, spacing, femur_axis, tibia_axis, side.direction, config, record)
    _flag_angles_on_short_axes(femur_axis, tibia_axis, record)
    if not lateral_view:
        tib_up = -tibia_axis.direction if tibia_axis is not None else up
        medial_gap, lateral_gap = joint_spaces(
            femur | masks[CHANNEL["femoral_component"]],
            tibia | masks[CHANNEL["tibial_component"]],
            spacing,
            centre,
            tib_up,
            side.direction,
            config,
        )
        for key, value in (("joint_space_medial_mm", medial_gap), ("joint_space_lateral_mm", lateral_gap)):
            if value is None:
                record.flag(key, "no gap found")
            else:
                record.values[key] = round(value, 2)
    if call.category == "native":
        return
    if pixels is None:
        record.notes.append("no pixels: radiolucent lines not measured")
        return
    _lines(np.asarray(pixels), masks, spacing, view, centre, up, side.direction, config, record, drawing)
