"""Geometry invariants: exact chords, masks inside the image, implants inside the bone they fix to."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from orthoseg.labels import BY_NAME
from orthoseg.synth import SynthCase
from orthoseg.synth.geometry import (
    Camera,
    Frame,
    Lobe,
    Plane,
    box,
    intersect,
    make_profile,
    rotation,
    trace,
    union_length,
)

AP_CAMERA = Camera(
    np.zeros(3),
    np.array([1.0, 0, 0]),
    np.array([0, 0, -1.0]),
    np.array([0, -1.0, 0]),
    0.25,
    (240, 240),
    119.5,
    119.5,
)
LAT_CAMERA = Camera(
    np.zeros(3),
    np.array([0, 1.0, 0]),
    np.array([0, 0, -1.0]),
    np.array([1.0, 0, 0]),
    0.25,
    (240, 240),
    119.5,
    119.5,
)


def ellipsoid(frame: Frame, radii: tuple[float, float, float]) -> Lobe:
    rm, ra, rt = radii
    shape = lambda t: np.sqrt(np.clip(1 - (t / rt) ** 2, 0, None))  # noqa: E731
    return Lobe(
        frame, make_profile(-rt, rt, 0.02, 0.0, 0.0, lambda t: rm * shape(t), lambda t: ra * shape(t))
    )


@pytest.mark.parametrize("camera", [AP_CAMERA, LAT_CAMERA], ids=["AP", "LAT"])
def test_ellipsoid_chords_are_exact(camera: Camera) -> None:
    radii = (12.0, 7.0, 20.0)
    span = trace(ellipsoid(Frame.identity(), radii), camera)
    length = span.length()
    depth = radii[1] if camera is AP_CAMERA else radii[0]
    assert length.max() == pytest.approx(2 * depth, abs=0.05)
    volume = length.sum() * camera.spacing_mm**2
    assert volume == pytest.approx(4 / 3 * np.pi * np.prod(radii), rel=2e-3)


def test_rotated_solids_keep_their_volume() -> None:
    radii = (10.0, 6.0, 18.0)
    frame = Frame(np.array([3.0, -2.0, 4.0]), rotation("t", 25.0) @ rotation("m", 12.0) @ rotation("a", -7.0))
    volume = trace(ellipsoid(frame, radii), AP_CAMERA).length().sum() * AP_CAMERA.spacing_mm**2
    assert volume == pytest.approx(4 / 3 * np.pi * np.prod(radii), rel=5e-3)
    cube = box(
        Frame(np.zeros(3), rotation("t", 30.0) @ rotation("a", 10.0)), (-8.0, -8.0, -8.0), (8.0, 8.0, 8.0)
    )
    assert trace(cube, AP_CAMERA).length().sum() * AP_CAMERA.spacing_mm**2 == pytest.approx(16.0**3, rel=5e-3)


def test_clip_plane_halves_a_sphere_and_unions_do_not_double_count() -> None:
    sphere = ellipsoid(Frame.identity(), (10.0, 10.0, 10.0))
    full = trace(sphere, AP_CAMERA).length().sum()
    half = Lobe(sphere.frame, sphere.profile, (Plane((0.0, 1.0, 0.0), 0.0),))
    assert trace(half, AP_CAMERA).length().sum() == pytest.approx(full / 2, rel=5e-3)
    twice = union_length([trace(sphere, AP_CAMERA), trace(sphere, AP_CAMERA)])
    assert twice.values.sum() == pytest.approx(full, rel=1e-4)
    shifted = ellipsoid(Frame(np.array([0.0, 30.0, 0.0]), np.eye(3)), (10.0, 10.0, 10.0))
    apart = union_length([trace(sphere, AP_CAMERA), trace(shifted, AP_CAMERA)])
    assert apart.values.sum() == pytest.approx(2 * full, rel=1e-4)  # disjoint along the beam: lengths add
    both = intersect(trace(sphere, AP_CAMERA), trace(shifted, AP_CAMERA))
    assert both.length().max() == 0.0


def test_masks_are_inside_the_image_and_the_exposed_field(small_cases: list[SynthCase]) -> None:
    for case in small_cases:
        rows, columns = int(case.dataset.Rows), int(case.dataset.Columns)
        assert case.masks.shape == (7, rows, columns)
        assert case.masks.dtype == bool
        assert case.masks[BY_NAME["femur"].channel].any() and case.masks[BY_NAME["tibia"].channel].any()
        stored = np.frombuffer(case.dataset.PixelData, dtype="<u2").reshape(rows, columns)
        unexposed = stored == (0 if case.dataset.PhotometricInterpretation == "MONOCHROME1" else 4095)
        # Labels never reach into the collimated (unexposed) border.
        border_rows = np.flatnonzero(unexposed.all(axis=1))
        assert not case.masks[:, border_rows].any()


def _inside_fraction(part: np.ndarray, region: np.ndarray, margin_px: int) -> float:
    grown = ndimage.binary_dilation(region, iterations=margin_px) if margin_px else region
    return float((part & grown).sum() / max(part.sum(), 1))


def test_implants_sit_in_the_bone_they_fix_to(small_cases: list[SynthCase]) -> None:
    """Components replace the bone ends they sit on, so they stand out of the cut bone by at most their own
    thickness plus augments; what anchors them (keels, stems, pegs, screws) lies inside the bone."""
    anchored = 0
    for case in small_cases:
        spacing = case.truth["pixel_spacing_mm"][0]
        masks = {name: case.masks[BY_NAME[name].channel] for name in BY_NAME}
        reach = int(np.ceil(25.0 / spacing))  # component thickness, insert-side surfaces, augments
        for component, bone in (("tibial_component", "tibia"), ("femoral_component", "femur")):
            if masks[component].any():
                allowed = 0.9 if case.truth["design_family"] == "revision_hinge_stemmed" else 0.99
                assert _inside_fraction(masks[component], masks[bone], reach) > allowed, (
                    component,
                    case.truth,
                )
        tibial, tibia = masks["tibial_component"], masks["tibia"]
        if (
            case.truth["view"] == "AP"
            and tibial.any()
            and case.truth["design_family"] != "revision_hinge_stemmed"
        ):
            top = np.flatnonzero(tibial.any(axis=1))[0]
            anchors = tibial.copy()
            anchors[: top + int(np.ceil(16.0 / spacing))] = False  # below tray and augments: keel, stem, pegs
            if anchors.any():
                assert _inside_fraction(anchors, tibia, 2) > 0.97, case.truth
                anchored += 1
        if masks["cement"].any():
            bone = masks["femur"] | masks["tibia"] | masks["patella"]
            assert _inside_fraction(masks["cement"], bone, 2) > 0.97
        if case.truth["category"] == "native":
            assert not (
                masks["femoral_component"].any() or masks["tibial_component"].any() or masks["cement"].any()
            )
        if case.truth.get("fixation") == "uncemented" and not case.truth.get("patella_resurfaced"):
            assert not masks["cement"].any()
    assert anchored >= 3
