"""Femoral components: design families as solids in the femur frame, with the bone cuts they need.

A component sits in its own frame C (child of the femur frame F): t is the component's axis (ideally
the mechanical axis, ~6 deg valgus to the anatomical axis), runners' distal-most points at t = 0. The
cut bone is the convex region ``keep`` (distal, anterior, posterior and two chamfer cuts); the metal is
the runners and flange minus ``keep`` (so a lateral view shows the "J" and the cut polygon inside it),
plus box, lugs, stem, axle as the family asks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from orthoseg.labels import BY_NAME
from orthoseg.synth.anatomy import Cut, FemurShape, cap, condyle_lobe
from orthoseg.synth.geometry import (
    Frame,
    Lobe,
    Plane,
    Polytope,
    Profile,
    box,
    make_profile,
    rotation,
)
from orthoseg.synth.scenario import KneeSpec
from orthoseg.synth.solids import Solid

FEMORAL = BY_NAME["femoral_component"].channel
DT = 0.1


@dataclass
class FemoralBuild:
    """Everything the femoral side of an implant adds to the scene.

    Attributes:
        frame: the component frame C.
        metal: metal solids (label channel femoral_component).
        cuts: how the femur is trimmed.
        contacts: what rests on the tibial side, (medial lobes, lateral lobes), for seating.
        cut_planes: bone-side half-spaces of the fixation surfaces by interface region name (in C),
            where cement and radiolucent lines sit.
        keep_planes: all cut half-spaces (to confine interface layers to the cut bone).
        stem: the stem lobe of revision designs.
        distal_mm: distal thickness of the component (cut level).
        extent: box (in C) the cut bone's interface layers are confined to.
        cover: the component's outer lobes over its fixation surfaces (runners, flange): the cement
            mantle lies only where the component covers the cut bone, not over the whole cut (the
            posterior cut runs above the posterior condyles, the anterior cut wider than the flange).
    """

    frame: Frame
    metal: list[Solid]
    cuts: list[Cut]
    contacts: tuple[list[Lobe], list[Lobe]]
    cut_planes: dict[str, Plane] = field(default_factory=dict)
    keep_planes: tuple[Plane, ...] = ()
    stem: Lobe | None = None
    distal_mm: float = 9.0
    extent: tuple[tuple[float, float, float], tuple[float, float, float]] = (
        (-45.0, -45.0, -2.0),
        (45.0, 45.0, 60.0),
    )
    cover: list[Lobe] = field(default_factory=list)


def plane_through(normal_at: tuple[float, float], point_at: tuple[float, float]) -> Plane:
    """A sagittal half-space n_a * a + n_t * t <= n . p (normals in the a-t plane, unit)."""
    n = np.array([0.0, normal_at[0], normal_at[1]])
    n /= np.linalg.norm(n)
    return Plane((0.0, float(n[1]), float(n[2])), float(n[1] * point_at[0] + n[2] * point_at[1]))


def _inset(planes: tuple[Plane, ...], by_mm: float) -> tuple[Plane, ...]:
    return tuple(Plane(p.normal, p.offset - by_mm) for p in planes)


def _cylinder(
    frame: Frame,
    t0: float,
    t1: float,
    radius: float,
    tip_mm: float = 0.0,
    taper: float = 0.0,
    center: tuple[float, float] = (0.0, 0.0),
) -> Lobe:
    """A stem, peg or lug along t, rounded at the t0 end when ``tip_mm`` > 0 and tapering by ``taper``."""

    def r(t: np.ndarray) -> np.ndarray:
        frac = (t - t0) / max(t1 - t0, 1e-6)
        base = radius * (1.0 - taper * (1.0 - frac))
        return base * cap(t, t0, tip_mm, 2.0) if tip_mm > 0 else base

    return Lobe(frame, make_profile(t0, t1, DT, center[0], center[1], r, r))


def build_femoral(
    spec: KneeSpec, femur: Frame, shape: FemurShape, rng: np.random.Generator
) -> FemoralBuild | None:
    """The femoral component of ``spec.family`` on the femur placed at ``femur`` (None when native)."""
    family = spec.family
    if family == "none":
        return None
    k = spec.bone_scale * spec.femoral_size
    cut_valgus = 6.0 + spec.femoral_varus_valgus_deg
    if family.startswith("uka"):
        cut_valgus = 3.0 + spec.femoral_varus_valgus_deg
    frame = femur.child((0.0, 0.0, 0.0), rotation("a", cut_valgus) @ rotation("m", spec.femoral_flexion_deg))
    if family.startswith("uka"):
        return _uka(spec, frame, shape, k, rng)
    distal_mm = 9.0 + (float(rng.choice([5.0, 10.0])) if spec.augments else 0.0)
    posterior_mm = 9.0 + (float(rng.choice([0.0, 4.0, 8.0])) if spec.augments else 0.0)
    radius_m, radius_l = shape.condyle_radius
    center_a = shape.condyle_center_a
    a_ant = shape.shaft_radius + 0.5
    a_post = center_a - max(radius_m, radius_l) + posterior_mm
    chamfer = 11.0 * k
    top_t = distal_mm + 36.0 * k
    keep_planes = (
        Plane((0.0, 0.0, -1.0), -distal_mm),
        Plane((0.0, 1.0, 0.0), a_ant),
        Plane((0.0, -1.0, 0.0), -a_post),
        plane_through((1.0, -1.0), (a_ant, distal_mm + chamfer)),
        plane_through((-1.0, -1.0), (a_post, distal_mm + chamfer)),
    )
    keep = Polytope(frame, keep_planes, (-80.0, -80.0, -20.0), (80.0, 80.0, 470.0))
    top = Plane((0.0, 0.0, 1.0), top_t)
    runners = []
    for side in (0, 1):
        lobe = condyle_lobe(
            frame,
            shape.condyle_m[side] * 1.0,
            shape.condyle_half_width[side] * 0.97,
            shape.condyle_radius[side],
            center_a,
            0.0,
            shape.anterior_a + 0.5,
            k,
        )
        # Posterior condyles end ~28 mm above the distal cut, with rounded shoulders on an AP view.
        lobe.profile.rm *= cap(lobe.profile.t, distal_mm + 30.0 * k, -9.0 * k, 2.0)
        lobe.planes = (top,)
        runners.append(lobe)

    def flange_rm(t: np.ndarray) -> np.ndarray:
        return (31.0 * k - 9.0 * k * np.clip((t - 12) / (top_t - 12), 0, 1)) * cap(-t, -top_t, 7.0 * k, 2.0)

    thickness = lambda t: 7.5 - 4.0 * np.clip((t - 12) / (top_t - 12), 0, 1)  # noqa: E731
    flange = Lobe(
        frame,
        make_profile(
            10.0 * k,
            top_t,
            DT,
            -1.0,
            lambda t: a_ant - 10.0 + 0.5 * (10.0 + thickness(t)),
            flange_rm,
            lambda t: 0.5 * (10.0 + thickness(t)),
        ),
    )
    material = "cobalt_chrome"
    metal = [Solid("femoral component", material, [*runners, flange], minus=keep, channel=FEMORAL)]
    box_half = (9.0 if family != "revision_hinge_stemmed" else 11.0) * k
    if family in ("ps_box_keel", "revision_cck_stemmed", "revision_hinge_stemmed"):
        height = distal_mm + (12.0 if family == "ps_box_keel" else 20.0) * k
        outer = box(frame, (-box_half, a_post + 6.0, 4.0), (box_half, a_ant - 12.0, height))
        inner = box(
            frame, (-box_half + 1.8, a_post - 5.0, -20.0), (box_half - 1.8, a_ant + 5.0, height - 2.5)
        )
        metal.append(Solid("femoral box", material, [outer], minus=inner, channel=FEMORAL))
    else:
        for side in (0, 1):
            m = shape.condyle_m[side] * 0.8
            lug = _cylinder(
                frame, distal_mm - 1.0, distal_mm + 13.0 * k, 3.6, taper=0.0, center=(m, -3.0 * k)
            )
            lug.profile.rm[-int(2.0 / DT) :] *= np.linspace(1.0, 0.5, int(2.0 / DT))
            lug.profile.ra[-int(2.0 / DT) :] *= np.linspace(1.0, 0.5, int(2.0 / DT))
            metal.append(Solid("femoral lug", material, [lug], channel=FEMORAL))
    stem = None
    if family.startswith("revision"):
        stem_frame = femur.child((0.0, 0.0, 0.0))
        length = spec.stem_length_mm + 30.0
        stem = _cylinder(stem_frame, distal_mm + 15.0, distal_mm + 15.0 + length, 7.5 * k, taper=-0.12)
        stem.profile.rm[-int(6 / DT) :] *= np.sqrt(np.clip(np.linspace(1, 0, int(6 / DT)), 0.05, 1))
        stem.profile.ra[:] = stem.profile.rm
        metal.append(
            Solid("femoral stem", "titanium" if rng.random() < 0.5 else material, [stem], channel=FEMORAL)
        )
    if family == "revision_hinge_stemmed":
        axle_frame = frame.child((0.0, center_a, radius_m), rotation("a", 90.0))
        axle = _cylinder(axle_frame, -box_half - 6.0, box_half + 6.0, 7.0)
        metal.append(Solid("hinge axle", material, [axle], channel=FEMORAL))
    cuts = _resections(frame, keep_planes, top_t + 2.0)
    cut_planes = {"distal": keep_planes[0], "anterior": keep_planes[1], "posterior": keep_planes[2]}
    extent = ((-45.0, a_post - 2.0, distal_mm - 2.0), (45.0, a_ant + 2.0, top_t + 2.0))
    return FemoralBuild(
        frame,
        metal,
        cuts,
        ([runners[0]], [runners[1]]),
        cut_planes,
        keep_planes,
        stem,
        distal_mm,
        extent,
        cover=[*runners, flange],
    )


def _resections(frame: Frame, keep_planes: tuple[Plane, ...], top_t: float) -> list[Cut]:
    """The bone a TKA's cuts remove: outside the cut box, below the component's top (``top_t``, mm).

    A saw cut ends where it leaves the bone at the top of the component; above it the femur is whole
    whatever the component's flexion. (Keeping only the cut box's inside would carry a flexed
    component's anterior and posterior planes up the whole shaft and shave it to a spike.) The outside
    of the convex box is split into disjoint convex pieces: outside plane k, inside planes 0..k-1.
    """
    below_top = Plane((0.0, 0.0, 1.0), top_t)
    cuts = []
    for index, plane in enumerate(keep_planes):
        outside = Plane((-plane.normal[0], -plane.normal[1], -plane.normal[2]), -plane.offset)
        planes = (outside, *keep_planes[:index], below_top)
        cuts.append(Cut(Polytope(frame, planes, (-80.0, -80.0, -60.0), (80.0, 80.0, top_t)), "remove"))
    return cuts


def _uka(spec: KneeSpec, frame: Frame, shape: FemurShape, k: float, rng: np.random.Generator) -> FemoralBuild:
    """Unicompartmental femoral component on one condyle: fixed-bearing runner or spherical (mobile)."""
    side = 0 if spec.category == "uka_medial" else 1
    m0 = shape.condyle_m[side]
    radius = shape.condyle_radius[side]
    center_a = shape.condyle_center_a
    bottom = shape.condyle_bottom_t[side]
    local = frame.child((0.0, 0.0, bottom))
    half_width = shape.condyle_half_width[side] * 0.78
    metal: list[Solid] = []
    cover: list[Lobe] = []
    if spec.family == "uka_mobile_bearing":

        def sphere(rr: float) -> Profile:
            def chord(t: np.ndarray) -> np.ndarray:
                return np.sqrt(np.clip(rr**2 - (t - radius) ** 2, 0, None))

            return make_profile(
                radius - rr, radius + rr, DT, m0, center_a, lambda t: np.minimum(chord(t), half_width), chord
            )

        clip = (Plane((0.0, 1.0, 0.0), center_a + 0.45 * radius), Plane((0.0, 0.0, 1.0), 1.12 * radius))
        outer = Lobe(local, sphere(radius), clip)
        inner = Lobe(local, sphere(radius - 4.5))
        metal.append(Solid("uka femoral shell", "cobalt_chrome", [outer], minus=inner, channel=FEMORAL))
        peg_frame = local.child((m0, center_a + 2.0, radius - 4.0), rotation("m", -45.0))
        metal.append(
            Solid("uka femoral peg", "cobalt_chrome", [_cylinder(peg_frame, 0.0, 14.0, 3.0)], channel=FEMORAL)
        )
        cut = Cut(Lobe(local, sphere(radius + 0.2), clip), "remove", lobes=(1 + side,), spare=inner)
        contact = Lobe(local, sphere(radius), clip)
        cut_planes: dict[str, Plane] = {}
        keep_planes: tuple[Plane, ...] = ()
    else:
        thickness = 6.0
        a_post = center_a - radius + thickness
        keep_planes = (
            Plane((0.0, 0.0, -1.0), -thickness),
            Plane((0.0, -1.0, 0.0), -a_post),
            plane_through((-1.0, -1.0), (a_post, thickness + 9.0)),
        )
        runner = condyle_lobe(local, m0, half_width, radius, center_a, 0.0, center_a + 0.9 * radius, k)
        # A UKA runner covers the distal and posterior condyle only, with rounded shoulders.
        runner.profile.rm *= cap(runner.profile.t, radius + 4.0, -8.0, 2.0)
        runner.planes = (
            Plane((0.0, 0.0, 1.0), radius + 4.0),
            Plane((0.0, 1.0, 0.0), center_a + 0.9 * radius),
        )
        keep = Polytope(local, keep_planes, (m0 - 30, -80.0, -20.0), (m0 + 30, 80.0, 80.0))
        metal.append(Solid("uka femoral runner", "cobalt_chrome", [runner], minus=keep, channel=FEMORAL))
        for da in (0.0,) if rng.random() < 0.5 else (-8.0, 6.0):
            peg = _cylinder(local, thickness - 1.0, thickness + 11.0, 3.0, center=(m0, center_a + 4.0 + da))
            metal.append(Solid("uka femoral peg", "cobalt_chrome", [peg], channel=FEMORAL))
        # The resected slab of the condyle: below the distal cut, behind the runner's front edge.
        resected = (Plane((0.0, 0.0, 1.0), thickness), Plane((0.0, 1.0, 0.0), center_a + 0.9 * radius))
        cut = Cut(
            Polytope(local, resected, (m0 - 30, -80.0, -20.0), (m0 + 30, 80.0, 80.0)),
            "remove",
            lobes=(1 + side,),
        )
        contact = runner
        cover = [runner]
        cut_planes = {"distal": keep_planes[0], "posterior": keep_planes[1]}
    contacts: tuple[list[Lobe], list[Lobe]] = ([contact], []) if side == 0 else ([], [contact])
    extent = ((m0 - 18.0, center_a - radius - 2.0, 4.0), (m0 + 18.0, center_a + radius, radius + 12.0))
    return FemoralBuild(
        local, metal, [cut], contacts, cut_planes, keep_planes, None, 6.0, extent, cover=cover
    )
