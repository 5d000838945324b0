"""Implant category and fixation: one decision list, so the two can never contradict each other.

Every call returns the evidence it used. Categories: ``native``, ``uka_medial``, ``uka_lateral``, ``uka``
(unicompartmental, side undecidable: lateral view or no laterality), ``tka``, ``revision_tka``.
Fixation (``cemented``, ``hybrid``: cemented tray with an uncemented stem, ``uncemented``) is given
only when there is an implant; a native knee never has one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from orthoseg.labels import structure
from orthoseg.measure.components import extent_along
from orthoseg.measure.config import MeasurementConfig
from orthoseg.measure.geometry import Spacing, normal_of, points_mm, unit

CATEGORIES: tuple[str, ...] = ("native", "uka_medial", "uka_lateral", "uka", "tka", "revision_tka")


@dataclass(frozen=True)
class CategoryCall:
    """An implant category, its fixation and the evidence behind them.

    Attributes:
        category: one of ``CATEGORIES``.
        fixation: ``cemented``, ``hybrid`` or ``uncemented``; None exactly when ``category`` is native.
        evidence: the numbers and facts each rule used (mm, mm², fractions, sides), JSON-ready.
    """

    category: str
    fixation: str | None
    evidence: dict[str, object] = field(default_factory=dict)


def _area_mm2(mask: np.ndarray, spacing: Spacing) -> float:
    return float(np.count_nonzero(mask)) * spacing[0] * spacing[1]


def classify(
    masks: np.ndarray,
    spacing: Spacing,
    down: np.ndarray,
    medial: np.ndarray | None,
    lateral_view: bool,
    config: MeasurementConfig,
) -> CategoryCall:
    """Classify the implant of one knee.

    Rules, in order (the first that applies decides the category):

    1. no component of at least ``min_component_area_mm2`` -> ``native`` (fixation None).
    2. the tibial component reaches more than ``stem_extent_mm`` below its top along ``down`` ->
       ``revision_tka``.
    3. AP: the tibial component covers less than ``uka_width_fraction`` of the tibia's width at tray level
       -> unicompartmental, on the side of the tibia its centre lies (``medial``; ``uka`` without it).
       Lateral: a femoral component shorter than ``uka_femoral_height_mm`` along the limb (no anterior
       flange) -> ``uka`` (the side cannot be seen on a lateral view).
    4. otherwise ``tka``.

    Fixation: cement (outside the patella, whose resurfacing cement does not count) of at least
    ``min_cement_area_mm2`` -> ``cemented``; for a stemmed component whose stem carries less than
    ``min_stem_cement_width_mm`` of cement (area within ``stem_cement_band_mm`` of the stem, deeper than
    ``stem_cement_depth_mm``, per mm of stem) -> ``hybrid``; no cement -> ``uncemented``.

    Args:
        masks: (7, H, W) boolean masks.
        spacing: (row, column) pixel spacing, mm.
        down: distal direction of the tibia (mm coordinates).
        medial: medial direction on an AP image, or None.
        lateral_view: True for a lateral view.
        config: thresholds.
    """
    femoral = masks[structure("femoral_component").channel]
    tibial = masks[structure("tibial_component").channel]
    # Cement of a resurfaced patella says nothing about the knee components' fixation.
    cement = masks[structure("cement").channel] & ~masks[structure("patella").channel]
    tibia = masks[structure("tibia").channel]
    evidence: dict[str, object] = {
        "femoral_component_mm2": round(_area_mm2(femoral, spacing), 1),
        "tibial_component_mm2": round(_area_mm2(tibial, spacing), 1),
        "cement_mm2": round(_area_mm2(cement, spacing), 1),
    }
    has_femoral = _area_mm2(femoral, spacing) >= config.min_component_area_mm2
    has_tibial = _area_mm2(tibial, spacing) >= config.min_component_area_mm2
    if not has_femoral and not has_tibial:
        evidence["rule"] = "no component"
        return CategoryCall("native", None, evidence)
    down = unit(down)
    category = "tka"
    stemmed = False
    top = 0.0
    tibial_extent_mm = 0.0
    if has_tibial:
        span = extent_along(tibial, spacing, down)
        assert span is not None
        top, bottom = span
        extent = bottom - top
        tibial_extent_mm = round(extent, 1)
        evidence["tibial_extent_mm"] = tibial_extent_mm
        stemmed = extent > config.stem_extent_mm
    if stemmed:
        category = "revision_tka"
        evidence["rule"] = (
            f"tibial component reaches {evidence['tibial_extent_mm']} mm > {config.stem_extent_mm}"
        )
    elif not lateral_view and has_tibial:
        across = normal_of(down)
        band = config.tray_zone_depth_mm
        tp = points_mm(tibia, spacing)
        cp = points_mm(tibial, spacing)
        tib_band = tp[np.abs(tp @ down - (top + band)) <= band / 2]
        comp_band = cp[(cp @ down >= top) & (cp @ down <= top + band)]
        if len(tib_band) >= 16 and len(comp_band) >= 4:
            t_low, t_high = np.percentile(tib_band @ across, [1.0, 99.0])
            c_low, c_high = np.percentile(comp_band @ across, [1.0, 99.0])
            fraction = float((c_high - c_low) / max(t_high - t_low, 1e-6))
            evidence["tray_width_fraction"] = round(fraction, 3)
            if fraction < config.uka_width_fraction:
                offset = float(np.mean(comp_band, axis=0) @ across - (t_low + t_high) / 2)
                if medial is None:
                    category = "uka"
                    evidence["uka_side"] = "undecidable (no laterality)"
                else:
                    is_medial = offset * float(across @ medial) > 0
                    category = "uka_medial" if is_medial else "uka_lateral"
                    evidence["uka_side"] = f"tray centre {abs(offset):.1f} mm toward the {category[4:]} side"
        evidence.setdefault("rule", f"tray width fraction vs {config.uka_width_fraction}")
    elif lateral_view and has_femoral:
        # A total knee's femoral component has an anterior flange reaching far above the condyles.
        span = extent_along(femoral, spacing, -down)
        assert span is not None
        height = span[1] - span[0]
        evidence["femoral_height_mm"] = round(height, 1)
        if height < config.uka_femoral_height_mm:
            category = "uka"
            evidence["uka_side"] = "undecidable on a lateral view"
        evidence["rule"] = f"femoral component height vs {config.uka_femoral_height_mm} mm"
    fixation = "uncemented"
    if _area_mm2(cement, spacing) >= config.min_cement_area_mm2:
        fixation = "cemented"
        if stemmed:
            near_stem = ndimage.binary_dilation(
                tibial, iterations=max(1, int(round(config.stem_cement_band_mm / min(spacing))))
            )
            deep = points_mm(cement & near_stem, spacing)
            deep_mm2 = float(np.count_nonzero(deep @ down > top + config.stem_cement_depth_mm)) * (
                spacing[0] * spacing[1]
            )
            stem_mm = max(float(tibial_extent_mm) - config.stem_cement_depth_mm, 1.0)
            evidence["stem_cement_width_mm"] = round(deep_mm2 / stem_mm, 2)
            if deep_mm2 / stem_mm < config.min_stem_cement_width_mm:
                fixation = "hybrid"
    return CategoryCall(category, fixation, evidence)
