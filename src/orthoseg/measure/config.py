"""Thresholds of every measurement rule in one pydantic model (millimetres and degrees unless named)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class MeasurementConfig(BaseModel):
    """Thresholds of the measurement rules; nothing in ``orthoseg.measure`` hides another constant.

    Attributes:
        min_bone_area_mm2: femur or tibia smaller than this counts as not found.
        min_component_area_mm2: smallest area that counts as an implant component being present.
        min_cement_area_mm2: smallest cement area that counts as cement being present.
        stem_extent_mm: a tibial component reaching further than this below its top is stemmed (revision);
            primary keels and pegs reach ~15-50 mm.
        uka_width_fraction: a tibial component narrower than this fraction of the tibia at tray level is
            unicompartmental (AP view).
        uka_femoral_height_mm: on a lateral view, a femoral component shorter than this along the femur
            (no anterior flange) is unicompartmental.
        stem_cement_band_mm: cement within this distance of the stem, deeper than ``stem_cement_depth_mm``
            below the tray, counts as a cemented stem (else a stemmed component with tray cement is hybrid).
        stem_cement_depth_mm: depth below the tray top from which cement counts as stem cement.
        min_stem_cement_width_mm: stem cement area per mm of stem (both sides together) from which a
            stemmed component counts as fully cemented rather than hybrid.
        overlap_fraction_max: femur and tibia overlapping more than this fraction of the smaller one are not
            a plausible knee.
        axis_start_mm: shaft midpoints are taken from this distance from the joint line outward.
        axis_min_start_mm: when the film shows too little shaft beyond ``axis_start_mm`` the first level
            moves toward the joint, but never closer than this (the axis is then flagged as short).
        axis_step_mm: spacing of the shaft levels (cuts perpendicular to the axis).
        axis_min_length_mm: an axis needs at least this much fitted shaft, else it is refused.
        axis_width_fraction: levels narrower than this fraction of the median shaft width are dropped
            (film edge, collimation, the bone's own end).
        axis_max_residual_mm: RMS distance of the midpoints from the fitted line above which the axis is
            flagged (curved or broken mask).
        axis_max_uncertainty_deg: an axis whose direction is uncertain by more than this (degrees, the
            standard error of its fit: ``ShaftAxis.direction_uncertainty_deg``) is refused, and the angles
            measured against it with it: on held-out films such axes were off by 3-23 degrees.
        axis_field_edge_mm: a shaft level with mask pixels this close to the film's edge or the collimator's
            shadow is cut by it (its midpoint is not between the cortices) and is not used.
        tibiofemoral_plausible_deg: |tibiofemoral angle| above this on AP is implausible (flagged).
        component_angle_plausible_deg: alpha/beta/delta farther than this from 90 degrees are flagged.
        flexion_plausible_deg: |gamma| above this is flagged.
        line_profile_mm: length of each intensity profile into the bone, from the interface.
        line_lead_mm: profiles start this far inside the implant (the line's near edge is on the film).
        line_step_mm: sampling step along a profile.
        line_reference_mm: (start, end) distance of the bone reference level along a profile.
        line_search_mm: a lucent band must start within this distance of the interface.
        line_min_contrast: smallest dip (bone reference minus band minimum) in units of the image's local
            noise that counts as a line.
        line_texture_scale_mm: distance over which the bone's texture level is measured (the scale of a
            line's width): a line must be deeper than ``line_min_contrast`` times that level.
        line_rim_mm: the bone just beyond a line's far edge is read over this distance.
        line_min_rim_contrast: the bone just beyond a line (its sclerotic margin) must be brighter than the
            bone further in by this many noise levels; a fibrous membrane is demarcated by such a margin,
            a darker stretch of bone is not. 0 accepts lines without one.
        line_fill_fraction: share of a line's samples that must lie below half its depth.
        line_max_edge_mm: a line's far edge (floor to rim) must rise within about this length (mm), read as
            its depth over its steepest slope: blur spreads a real edge over a fraction of a millimetre,
            while bone that brightens gradually (canal to cortex) climbs over millimetres.
        line_smooth_mm: Gaussian smoothing (sigma, mm) of a profile before its edges are located.
        line_average_profiles: neighbouring profiles averaged before a width is read.
        line_profile_spacing_mm: interface points closer than this are thinned out.
        line_min_profiles: a zone needs at least this many valid profiles, else its width is None.
        line_run_mm: a zone reads the widest line sustained over this length of contiguous interface (mm):
            a line along part of a zone counts at its width, a shorter dark stretch does not.
        line_run_fill: share (0-1) of the windows of such a stretch that must reach the width it reads.
        line_present_mm: a zone with a line at least this wide counts as having a line.
        line_flag_mm: a zone at least this wide raises the line flag.
        tray_zone_depth_mm: interface points of the tibial component deeper than this below the tray's
            underside belong to the stem zones (or the tip zone when facing distally).
        joint_band_fraction: each compartment's gap is read over this central share of its half-width.
        joint_condyle_window_mm: columns whose femoral side lies within this distance of the compartment's
            lowest femoral point are the condyle's contact; the joint space is the median gap over them.
        joint_plateau_peak_mm: columns where the tibial side rises more than this above the compartment's
            median tibial height (a tibial spine, a rim, a tray's edge) are not read: the gap there does not
            run to the articular surface.
        joint_rim_width_fraction: half-width of the tibial plateau's articular rim as a fraction of the
            proximal tibia's half-width (the rim lies a little inside the metaphysis' widest outline).
        joint_rim_fit_inner_fraction, joint_rim_fit_outer_fraction: the dome of the plateau's rim (a
            posteriorly sloped plateau seen on AP) is fitted to the tibial top edge between these fractions
            of the tibia's half-width on both sides (spines inside, the rim's corner outside).
        joint_rim_fit_outer_fraction_single: outer limit when a compartment is fitted alone (a UKA).
        joint_rim_fit_rms_max_mm: a rim fit with a larger root-mean-square residual (mm) is not used.
        joint_space_max_mm: gaps above this are implausible (flagged and not reported).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_bone_area_mm2: float = Field(default=1000.0, ge=0)
    min_component_area_mm2: float = Field(default=100.0, ge=0)
    min_cement_area_mm2: float = Field(default=20.0, ge=0)
    stem_extent_mm: float = Field(default=60.0, gt=0)
    uka_width_fraction: float = Field(default=0.6, gt=0, lt=1)
    uka_femoral_height_mm: float = Field(default=40.0, gt=0)
    stem_cement_band_mm: float = Field(default=4.0, gt=0)
    stem_cement_depth_mm: float = Field(default=25.0, gt=0)
    min_stem_cement_width_mm: float = Field(default=2.0, ge=0)
    overlap_fraction_max: float = Field(default=0.5, gt=0, le=1)
    axis_start_mm: float = Field(default=50.0, ge=0)
    axis_min_start_mm: float = Field(default=30.0, ge=0)
    axis_step_mm: float = Field(default=2.0, gt=0)
    axis_min_length_mm: float = Field(default=15.0, gt=0)
    axis_width_fraction: float = Field(default=0.8, gt=0, le=1)
    axis_max_residual_mm: float = Field(default=1.5, gt=0)
    axis_max_uncertainty_deg: float = Field(default=1.0, gt=0)
    axis_field_edge_mm: float = Field(default=1.0, gt=0)
    tibiofemoral_plausible_deg: float = Field(default=25.0, gt=0)
    component_angle_plausible_deg: float = Field(default=20.0, gt=0)
    flexion_plausible_deg: float = Field(default=25.0, gt=0)
    line_profile_mm: float = Field(default=6.0, gt=0)
    line_lead_mm: float = Field(default=0.5, ge=0)
    line_step_mm: float = Field(default=0.05, gt=0)
    line_reference_mm: tuple[float, float] = (4.5, 6.0)
    line_search_mm: float = Field(default=0.6, ge=0)
    line_min_contrast: float = Field(default=3.0, ge=0)
    line_texture_scale_mm: float = Field(default=0.5, gt=0)
    line_rim_mm: float = Field(default=0.6, gt=0)
    line_min_rim_contrast: float = Field(default=1.0, ge=0)
    line_fill_fraction: float = Field(default=0.7, gt=0, le=1)
    line_max_edge_mm: float = Field(default=1.2, gt=0)
    line_smooth_mm: float = Field(default=0.1, gt=0)
    line_average_profiles: int = Field(default=6, ge=1)
    line_profile_spacing_mm: float = Field(default=0.5, gt=0)
    line_min_profiles: int = Field(default=8, ge=1)
    line_run_mm: float = Field(default=9.0, ge=0)
    line_run_fill: float = Field(default=0.5, gt=0, le=1)
    line_present_mm: float = Field(default=1.0, ge=0)
    line_flag_mm: float = Field(default=2.0, ge=0)
    tray_zone_depth_mm: float = Field(default=6.0, gt=0)
    joint_band_fraction: float = Field(default=0.6, gt=0, le=1)
    joint_condyle_window_mm: float = Field(default=0.5, gt=0)
    joint_plateau_peak_mm: float = Field(default=2.0, gt=0)
    joint_rim_width_fraction: float = Field(default=0.94, gt=0, le=1)
    joint_rim_fit_inner_fraction: float = Field(default=0.3, ge=0, lt=1)
    joint_rim_fit_outer_fraction: float = Field(default=0.85, gt=0, le=1)
    joint_rim_fit_outer_fraction_single: float = Field(default=0.95, gt=0, le=1)
    joint_rim_fit_rms_max_mm: float = Field(default=0.25, gt=0)
    joint_space_max_mm: float = Field(default=30.0, gt=0)
