"""One simulated case: scenario -> 3D knees -> projection -> detector -> DICOM DX, masks and truth."""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import numpy as np

from orthoseg.labels import BY_NAME, STRUCTURES
from orthoseg.synth.config import SynthCase, SynthConfig
from orthoseg.synth.detector import expose
from orthoseg.synth.dicom import DicomIdentity, build_dx_dataset, seeded_uid
from orthoseg.synth.geometry import Camera, rotation
from orthoseg.synth.knee import KneeScene, build_knee
from orthoseg.synth.leg_framing import FILM_CENTRE_ABOVE_PLATEAU_MM
from orthoseg.synth.objects import place_marker, place_ruler, place_sphere
from orthoseg.synth.physics import texture_field
from orthoseg.synth.render import project
from orthoseg.synth.scenario import ImageSpec, image_spec, pseudonym
from orthoseg.synth.span_cache import SpanCache
from orthoseg.synth.truth import TRUTH_SCHEMA, edge_on_regions, knee_truth

logger = logging.getLogger(__name__)

KNEE_SEPARATION_MM = 190.0  # centre-to-centre distance of the knees on a standing bilateral film
BASE_DATE = np.datetime64("2023-01-02")


def case_uid(index: int, config: SynthConfig) -> str:
    """SOPInstanceUID of case ``index`` (cheap: no simulation)."""
    return seeded_uid(config.seed, config.batch, index, "image")


def case_category(index: int, config: SynthConfig) -> str:
    """Implant category of case ``index`` (cheap: no simulation)."""
    return image_spec(index, config).knees[0].category


def _int_hash(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:8], "little")


def knee_camera(
    spec: ImageSpec,
    side: str,
    spacing_mm: float,
    column_offset_mm: float,
    tray_normal: np.ndarray | None = None,
) -> Camera:
    """The camera of one knee: view, leg rotation and a slight in-plane tilt, sharing the image grid.

    With ``spec.beam_along_tray`` and the tray's underside normal (knee coordinates), the beam is tilted
    about the film's horizontal axis until it runs along the tray's underside (plus the radiographer's
    miss), as for fluoroscopically positioned follow-up films.
    """
    sigma = 1.0 if side == "R" else -1.0
    if spec.view == "AP":
        e_u, beam = np.array([sigma, 0.0, 0.0]), np.array([0.0, -1.0, 0.0])
    else:
        e_u, beam = np.array([0.0, sigma, 0.0]), np.array([-sigma, 0.0, 0.0])
    e_v = np.array([0.0, 0.0, -1.0])
    turn = rotation("t", spec.rotation_deg * sigma)
    e_u, beam = turn @ e_u, turn @ beam
    if spec.beam_along_tray and tray_normal is not None:
        normal = np.asarray(tray_normal, dtype=np.float64)
        phi = np.arctan(-float(normal @ beam) / float(normal @ e_v)) + np.radians(
            spec.beam_alignment_error_deg
        )
        beam, e_v = np.cos(phi) * beam + np.sin(phi) * e_v, -np.sin(phi) * beam + np.cos(phi) * e_v
    # Lateral films are framed with the femur and the tibia leaning equally from vertical.
    tilt = np.radians(spec.tilt_deg + (0.5 * spec.flexion_deg * sigma if spec.view == "LAT" else 0.0))
    e_u, e_v = np.cos(tilt) * e_u + np.sin(tilt) * e_v, -np.sin(tilt) * e_u + np.cos(tilt) * e_v
    center = np.array([0.0, -6.0 if spec.view == "LAT" else 0.0, FILM_CENTRE_ABOVE_PLATEAU_MM])
    i0 = (spec.rows - 1) / 2.0 + spec.center_shift_mm[0] / spacing_mm
    j0 = (spec.columns - 1) / 2.0 + (spec.center_shift_mm[1] + column_offset_mm) / spacing_mm
    return Camera(center, e_u, e_v, beam, spacing_mm, (spec.rows, spec.columns), i0, j0)


def _identity(spec: ImageSpec, config: SynthConfig, uid: str) -> DicomIdentity:
    knee = spec.knees[0]
    rng = np.random.default_rng(_int_hash(config.seed, config.batch, spec.patient_key, "identity"))
    study_day = BASE_DATE + np.timedelta64(int(rng.integers(0, 700)), "D")
    birth = study_day - np.timedelta64(int(knee.age_years * 365.25 + rng.integers(0, 365)), "D")
    patient = pseudonym(config, spec.patient_key)
    return DicomIdentity(
        patient_id=patient,
        patient_name=f"SYNTH^{patient[3:]}",
        patient_sex="F" if knee.female else "M",
        birth_date=str(birth).replace("-", ""),
        study_uid=seeded_uid(config.seed, config.batch, spec.study_key, "study"),
        series_uid=seeded_uid(config.seed, config.batch, spec.study_key, "series"),
        sop_uid=uid,
        study_date=str(study_day).replace("-", ""),
        study_time="".join(f"{int(v):02d}" for v in (rng.integers(7, 18), *rng.integers(0, 60, 2))),
        accession=f"ACC{_int_hash(config.seed, config.batch, spec.study_key) % 10**9:09d}",
        study_id=str(_int_hash(config.seed, spec.study_key, "id") % 10**5),
        series_number=1,
        instance_number=(spec.index % 2 + 1) if spec.slot_paired else 1,
    )


def render_case(
    spec: ImageSpec, config: SynthConfig
) -> tuple[np.ndarray, np.ndarray, list[KneeScene], list[SpanCache], dict[str, Any]]:
    """Pixels (12-bit presentation values), masks, scenes, the spans traced on each knee's camera (for
    the truth) and burned-in objects of a case."""
    spacing_obj = spec.spacing_mm / spec.magnification
    scenes, cameras = [], []
    for knee in spec.knees:
        offset = 0.0
        if spec.bilateral:
            offset = (-0.5 if knee.side == "R" else 0.5) * KNEE_SEPARATION_MM
        seed = _int_hash(config.seed, spec.patient_key, knee.side, "design")
        scene = build_knee(knee, spec.flexion_deg, seed)
        scenes.append(scene)
        tray_normal = scene.tibial.frame.direction((0.0, 0.0, 1.0)) if scene.tibial is not None else None
        cameras.append(knee_camera(spec, knee.side, spacing_obj, offset, tray_normal))
    rng = np.random.default_rng([config.seed & 0xFFFFFFFF, spec.index, 29])
    texture = texture_field((spec.rows, spec.columns), rng, spacing_obj)
    caches = [SpanCache(camera) for camera in cameras]
    for scene, cache in zip(scenes, caches, strict=True):
        # The solids and the truth's interface probes cut the same bones: trace those once.
        probes = [scene.interface_probes.get(r) for r in edge_on_regions(scene, cache.camera)]
        cache.plan([*scene.solids, *(p for p in probes if p is not None)])
    projection = project(scenes, cameras, texture, bone_factor=config.bone_subsample, caches=caches)
    line = projection.line_integral
    objects: dict[str, Any] = {}
    from orthoseg.synth.detector import collimation_field, placement_box

    field = collimation_field(line.shape, spec, spec.spacing_mm)
    field = placement_box(field)  # calibration objects and markers go inside the exposed field
    if spec.calibration == "sphere":
        objects["calibration"] = place_sphere(line, spacing_obj, projection.body, field, rng)
    elif spec.calibration == "ruler":
        objects["calibration"] = place_ruler(line, spacing_obj, projection.body, field, rng)
    if spec.marker != "none":
        objects["marker"] = place_marker(line, spec.marker, spec.marker_corner, spacing_obj, field, rng)
    metal = (
        projection.masks[BY_NAME["femoral_component"].channel]
        | projection.masks[BY_NAME["tibial_component"].channel]
    )
    exposure = expose(line, projection.body, metal, spec, spec.spacing_mm, rng)
    masks = projection.masks & exposure.field[None]
    # Cement is labelled where it can be seen: a ray that crosses a metal component is saturated by it,
    # so the mantle behind the component (most of the femoral mantle on an AP film) leaves no trace on the
    # film, and neither an annotator nor a model can place it there.
    masks[BY_NAME["cement"].channel] &= ~metal
    objects["window"] = exposure.window
    return exposure.values, masks, scenes, caches, objects


def generate_case(index: int, config: SynthConfig) -> SynthCase:
    """Simulate radiograph ``index`` of the data set described by ``config`` (pure and deterministic)."""
    spec = image_spec(index, config)
    values, masks, scenes, caches, objects = render_case(spec, config)
    uid = case_uid(index, config)
    identity = _identity(spec, config, uid)
    primary = spec.knees[0]
    laterality = "B" if spec.bilateral else primary.side
    stored = (4095 - values) if spec.monochrome1 else values
    window = objects.pop("window")
    if spec.monochrome1:
        window = (4095 - window[0], window[1])
    dataset = build_dx_dataset(
        stored.astype(np.uint16),
        identity,
        spacing_mm=spec.spacing_mm,
        magnification=spec.magnification,
        view=spec.view,
        laterality=laterality,
        monochrome1=spec.monochrome1,
        window=window,
        kvp=spec.kvp,
        exposure_mas=spec.exposure_mas,
        series_description=(
            f"TIBIA FIBULA {spec.view}"
            if spec.framing != "knee"
            else f"KNEE {spec.view}" + (" BILATERAL STANDING" if spec.bilateral else "")
        ),
        body_part="KNEE" if spec.framing == "knee" else "LEG",
    )
    metal = masks[BY_NAME["femoral_component"].channel] | masks[BY_NAME["tibial_component"].channel]
    knees = [
        knee_truth(scene, cache.camera, spec.view, metal, cache)
        for scene, cache in zip(scenes, caches, strict=True)
    ]
    spacing_obj = round(spec.spacing_mm / spec.magnification, 4)
    truth: dict[str, Any] = {
        "schema": TRUTH_SCHEMA,
        "sop_instance_uid": uid,
        "study_instance_uid": identity.study_uid,
        "patient_pseudonym": identity.patient_id,
        "view": spec.view,
        "view_position": "AP" if spec.view == "AP" else "LL",
        "bilateral": spec.bilateral,
        "framing": spec.framing,
        **knees[0],
        "laterality": laterality,
        "implant_category": primary.category,
        "pixel_spacing_mm": [spacing_obj, spacing_obj],
        "imager_pixel_spacing_mm": [spec.spacing_mm, spec.spacing_mm],
        "magnification": round(spec.magnification, 4),
        "rows": spec.rows,
        "columns": spec.columns,
        "photometric_interpretation": "MONOCHROME1" if spec.monochrome1 else "MONOCHROME2",
        "flexion_deg": round(spec.flexion_deg, 2),
        "leg_rotation_deg": round(spec.rotation_deg, 2),
        "structures_present": [s.name for s in STRUCTURES if masks[s.channel].any()],
        "knees": knees,
        **objects,
    }
    return SynthCase(dataset=dataset, masks=masks, truth=truth, sop_instance_uid=uid)
