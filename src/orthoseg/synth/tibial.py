"""Tibial components: trays with keels, pegs, screws or stems, augments, UKA half-trays, as solids.

A tray sits in its frame D (child of the knee frame K): t' = 0 is the bone cut (the tray's underside),
the tray occupies 0 <= t' <= thickness, fixation features point to t' < 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from orthoseg.labels import BY_NAME
from orthoseg.synth.anatomy import Cut, TibiaShape, cap
from orthoseg.synth.femoral import _cylinder
from orthoseg.synth.geometry import Frame, Lobe, Plane, Polytope, box, make_profile, rotation
from orthoseg.synth.placement import Support
from orthoseg.synth.scenario import KneeSpec
from orthoseg.synth.solids import Solid

TIBIAL = BY_NAME["tibial_component"].channel
DT = 0.1


@dataclass
class TibialBuild:
    """Everything the tibial side of an implant adds to the scene.

    Attributes:
        frame: the tray frame D (after any subsidence).
        metal: metal solids (label channel tibial_component).
        cuts: how the tibia is trimmed.
        supports: (medial, lateral) surfaces the femur rests on; None where the native plateau is.
        anchors: keel, stem, pegs or screws (where cement mantles go).
        stem: the one central anchor (keel, stem, central peg) whose sides and tip are the stem zones of
            the Knee Society system; None for a tray on several pegs, which has no stem zones.
        half_width_mm: tray half-width (m), for interface zones.
        m_range: (min, max) m of the tray in D.
        thickness_mm: tray thickness.
        stem_length_mm: depth of the main anchor below the cut.
    """

    frame: Frame
    metal: list[Solid]
    cuts: list[Cut]
    supports: tuple[Support | None, Support | None]
    anchors: list[Lobe] = field(default_factory=list)
    m_range: tuple[float, float] = (-36.0, 36.0)
    thickness_mm: float = 4.0
    stem_length_mm: float = 0.0
    material: str = "titanium"
    augment: Polytope | None = None
    stem: Lobe | None = None


def support_from(frame: Frame, height: float) -> Support:
    """The plane t' = ``height`` of ``frame`` as s = s0 + gm * m + ga * a in knee coordinates."""
    n = frame.direction((0.0, 0.0, 1.0))
    p0 = frame.to_parent((0.0, 0.0, height))
    return Support(
        float(p0[2] + (n[0] * p0[0] + n[1] * p0[1]) / n[2]), float(-n[0] / n[2]), float(-n[1] / n[2])
    )


def _screw(frame: Frame, length: float, rng: np.random.Generator) -> Lobe:
    pitch = 1.75

    def r(t: np.ndarray) -> np.ndarray:
        thread = 2.5 + 0.75 * (0.5 + 0.5 * np.sin(2 * np.pi * t / pitch))
        head = np.where(t > -3.0, 4.2, thread)
        return head * cap(t, -length, 2.5, 2.0)

    return Lobe(frame, make_profile(-length, 0.0, 0.05, 0.0, 0.0, r, r))


def build_tibial(
    spec: KneeSpec, knee: Frame, shape: TibiaShape, rng: np.random.Generator, envelope: Lobe | None = None
) -> TibialBuild | None:
    """The tibial component of ``spec.family`` (None for a native knee).

    ``envelope`` is the tibia's outer surface: augments fill bone defects, so they stay inside it.
    """
    family = spec.family
    if family == "none":
        return None
    k = spec.bone_scale
    if family.startswith("uka"):
        return _uka(spec, knee, shape, k, rng)
    material = "titanium" if spec.fixation == "uncemented" or rng.random() < 0.4 else "cobalt_chrome"
    cut_depth = 9.0 * k
    tilt = np.degrees(np.arctan2(spec.subsidence_mm, 2 * 30.0 * k))
    original = knee.child(
        (0.0, 0.4 * shape.plateau_center_a, -cut_depth),
        rotation("a", spec.tibial_varus_valgus_deg) @ rotation("m", spec.tibial_slope_deg),
    )
    frame = original.child((0.0, 0.0, -0.5 * spec.subsidence_mm), rotation("a", tilt))
    thickness = 4.0
    half_w, half_d = 35.5 * k, 23.5 * k
    tray = Lobe(frame, make_profile(0.0, thickness, DT, 0.0, 0.0, half_w, half_d))
    metal = [Solid("tibial tray", material, [tray], channel=TIBIAL)]
    anchors: list[Lobe] = []
    stem_length = 0.0
    augment = None
    cuts = [
        Cut(
            Polytope(original, (Plane((0.0, 0.0, 1.0), 0.0),), (-90.0, -90.0, -460.0), (90.0, 90.0, 30.0)),
            "keep",
        )
    ]
    if family == "ps_box_keel":
        stem_length = 40.0 * k
        stem = _cylinder(frame, -stem_length, 0.5, 7.0 * k, tip_mm=4.0, taper=0.25)
        fins = Polytope(
            frame,
            (
                Plane((0.0, 1.0, 0.0), 1.6),
                Plane((0.0, -1.0, 0.0), 1.6),
                Plane((0.0, 0.0, 1.0), 0.5),
                Plane((1.0, 0.0, -0.75), 23.0 * k),
                Plane((-1.0, 0.0, -0.75), 23.0 * k),
                Plane((0.0, 0.0, -1.0), 30.0 * k),
            ),
            (-25.0, -2.0, -32.0),
            (25.0, 2.0, 1.0),
        )
        metal.append(Solid("tibial keel", material, [stem, fins], channel=TIBIAL))
        anchors.append(stem)
    elif family == "cr_pegged":
        stem_length = 13.0 * k
        for m in (-19.0 * k, 19.0 * k):
            for a in (-9.0 * k, 9.0 * k):
                peg = _cylinder(frame, -stem_length, 0.5, 3.5, tip_mm=2.0, center=(m, a))
                metal.append(Solid("tibial peg", material, [peg], channel=TIBIAL))
                anchors.append(peg)
    elif family == "cr_porous_screws":
        stem_length = 22.0 * k
        peg = _cylinder(frame, -stem_length, 0.5, 5.0 * k, tip_mm=3.0, taper=0.15)
        metal.append(Solid("tibial central peg", material, [peg], channel=TIBIAL))
        anchors.append(peg)
        for m in (-18.0 * k, 18.0 * k):
            # Screws diverge a little but stay inside the metaphysis.
            screw_frame = frame.child(
                (m, float(rng.uniform(-6, 8)), 0.5), rotation("a", -np.sign(m) * rng.uniform(0, 7))
            )
            screw = _screw(screw_frame, float(rng.choice([20.0, 25.0, 30.0])), rng)
            metal.append(Solid("tibial screw", "titanium", [screw], channel=TIBIAL))
    else:  # revision: long stem, optional augment block under the medial tray, hinge post
        stem_length = spec.stem_length_mm
        stem = _cylinder(frame, -stem_length, 0.5, 7.5 * k, tip_mm=5.0, taper=0.15)
        metal.append(Solid("tibial stem", material, [stem], channel=TIBIAL))
        anchors.append(stem)
        if spec.augments:
            depth = float(rng.choice([5.0, 10.0]))
            block = box(frame, (4.0 * k, -half_d * 0.95, -depth), (half_w * 0.98, half_d * 0.95, 0.5))
            metal.append(
                Solid(
                    "tibial augment", material, [block], clips=[envelope] if envelope else [], channel=TIBIAL
                )
            )
            augment = box(frame, (4.0 * k, -60.0, -depth), (60.0, 60.0, 20.0))
            cuts.append(Cut(augment, "remove"))
        if family == "revision_hinge_stemmed":
            post = _cylinder(frame, thickness, thickness + 34.0, 6.5)
            metal.append(Solid("hinge post", "cobalt_chrome", [post], channel=TIBIAL))
    top = support_from(frame, thickness)
    central = anchors[0] if family != "cr_pegged" and anchors else None
    return TibialBuild(
        frame,
        metal,
        cuts,
        (top, top),
        anchors,
        (-half_w, half_w),
        thickness,
        stem_length,
        material,
        augment,
        stem=central,
    )


def _uka(spec: KneeSpec, knee: Frame, shape: TibiaShape, k: float, rng: np.random.Generator) -> TibialBuild:
    """Half tray on one plateau: fixed-bearing (keel) or mobile-bearing (flat tray with a wall)."""
    medial = spec.category == "uka_medial"
    sign = 1.0 if medial else -1.0
    m0 = sign * 21.0 * k  # under the femoral runner (condyle centres at 22.5 mm, anatomy.FemurShape)
    frame = knee.child(
        (m0, 0.3 * shape.plateau_center_a, -6.0 * k + sign * -np.tan(np.radians(shape.varus_deg)) * m0),
        rotation("a", spec.tibial_varus_valgus_deg) @ rotation("m", spec.tibial_slope_deg),
    )
    if spec.subsidence_mm:
        frame = frame.child((0.0, 0.0, -spec.subsidence_mm), None)
    thickness = 3.0
    inner_edge = 13.0 * k  # distance from the tray centre to the sagittal cut
    edge = Plane((-sign, 0.0, 0.0), inner_edge)
    tray = Lobe(frame, make_profile(0.0, thickness, DT, 0.0, 0.0, 15.0 * k, 22.0 * k), (edge,))
    metal = [Solid("uka tray", "cobalt_chrome", [tray], channel=TIBIAL)]
    keel = Polytope(
        frame,
        (
            Plane((1.0, 0.0, 0.0), 1.3),
            Plane((-1.0, 0.0, 0.0), 1.3),
            Plane((0.0, 1.0, 0.0), 13.0),
            Plane((0.0, -1.0, 0.0), 16.0),
            Plane((0.0, 0.0, 1.0), 0.5),
            Plane((0.0, 0.2, -1.0), 9.0),
        ),
        (-2.0, -17.0, -14.0),
        (2.0, 14.0, 1.0),
    )
    metal.append(Solid("uka keel", "cobalt_chrome", [keel], channel=TIBIAL))
    anchors = [_cylinder(frame, -9.0, 0.5, 1.3)]
    if spec.family == "uka_mobile_bearing":
        wall = box(
            frame,
            (-sign * inner_edge - 1.0 if medial else inner_edge - 1.0, -22.0 * k, thickness - 0.5),
            (-sign * inner_edge + 1.0 if medial else inner_edge + 1.0, 22.0 * k, thickness + 7.0),
        )
        metal.append(Solid("uka wall", "cobalt_chrome", [wall], channel=TIBIAL))
    lo = (-inner_edge, -60.0, 0.0) if medial else (-60.0, -60.0, 0.0)
    hi = (60.0, 60.0, 40.0) if medial else (inner_edge, 60.0, 40.0)
    cuts = [Cut(box(frame, lo, hi), "remove")]
    top = support_from(frame, thickness)
    supports = (top, None) if medial else (None, top)
    m_range = (-inner_edge, 15.0 * k) if medial else (-15.0 * k, inner_edge)
    return TibialBuild(
        frame, metal, cuts, supports, anchors, m_range, thickness, 9.0, "cobalt_chrome", stem=anchors[0]
    )
