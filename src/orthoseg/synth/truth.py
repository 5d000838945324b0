"""Ground truth of a simulated radiograph, computed from the geometry that made it (JSON-ready).

Angles are measured on the image, as a reader would: 3D axes and component lines are projected with
the image's camera, so leg rotation and flexion change them exactly as they change the picture.
Conventions (Knee Society Roentgenographic Evaluation System style):

* ``tibiofemoral_angle_deg`` (AP): between the femoral and tibial anatomical axes, valgus positive.
* ``femoral_component_angle_deg`` (AP, alpha): between the femoral anatomical axis (proximal) and the
  component's distal condylar line, measured medially (ideal ~95-97).
* ``tibial_component_angle_deg`` (AP, beta): between the tibial anatomical axis (distal) and the tray,
  measured medially (90 = neutral, < 90 = varus).
* ``femoral_flexion_angle_deg`` (lateral, gamma): flexion of the component relative to the femoral axis.
* ``tibial_slope_angle_deg`` (lateral, delta): between the tibial axis (distal) and the tray, measured
  posteriorly (90 - posterior slope).
"""

from __future__ import annotations

import numpy as np

from orthoseg.synth.geometry import Camera
from orthoseg.synth.knee import KneeScene
from orthoseg.synth.solids import Solid, solid_length
from orthoseg.synth.span_cache import SpanCache

TRUTH_SCHEMA = "orthoseg-synth-truth/1"

# Knee Society radiographic zones of each view and the 3D interface regions behind them.
ZONES: dict[str, dict[str, tuple[str, ...]]] = {
    "AP": {
        "femur_1M": ("distal_M",),
        "femur_1L": ("distal_L",),
        "femur_2": ("femoral_stem",),
        "tibia_1M": ("tray_MA", "tray_MP"),
        "tibia_1L": ("tray_LA", "tray_LP"),
        "tibia_2M": ("stem_M",),
        "tibia_2L": ("stem_L",),
        "tibia_3": ("stem_tip",),
    },
    "LAT": {
        "femur_1": ("anterior",),
        "femur_2": ("distal_M", "distal_L"),
        "femur_3": ("posterior_M", "posterior_L"),
        "femur_4": ("femoral_stem",),
        "tibia_1": ("tray_MA", "tray_LA"),
        "tibia_2": ("tray_MP", "tray_LP"),
        "tibia_3": ("stem_M", "stem_L", "stem_tip"),
    },
}


def _angle_2d(u: np.ndarray, v: np.ndarray) -> float:
    """Unsigned angle (degrees) between two image directions."""
    cos = float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v)))
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def _tilt(vector: np.ndarray, toward: np.ndarray, camera: Camera) -> float:
    """Signed angle (degrees) of ``vector`` from the image's 'up' towards the image of ``toward``."""
    up = camera.direction_2d(np.array([0.0, 0.0, 1.0]))
    up /= np.linalg.norm(up)
    side = camera.direction_2d(toward)
    side = side - (side @ up) * up
    side /= np.linalg.norm(side) + 1e-12
    v = camera.direction_2d(vector)
    return float(np.degrees(np.arctan2(v @ side, v @ up)))


def knee_angles(scene: KneeScene, camera: Camera, view: str) -> dict[str, float | None]:
    """Angles of one knee as seen on this image (None where a component is absent or the view differs)."""
    bones = {bone.name: bone for bone in scene.bones}
    # The anatomical axes are the diaphyses' centrelines as rendered (the femur's follows its bow).
    femur_axis = scene.femur.direction(
        bones["femur"].shaft_direction if "femur" in bones else (0.0, 0.0, 1.0)
    )
    tibia_axis = scene.knee.direction(bones["tibia"].shaft_direction if "tibia" in bones else (0.0, 0.0, 1.0))
    lateral = scene.knee.direction((-1.0, 0.0, 0.0))
    anterior = scene.knee.direction((0.0, 1.0, 0.0))
    out: dict[str, float | None] = {
        "tibiofemoral_angle_deg": None,
        "femoral_component_angle_deg": None,
        "tibial_component_angle_deg": None,
        "femoral_flexion_angle_deg": None,
        "tibial_slope_angle_deg": None,
    }
    medial = scene.knee.direction((1.0, 0.0, 0.0))
    if view == "AP":
        out["tibiofemoral_angle_deg"] = _tilt(femur_axis, lateral, camera) - _tilt(
            tibia_axis, lateral, camera
        )
        if scene.femoral is not None:
            line = camera.direction_2d(scene.femoral.frame.direction((1.0, 0.0, 0.0)))
            line *= np.sign(line @ camera.direction_2d(medial))
            out["femoral_component_angle_deg"] = _angle_2d(camera.direction_2d(femur_axis), line)
        if scene.tibial is not None:
            line = camera.direction_2d(scene.tibial.frame.direction((1.0, 0.0, 0.0)))
            line *= np.sign(line @ camera.direction_2d(medial))
            out["tibial_component_angle_deg"] = _angle_2d(camera.direction_2d(-tibia_axis), line)
    else:
        if scene.femoral is not None:
            comp_axis = scene.femoral.frame.direction((0.0, 0.0, 1.0))
            out["femoral_flexion_angle_deg"] = _tilt(femur_axis, anterior, camera) - _tilt(
                comp_axis, anterior, camera
            )
        if scene.tibial is not None:
            line = camera.direction_2d(scene.tibial.frame.direction((0.0, -1.0, 0.0)))
            out["tibial_slope_angle_deg"] = _angle_2d(camera.direction_2d(-tibia_axis), line)
    return {k: (round(v, 3) if v is not None else None) for k, v in out.items()}


# An interface plane counts as seen edge-on when the beam runs within this angle of it: over the ~25-35 mm
# a tray quadrant or a femoral cut spans along the beam, 1 degree spreads a line by at most ~0.6 mm.
EDGE_ON_DEG = 1.0
# A region counts as hidden when less than this share of its probe layer's projected core (rays running
# through at least half the layer's typical depth) lies off the metal components on the film.
MIN_VISIBLE_FRACTION = 0.5
# A line shows only where rays run far enough through it to displace a visible amount of bone: the probe
# (a 1 mm layer) must be crossed over at least this length (mm) by its most tangent rays. Trays and cuts
# seen edge-on give 20-70 mm, stem mantles ~9-13 mm; the mantle of a UKA keel's thin peg ~5 mm does not.
MIN_PROBE_PATH_MM = 6.0


def _visible_fraction(probe: Solid, camera: Camera, metal: np.ndarray, cache: SpanCache | None) -> float:
    """Share of a probe layer's projected core that is not behind metal (0 when it is off the film, or
    when no ray runs ``MIN_PROBE_PATH_MM`` through it)."""
    length = solid_length(probe, camera, cache)
    if length is None or not np.any(length.values > 0):
        return 0.0
    values = length.values
    longest = float(np.percentile(values[values > 0], 95))
    if longest < MIN_PROBE_PATH_MM:
        return 0.0
    core = values >= 0.5 * longest
    behind = metal[length.r0 : length.r1, length.c0 : length.c1]
    return float(np.mean(~behind[core]))


def edge_on_regions(scene: KneeScene, camera: Camera) -> list[str]:
    """Interface regions the beam sees edge-on (within ``EDGE_ON_DEG`` of their plane; an anchor's
    mantle always): the only ones whose probes ``assessable_regions`` traces."""
    beam = np.asarray(camera.beam, dtype=np.float64)
    beam = beam / np.linalg.norm(beam)
    limit = np.sin(np.radians(EDGE_ON_DEG))
    out = []
    for region in scene.lucency_mm:
        normal = scene.interface_normals.get(region)
        if normal is None or abs(float(normal @ beam)) <= limit:
            out.append(region)
    return out


def assessable_regions(
    scene: KneeScene,
    camera: Camera,
    view: str,
    metal: np.ndarray | None = None,
    cache: SpanCache | None = None,
) -> set[str]:
    """Interface regions whose radiolucent line this film can show at its true width.

    A planar interface must be seen edge-on (beam within ``EDGE_ON_DEG`` of its plane): a tilted one
    smears any line over several millimetres, and readers call such zones not assessable. An anchor
    mantle is always edge-on at its silhouette. With the film's ``metal`` mask, a region is also left out
    when the components hide it (``MIN_VISIBLE_FRACTION``: a keel's fins in front of its stem on AP,
    pegs standing one behind the other, a femoral component's flange and posterior condyles in front of
    the distal cut on AP) or when rays cross too little of it to show (``MIN_PROBE_PATH_MM``).
    """
    out = set()
    for region in edge_on_regions(scene, camera):
        probe = scene.interface_probes.get(region)
        if metal is not None and probe is not None:
            if _visible_fraction(probe, camera, metal, cache) < MIN_VISIBLE_FRACTION:
                continue
        out.add(region)
    return out


def _zone_regions(scene: KneeScene, view: str) -> dict[str, tuple[str, ...]]:
    """Zones of this view and their regions; a UKA's tray and runner lie in one compartment."""
    zones = dict(ZONES[view])
    category = scene.spec.category
    if view == "AP" and category.startswith("uka"):
        side = "M" if category == "uka_medial" else "L"
        other = "L" if side == "M" else "M"
        zones[f"tibia_1{side}"] = ("tray_MA", "tray_MP", "tray_LA", "tray_LP")
        zones[f"femur_1{side}"] = ("distal_M", "distal_L")
        zones.pop(f"tibia_1{other}")
        zones.pop(f"femur_1{other}")
    return zones


def zone_widths(
    scene: KneeScene,
    view: str,
    camera: Camera,
    metal: np.ndarray | None = None,
    cache: SpanCache | None = None,
) -> dict[str, float]:
    """Radiolucent-line width (mm) per Knee Society zone of this view: zones the implant has and the
    film can show (see ``assessable_regions``); a zone with any hidden or smeared region is left out."""
    assessable = assessable_regions(scene, camera, view, metal, cache)
    widths: dict[str, float] = {}
    for zone, regions in _zone_regions(scene, view).items():
        own = [r for r in regions if r in scene.lucency_mm]
        if not own or any(r not in assessable for r in own):
            continue
        widths[zone] = round(max(scene.lucency_mm[r] for r in own), 2)
    return widths


def knee_truth(
    scene: KneeScene,
    camera: Camera,
    view: str,
    metal: np.ndarray | None = None,
    cache: SpanCache | None = None,
) -> dict[str, object]:
    """Everything measurable about one knee on this image (``metal``: the film's metal mask, which
    decides which radiolucent-line zones are visible; ``cache``: the spans already traced on ``camera``
    for the film, which the interface probes reuse)."""
    spec = scene.spec
    return {
        "laterality": spec.side,
        "category": spec.category,
        "design_family": spec.family,
        "fixation": spec.fixation,
        "kl_grade": spec.kl_grade,
        "osteophytes": spec.osteophytes,
        "patella_resurfaced": spec.patella_resurfaced,
        "augments": spec.augments,
        "stem_length_mm": spec.stem_length_mm,
        "subsidence_mm": spec.subsidence_mm,
        "joint_space_medial_mm": round(spec.joint_space_medial_mm, 2),
        "joint_space_lateral_mm": round(spec.joint_space_lateral_mm, 2),
        "radiolucent_line_mm": zone_widths(scene, view, camera, metal, cache),
        **knee_angles(scene, camera, view),
    }
