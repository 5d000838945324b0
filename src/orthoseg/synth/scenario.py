"""Every random decision of a case, drawn from the seed before any pixel is made.

A case is one image. Cases ``2k`` and ``2k+1`` form a slot: in a paired slot they are the AP and the
lateral of the same knee (same patient, same study, same implant and measurements); otherwise each is
its own patient. Everything here is cheap, so the dataset writer can know a case's UID and category
without simulating it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TypedDict

import numpy as np

from orthoseg.synth.config import SynthConfig
from orthoseg.synth.leg_framing import leg_framing

# Largest geometric magnification of the knee on the detector (object-to-detector distance over SID).
MAX_MAGNIFICATION = 1.2
# Design families per category: (name, weight). Shapes in implants.py.
FAMILIES: dict[str, tuple[tuple[str, float], ...]] = {
    "native": (("none", 1.0),),
    "uka_medial": (("uka_fixed_keel", 0.6), ("uka_mobile_bearing", 0.4)),
    "uka_lateral": (("uka_fixed_keel", 1.0),),
    "tka": (("ps_box_keel", 0.45), ("cr_pegged", 0.35), ("cr_porous_screws", 0.2)),
    "revision_tka": (("revision_cck_stemmed", 0.7), ("revision_hinge_stemmed", 0.3)),
}
# Bone-implant interface regions in 3D where a radiolucent line can form (see truth.ZONES for how they
# map onto the Knee Society radiographic zones of each view).
REGIONS: tuple[str, ...] = (
    "tray_MA",
    "tray_MP",
    "tray_LA",
    "tray_LP",
    "stem_M",
    "stem_L",
    "stem_tip",
    "distal_M",
    "distal_L",
    "anterior",
    "posterior_M",
    "posterior_L",
    "femoral_stem",
)


@dataclass(frozen=True)
class KneeSpec:
    """One knee: anatomy, implant, alignment and condition (shared by its AP and lateral images).

    Lengths in mm, angles in degrees. Joint spaces are the true tibiofemoral gaps (cartilage, or
    polyethylene after wear) before projection.
    """

    side: str
    female: bool
    age_years: int
    category: str
    family: str
    fixation: str
    bone_scale: float
    soft_scale: float
    kl_grade: int
    osteophytes: bool
    tibiofemoral_base_deg: float
    femoral_varus_valgus_deg: float
    femoral_flexion_deg: float
    tibial_varus_valgus_deg: float
    tibial_slope_deg: float
    joint_space_medial_mm: float
    joint_space_lateral_mm: float
    subsidence_mm: float
    lucency_mm: dict[str, float]
    patella_resurfaced: bool
    stem_length_mm: float
    augments: bool
    cement_mu_per_cm: float
    femoral_size: float
    plateau_slope_native_deg: float
    shaft_bow: float


@dataclass(frozen=True)
class ImageSpec:
    """One radiograph: view, positioning, detector, exposure and burned-in objects."""

    index: int
    view: str
    slot_paired: bool
    bilateral: bool
    patient_key: str
    study_key: str
    rotation_deg: float
    tilt_deg: float
    flexion_deg: float
    spacing_mm: float
    magnification: float
    rows: int
    columns: int
    monochrome1: bool
    kvp: float
    exposure_mas: float
    exposure_scale: float
    noise_scale: float
    scatter_fraction: float
    blur_px: float
    range_compression: float
    edge_enhancement: float
    heel_strength: float
    collimation_mm: tuple[float, float, float, float]
    marker: str
    marker_corner: int
    calibration: str
    center_shift_mm: tuple[float, float]
    texture_seed: int
    knees: tuple[KneeSpec, ...] = field(default_factory=tuple)
    # Presentation processing, randomised per image (see synth/processing.py). ``range_compression``
    # (latitude) and ``edge_enhancement`` (gain of the ~0.6-2 mm bands) above belong to it too.
    fine_gain: float = 1.0
    detail_gain: float = 2.0
    large_gain: float = 1.3
    contrast_power: float = 0.7
    tone_slope: float = 5.0
    tone_offset: float = 0.55
    tone_gamma: float = 1.2
    black_level: float = 0.01
    white_level: float = 0.93
    clip_point: float = 1.5
    # Acquisition artefacts: anti-scatter grid lines (0 lines/cm = none), vignetting, and a bilinear
    # exposure gain over the field (top-left, top-right, bottom-left, bottom-right), as stitched or
    # unevenly calibrated panels show.
    grid_lines_per_cm: float = 0.0
    grid_strength: float = 0.0
    grid_phase: float = 0.0
    grid_vertical: bool = True
    vignetting: float = 0.0
    stitch_gains: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    # Follow-up films of an arthroplasty are often taken with the beam tilted until it runs along the
    # tibial tray's underside (fluoroscopically positioned), so that radiolucent lines under the tray
    # are seen edge-on; ``beam_alignment_error_deg`` is how far the radiographer missed.
    beam_along_tray: bool = False
    beam_alignment_error_deg: float = 0.0
    # What the film is framed on: "knee" (the joint at its centre), "tibia" (the whole lower leg, the knee
    # at the top edge) or "distal_leg" (the shafts and the ankle, no knee on the film).
    framing: str = "knee"
    # The collimator is rarely square to the detector: its shutters are turned by a few degrees about the
    # field's centre (0 = aligned, as on some films), and some films have a corner cut off at an angle
    # (``collimation_corner``: 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right, -1 none; the cut's
    # inward normal is ``collimation_corner_angle_deg`` from the row axis, its line
    # ``collimation_corner_mm`` from the corner). ``collimation_label`` burns the reader's text label
    # into the widest shutter's shadow. See ``detector.collimation_field``.
    collimation_angle_deg: float = 0.0
    collimation_corner: int = -1
    collimation_corner_mm: float = 0.0
    collimation_corner_angle_deg: float = 45.0
    collimation_label: bool = False


def _rng(config: SynthConfig, *parts: int) -> np.random.Generator:
    return np.random.default_rng([config.seed & 0xFFFFFFFF, *parts])


def _choice(rng: np.random.Generator, options: tuple[tuple[str, float], ...]) -> str:
    weights = np.array([w for _, w in options], dtype=float)
    return options[int(rng.choice(len(options), p=weights / weights.sum()))][0]


def pseudonym(config: SynthConfig, key: str) -> str:
    """A stable pseudonym for ``key`` (salted by seed and batch); looks nothing like a name."""
    digest = hashlib.sha256(f"orthoseg-synth|{config.seed}|{config.batch}|{key}".encode()).hexdigest()
    return "SYN" + digest[:10].upper()


def slot_is_paired(index: int, config: SynthConfig) -> bool:
    """True when case ``index`` and its slot partner are the AP and lateral of one knee."""
    if "AP" not in config.views or "LAT" not in config.views:
        return False
    if (index // 2) * 2 + 1 >= config.count:
        return False
    return bool(_rng(config, index // 2, 11).random() < config.paired_fraction)


def sample_category(rng: np.random.Generator, config: SynthConfig) -> str:
    names, probabilities = config.category_probabilities()
    return str(names[int(rng.choice(len(names), p=probabilities))])


def sample_knee(
    rng: np.random.Generator, config: SynthConfig, side: str, category: str | None = None
) -> KneeSpec:
    """Draw one knee: implant, anatomy, alignment and condition."""
    category = category or sample_category(rng, config)
    family = _choice(rng, FAMILIES[category])
    if category == "native":
        fixation = "none"
    elif family == "cr_porous_screws":
        fixation = "uncemented"
    elif category == "tka":
        fixation = "uncemented" if rng.random() < 0.15 else "cemented"
    elif category == "revision_tka":
        fixation = "hybrid" if rng.random() < 0.4 else "cemented"
    else:
        fixation = "uncemented" if family == "uka_mobile_bearing" and rng.random() < 0.3 else "cemented"
    female = bool(rng.random() < 0.6)
    bone_scale = float(rng.normal(0.93 if female else 1.04, 0.04))
    soft_scale = float(np.clip(rng.lognormal(0.05, 0.18), 0.75, 1.9))
    kl_grade = int(rng.choice(5, p=[0.25, 0.2, 0.2, 0.2, 0.15])) if category == "native" else 0
    # Native joint space: healthy ~5-7 mm; OA narrows the medial side first (lateral in valgus knees).
    js_medial = float(rng.normal(5.2, 0.6))
    js_lateral = float(rng.normal(6.0, 0.6))
    if kl_grade >= 2:
        narrowing = (kl_grade - 1) / 3.0 * rng.uniform(0.5, 1.0)
        if rng.random() < 0.8:
            js_medial = max(0.3, js_medial * (1 - 0.85 * narrowing))
        else:
            js_lateral = max(0.3, js_lateral * (1 - 0.85 * narrowing))
    if category not in ("native",):
        # Polyethylene (or native cartilage in the unreplaced compartment of a UKA) with wear.
        insert_mm = float(rng.choice([9.0, 10.0, 11.0, 12.0, 14.0, 16.0]))
        wear = float(rng.uniform(0.0, 3.0)) if rng.random() < 0.3 else 0.0
        wear_medial = rng.random() < 0.7
        if category.startswith("uka"):
            insert_mm = float(rng.choice([7.0, 8.0, 9.0, 10.0]))
            if category == "uka_medial":
                js_medial = insert_mm - (wear if wear_medial else 0.0)
            else:
                js_lateral = insert_mm - (wear if not wear_medial else 0.0)
        else:
            js_medial = insert_mm - (wear if wear_medial else 0.0)
            js_lateral = insert_mm - (0.0 if wear_medial else wear)
    lucency: dict[str, float] = {}
    if category != "native" and rng.random() < 0.35:
        for region in REGIONS:
            if rng.random() < 0.35:
                lucency[region] = round(float(rng.uniform(0.5, 3.0)), 2)
    implanted = category != "native"
    stemmed = category == "revision_tka"
    return KneeSpec(
        side=side,
        female=female,
        age_years=int(rng.integers(48, 90)),
        category=category,
        family=family,
        fixation=fixation,
        bone_scale=float(np.clip(bone_scale, 0.82, 1.15)),
        soft_scale=soft_scale,
        kl_grade=kl_grade,
        osteophytes=kl_grade >= 2,
        tibiofemoral_base_deg=float(rng.normal(5.5, 2.0)),
        # A stemmed component is one rigid piece with its stem, and the stem fills the canal: its flexion
        # (slope) and varus/valgus against the bone's axis are the design's (a few degrees), not a cut's.
        femoral_varus_valgus_deg=float(rng.normal(0.0, 0.7 if stemmed else 2.0)) if implanted else 0.0,
        femoral_flexion_deg=float(rng.uniform(0.0, 2.5 if stemmed else 10.0)) if implanted else 0.0,
        tibial_varus_valgus_deg=float(rng.normal(0.0, 0.7 if stemmed else 2.0)) if implanted else 0.0,
        tibial_slope_deg=float(rng.uniform(0.0, 3.0 if stemmed else 8.0)) if implanted else 0.0,
        joint_space_medial_mm=round(js_medial, 2),
        joint_space_lateral_mm=round(js_lateral, 2),
        subsidence_mm=round(float(rng.uniform(0.5, 4.0)), 2) if implanted and rng.random() < 0.12 else 0.0,
        lucency_mm=lucency,
        patella_resurfaced=bool(category in ("tka", "revision_tka") and rng.random() < 0.5),
        stem_length_mm=float(rng.choice([75.0, 100.0, 120.0, 150.0])) if category == "revision_tka" else 0.0,
        augments=bool(category == "revision_tka" and rng.random() < 0.5),
        cement_mu_per_cm=float(rng.uniform(0.55, 1.0)),
        femoral_size=float(rng.uniform(0.92, 1.08)),
        plateau_slope_native_deg=float(rng.normal(7.0, 2.0)),
        shaft_bow=float(rng.uniform(0.0, 1.0)),
    )


def _view(index: int, config: SynthConfig, paired: bool) -> str:
    if paired:
        return "AP" if index % 2 == 0 else "LAT"
    if "LAT" not in config.views:
        return "AP"
    if "AP" not in config.views:
        return "LAT"
    paired_share = config.paired_fraction
    unpaired_lateral = (config.lateral_fraction - 0.5 * paired_share) / max(1e-9, 1 - paired_share)
    return "LAT" if _rng(config, index, 13).random() < float(np.clip(unpaired_lateral, 0, 1)) else "AP"


def image_spec(index: int, config: SynthConfig) -> ImageSpec:
    """All decisions of case ``index`` (pure function of the index and the config)."""
    paired = slot_is_paired(index, config)
    view = _view(index, config, paired)
    patient_index = index // 2 if paired else index
    patient_key = f"p{patient_index}" if paired else f"i{index}"
    knee_rng = _rng(config, index // 2, 17) if paired else _rng(config, index, 19)
    side = "R" if knee_rng.random() < 0.5 else "L"
    knee = sample_knee(knee_rng, config, side)
    rng = _rng(config, index, 23)
    bilateral = view == "AP" and rng.random() < config.bilateral_fraction
    knees: tuple[KneeSpec, ...] = (knee,)
    if bilateral:
        other_side = "L" if side == "R" else "R"
        other_category = knee.category if rng.random() < 0.4 else "native"
        knees = (knee, sample_knee(rng, config, other_side, other_category))
    low_mm, high_mm = sorted(config.pixel_spacing_mm)
    spacing = float(rng.uniform(low_mm, high_mm))
    # Keep enough anatomy in view: >= ~190 mm along the leg (more with stems), ~400 mm across two knees.
    need_long_mm = 190.0 + (1.2 * knee.stem_length_mm if knee.category == "revision_tka" else 0.0)
    need_long_mm = min(need_long_mm, 330.0)
    # Clinics also send long films (14 x 17 in cassettes, standing views): 240-400 mm along the leg.
    long_rng = _rng(config, index, 41)
    if long_rng.random() < config.long_film_fraction:
        need_long_mm = max(need_long_mm, float(long_rng.uniform(240.0, 400.0)))
    aspect = float(rng.uniform(0.72, 0.85))
    leg = None
    if view == "AP" and not bilateral:
        leg = leg_framing(_rng(config, index, 47), config.leg_film_fraction, knee.bone_scale)
    if bilateral:
        spacing = max(spacing, 400.0 / config.image_px)
        rows, columns = round(config.image_px * aspect), config.image_px
    elif leg is not None:
        spacing = max(spacing, leg.field_mm * MAX_MAGNIFICATION / config.image_px)
        rows, columns = config.image_px, round(config.image_px * leg.aspect)
    else:
        spacing = max(spacing, need_long_mm / config.image_px)
        rows, columns = config.image_px, round(config.image_px * aspect)
    # Lateral films are taken at 20-45 deg of flexion (standing APs nearly straight).
    flexion = float(rng.uniform(0.0, 8.0)) if view == "AP" else float(rng.uniform(20.0, 45.0))
    collimation = _four_floats(rng.uniform(0, 25, 4) * (rng.random(4) < 0.5))
    marker = "none" if rng.random() < 0.1 else ("LR" if bilateral else side)
    calibration = str(rng.choice(["none", "sphere", "ruler"], p=[0.7, 0.2, 0.1]))
    return ImageSpec(
        index=index,
        view=view,
        slot_paired=paired,
        bilateral=bilateral,
        patient_key=patient_key,
        study_key=f"{patient_key}-s0",
        rotation_deg=float(rng.normal(0.0, 4.0)),
        tilt_deg=float(rng.normal(0.0, 2.0)),
        flexion_deg=flexion,
        spacing_mm=round(spacing, 4),
        magnification=float(rng.uniform(1.05, MAX_MAGNIFICATION)),
        rows=int(rows),
        columns=int(columns),
        monochrome1=bool(rng.random() < config.monochrome1_fraction),
        kvp=float(rng.uniform(55, 70)),
        exposure_mas=float(rng.uniform(3, 10)),
        exposure_scale=float(rng.lognormal(0.0, 0.25)),
        noise_scale=float(rng.uniform(0.6, 1.6)),
        scatter_fraction=float(rng.uniform(0.15, 0.35)),
        blur_px=float(rng.uniform(0.5, 0.7)),
        range_compression=float(rng.uniform(0.45, 0.9)),
        edge_enhancement=float(rng.uniform(1.3, 3.2)),
        heel_strength=float(rng.uniform(0.0, 0.25)),
        collimation_mm=collimation,
        marker=marker,
        marker_corner=int(rng.integers(0, 4)),
        calibration=calibration,
        center_shift_mm=(
            float(rng.normal(0, 8)) - (leg.center_below_knee_mm if leg is not None else 0.0),
            float(rng.normal(0, 8)),
        ),
        texture_seed=int(rng.integers(0, 2**31 - 1)),
        knees=knees,
        framing="knee" if leg is None else leg.framing,
        **_appearance(_rng(config, index, 31)),
        **_beam_alignment(_rng(config, index, 37), knee.category),
        **_shutters(_rng(config, index, 43)),
    )


def _four_floats(values: np.ndarray) -> tuple[float, float, float, float]:
    """The first four values as a tuple of Python floats."""
    return float(values[0]), float(values[1]), float(values[2]), float(values[3])


class _BeamAlignment(TypedDict):
    beam_along_tray: bool
    beam_alignment_error_deg: float


class _Shutters(TypedDict):
    collimation_angle_deg: float
    collimation_corner: int
    collimation_corner_mm: float
    collimation_corner_angle_deg: float
    collimation_label: bool


class _Appearance(TypedDict):
    fine_gain: float
    detail_gain: float
    large_gain: float
    contrast_power: float
    tone_slope: float
    tone_offset: float
    tone_gamma: float
    black_level: float
    white_level: float
    clip_point: float
    grid_lines_per_cm: float
    grid_strength: float
    grid_phase: float
    grid_vertical: bool
    vignetting: float
    stitch_gains: tuple[float, float, float, float]


def _beam_alignment(rng: np.random.Generator, category: str) -> _BeamAlignment:
    """Whether the beam is aligned to the tibial tray (70 % of implant films), and its miss in degrees.

    Separate random stream: the other draws stay put.
    """
    aligned = category != "native" and rng.random() < 0.7
    return {
        "beam_along_tray": bool(aligned),
        "beam_alignment_error_deg": float(rng.normal(0.0, 0.5)) if aligned else 0.0,
    }


def _shutters(rng: np.random.Generator) -> _Shutters:
    """The collimator's rotation (a third of the films square to the detector, the rest within +-6
    degrees), an oblique corner cut on one film in eight, and a burned-in label in the shadow on one in
    four. Separate random stream: the other draws stay put."""
    aligned = rng.random() < 0.35
    angle = float(rng.uniform(-6.0, 6.0))
    corner = int(rng.integers(0, 4)) if rng.random() < 0.125 else -1
    corner_mm = float(rng.uniform(15.0, 45.0))
    corner_angle = float(rng.uniform(30.0, 60.0))
    label = bool(rng.random() < 0.25)
    return {
        "collimation_angle_deg": 0.0 if aligned else angle,
        "collimation_corner": corner,
        "collimation_corner_mm": corner_mm if corner >= 0 else 0.0,
        "collimation_corner_angle_deg": corner_angle if corner >= 0 else 45.0,
        "collimation_label": label,
    }


def _appearance(rng: np.random.Generator) -> _Appearance:
    """Domain randomisation of the presentation look and of acquisition artefacts.

    ``strength`` runs from a mild CR-like chain (0) to a strong DR-like one (1, MUSICA / UNIQUE style);
    the bands, tone curve and levels are jittered around it independently, so that training sees a
    wider range of looks than any one vendor. Separate random stream: the other draws stay put.
    """
    strength = float(rng.beta(2.5, 1.5))
    grid = rng.random() < 0.25
    stitched = rng.random() < 0.15
    return {
        "fine_gain": float(rng.uniform(0.8, 1.3)),
        "detail_gain": float(1.2 + 1.8 * strength + rng.normal(0.0, 0.2)),
        "large_gain": float(rng.uniform(0.8, 1.3)),
        "contrast_power": float(rng.uniform(0.5, 0.9)),
        "tone_slope": float(rng.uniform(4.0, 8.0)),
        "tone_offset": float(rng.uniform(0.3, 0.5)),
        "tone_gamma": float(np.exp(rng.normal(0.05, 0.15))),
        "black_level": float(rng.uniform(0.0, 0.04)),
        "white_level": float(rng.uniform(0.86, 0.95)),
        "clip_point": float(rng.uniform(0.85, 1.0)) if rng.random() < 0.15 else 1.5,
        "grid_lines_per_cm": float(rng.uniform(40.0, 80.0)) if grid else 0.0,
        "grid_strength": float(rng.uniform(0.015, 0.06)) if grid else 0.0,
        "grid_phase": float(rng.uniform(0.0, 2.0 * np.pi)),
        "grid_vertical": bool(rng.random() < 0.7),
        "vignetting": float(rng.uniform(0.05, 0.25)) if rng.random() < 0.3 else 0.0,
        "stitch_gains": _four_floats(rng.uniform(0.85, 1.15, 4)) if stitched else (1.0, 1.0, 1.0, 1.0),
    }
