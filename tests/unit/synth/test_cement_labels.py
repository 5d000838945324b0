"""Cement is labelled where a reader could outline it: under the component, and thick enough along the ray."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from scipy import ndimage

from orthoseg.labels import BY_NAME
from orthoseg.synth import SynthConfig
from orthoseg.synth.case import knee_camera
from orthoseg.synth.geometry import Camera
from orthoseg.synth.knee import CEMENT_VISIBLE_PATH_MM, KneeScene, build_knee
from orthoseg.synth.scenario import image_spec
from orthoseg.synth.solids import Solid, solid_length


def _scene(view: str, family: str = "cr_pegged") -> tuple[KneeScene, Camera]:
    config = SynthConfig(count=1, seed=5, image_px=640, views=(view,), bilateral_fraction=0.0)
    spec = image_spec(0, config)
    knee = replace(spec.knees[0], category="tka", family=family, fixation="cemented", patella_resurfaced=True)
    scene = build_knee(knee, spec.flexion_deg, seed=3)
    return scene, knee_camera(spec, knee.side, spec.spacing_mm / spec.magnification, 0.0)


def _image(solid: Solid, camera: Camera, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(label mask, path length in mm) of one solid on the camera's grid."""
    length = np.zeros(camera.shape, dtype=np.float32)
    field = solid_length(solid, camera)
    if field is not None:
        length[field.r0 : field.r1, field.c0 : field.c1] = field.values
    return length > threshold, length


def _cement(scene: KneeScene, name: str) -> Solid:
    return next(s for s in scene.solids if s.name == name)


@pytest.mark.parametrize("view", ["AP", "LAT"])
def test_every_cement_solid_is_labelled_only_where_its_ray_crosses_enough_cement(view: str) -> None:
    scene, camera = _scene(view)
    cements = [s for s in scene.solids if s.channel == BY_NAME["cement"].channel]
    assert {s.name for s in cements} >= {"tibial cement", "femoral cement", "patellar cement"}
    for solid in cements:
        assert solid.label_min_path_mm == CEMENT_VISIBLE_PATH_MM, solid.name
        mask, length = _image(solid, camera, solid.label_min_path_mm)
        assert np.all(length[mask] >= CEMENT_VISIBLE_PATH_MM), solid.name


def test_the_patellar_mantle_is_labelled_edge_on_and_not_en_face() -> None:
    """1.8 mm of cement on the cut patella: crossed edge-on on a lateral film, en face on an AP film."""
    ap_scene, ap_camera = _scene("AP")
    ap_mask, ap_length = _image(_cement(ap_scene, "patellar cement"), ap_camera, CEMENT_VISIBLE_PATH_MM)
    assert (ap_length > 0.02).sum() > 1000  # the sheet is on the film ...
    assert ap_mask.sum() < 0.02 * (ap_length > 0.02).sum()  # ... but too faint to label
    lat_scene, lat_camera = _scene("LAT")
    lat_mask, _ = _image(_cement(lat_scene, "patellar cement"), lat_camera, CEMENT_VISIBLE_PATH_MM)
    assert lat_mask.sum() > 200


@pytest.mark.parametrize("family", ["cr_pegged", "ps_box_keel"])
def test_femoral_cement_lies_under_the_component(family: str) -> None:
    """On a lateral film the femoral mantle runs along the inside of the component's "J", not up the
    posterior cut above the posterior condyles nor up the anterior cut above the flange."""
    scene, camera = _scene("LAT", family)
    cement, _ = _image(_cement(scene, "femoral cement"), camera, CEMENT_VISIBLE_PATH_MM)
    metal = np.zeros(camera.shape, dtype=bool)
    for solid in scene.femoral.metal:
        metal |= _image(solid, camera, 0.02)[0]
    assert cement.sum() > 500
    reach_px = 3.0 / camera.spacing_mm
    distance_to_metal = ndimage.distance_transform_edt(~metal)
    assert np.percentile(distance_to_metal[cement], 99) <= reach_px
