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
    femur_axis = scene.femur.direction((0.0, 0.0, 1.0))
    tibia_axis = scene.knee.direction((0.0, 0.0, 1.0))
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


def zone_widths(scene: KneeScene, view: str) -> dict[str, float]:
    """Radiolucent-line width (mm) per Knee Society zone of this view (zones the implant has)."""
    widths: dict[str, float] = {}
    for zone, regions in ZONES[view].items():
        present = [scene.lucency_mm[r] for r in regions if r in scene.lucency_mm]
        if present:
            widths[zone] = round(max(present), 2)
    return widths


def knee_truth(scene: KneeScene, camera: Camera, view: str) -> dict[str, object]:
    """Everything measurable about one knee on this image."""
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
        "radiolucent_line_mm": zone_widths(scene, view),
        **knee_angles(scene, camera, view),
    }
