"""The measurement record of one image: one flat row (it becomes columns of ``measurements.parquet``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

# Knee Society radiographic zones per view (the names the simulator's ground truth uses).
AP_ZONES: tuple[str, ...] = (
    "femur_1M",
    "femur_1L",
    "femur_2",
    "tibia_1M",
    "tibia_1L",
    "tibia_2M",
    "tibia_2L",
    "tibia_3",
)
LATERAL_ZONES: tuple[str, ...] = ("femur_1", "femur_2", "femur_3", "femur_4", "tibia_1", "tibia_2", "tibia_3")
ZONE_FIELDS: dict[str, str] = {
    **{f"line_ap_{z}_mm": z for z in AP_ZONES},
    **{f"line_lat_{z}_mm": z for z in LATERAL_ZONES},
}
"""Field name of every zone's radiolucent-line width -> zone name."""

QUALITY_FLAGS: tuple[str, ...] = (
    "ok",
    "no_knee_found",
    "implausible_anatomy",
    "bilateral_film",
    "no_pixel_spacing",
    "partial",
)
"""Image-level flags, most severe first after ``ok``; ``partial``: some measurement was refused or is
flagged (see ``measurement_flags``)."""


class ImageMeasurements(BaseModel):
    """Measurements of one image; ``None`` wherever a value cannot be measured honestly.

    Areas in pixels always, in mm² with a pixel spacing. Angles in degrees (see ``orthoseg.measure.angles``
    for each definition); lengths in mm.

    Attributes (beyond the areas):
        implant_type: native, uka_medial, uka_lateral, uka (side undecidable), tka, revision_tka or
            unknown (no knee found / measurement refused).
        fixation: cemented, hybrid or uncemented; None exactly when there is no implant (or unknown).
        category_evidence: what the category and fixation rules used, as ``key=value; ...``.
        tibial_component_extent_mm, tibial_component_width_fraction: the two category features.
        femur_axis_deg, tibia_axis_deg: anatomical axes against the image vertical (+ toward columns).
        tibiofemoral_angle_deg: AP, signed, valgus positive.
        femoral_component_angle_deg, tibial_component_angle_deg: AP alpha and beta.
        femoral_flexion_angle_deg, tibial_slope_angle_deg: lateral gamma and delta.
        joint_space_medial_mm, joint_space_lateral_mm: AP gaps between the femoral and tibial sides.
        line_<view>_<zone>_mm: radiolucent-line width per Knee Society zone (None: not measured).
        line_femoral_sum_mm, line_tibial_sum_mm: summed zone widths per component.
        line_max_mm: widest zone.
        line_flag: None, or why the lines need attention (``wide`` >= ``line_flag_mm`` in some zone,
            ``all_zones``: a line >= ``line_present_mm`` in every zone of a component).
        measurement_flags: per-measurement flags ``name:reason; ...`` (refused or doubtful values).
        quality_flag: image-level flag (``QUALITY_FLAGS``), quality_notes: words for a person.
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
    category_evidence: str = ""
    tibial_component_extent_mm: float | None = None
    tibial_component_width_fraction: float | None = None
    femur_axis_deg: float | None = None
    tibia_axis_deg: float | None = None
    tibiofemoral_angle_deg: float | None = None
    femoral_component_angle_deg: float | None = None
    tibial_component_angle_deg: float | None = None
    femoral_flexion_angle_deg: float | None = None
    tibial_slope_angle_deg: float | None = None
    joint_space_medial_mm: float | None = None
    joint_space_lateral_mm: float | None = None
    line_ap_femur_1M_mm: float | None = None
    line_ap_femur_1L_mm: float | None = None
    line_ap_femur_2_mm: float | None = None
    line_ap_tibia_1M_mm: float | None = None
    line_ap_tibia_1L_mm: float | None = None
    line_ap_tibia_2M_mm: float | None = None
    line_ap_tibia_2L_mm: float | None = None
    line_ap_tibia_3_mm: float | None = None
    line_lat_femur_1_mm: float | None = None
    line_lat_femur_2_mm: float | None = None
    line_lat_femur_3_mm: float | None = None
    line_lat_femur_4_mm: float | None = None
    line_lat_tibia_1_mm: float | None = None
    line_lat_tibia_2_mm: float | None = None
    line_lat_tibia_3_mm: float | None = None
    line_femoral_sum_mm: float | None = None
    line_tibial_sum_mm: float | None = None
    line_max_mm: float | None = None
    line_flag: str | None = None
    measurement_flags: str = ""
    quality_flag: str = "ok"
    quality_notes: str = ""


def zone_values(result: BaseModel, view: str) -> dict[str, float | None]:
    """Zone name -> width (mm) of one view's zones from a measurement record."""
    prefix = "line_ap_" if view.upper() == "AP" else "line_lat_"
    return {zone: getattr(result, name) for name, zone in ZONE_FIELDS.items() if name.startswith(prefix)}
