"""Assembling one knee: bones, implant, seating on the tibia, cement mantles and radiolucent lines."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from orthoseg.labels import BY_NAME
from orthoseg.synth.anatomy import Bone, FemurShape, build_femur, build_patella
from orthoseg.synth.anatomy_ankle import build_ankle
from orthoseg.synth.anatomy_leg import build_fibula, build_tibia
from orthoseg.synth.anatomy_soft import build_soft_tissue
from orthoseg.synth.femoral import FemoralBuild, build_femoral
from orthoseg.synth.geometry import Frame, Lobe, Plane, Polytope, Primitive, make_profile
from orthoseg.synth.placement import Seating, Support, seat_femur, surface_points
from orthoseg.synth.scenario import KneeSpec
from orthoseg.synth.solids import Solid
from orthoseg.synth.tibial import TibialBuild, build_tibial

CEMENT = BY_NAME["cement"].channel
# Cement is labelled where a ray crosses at least this much of it. A mantle seen edge-on (under a tray,
# around a keel or stem, inside the femoral "J" on a lateral film) is crossed over centimetres and is
# plain on the film; a 1.8 mm sheet seen en face (the patellar mantle on an AP film) changes the film
# by a few percent under trabecular texture: nobody can outline it, so no label claims it.
CEMENT_VISIBLE_PATH_MM = 3.0


def cement_solid(
    name: str,
    mu_per_mm: float,
    parts: list[Primitive],
    clips: list[Primitive],
    minus: Primitive | None = None,
) -> Solid:
    """A cement mantle (displacing trabecular bone), labelled only where it is thick enough to see."""
    return Solid(
        name,
        mu_per_mm,
        parts,
        clips=clips,
        minus=minus,
        channel=CEMENT,
        replaces="trabecular",
        label_min_path_mm=CEMENT_VISIBLE_PATH_MM,
    )


Extent = tuple[tuple[float, float, float], tuple[float, float, float]]


@dataclass
class Interface:
    """A bone-implant interface region where cement sits and radiolucent lines can form.

    Either a layer beside a cut plane (``plane`` with ``extra`` bounding planes, in ``frame``) or a
    mantle around an anchor lobe (``anchor``, optionally one side of ``half``).
    """

    bone: Bone
    frame: Frame | None = None
    plane: Plane | None = None
    extra: tuple[Plane, ...] = ()
    extent: Extent | None = None
    anchor: Lobe | None = None
    half: Plane | None = None


@dataclass
class KneeScene:
    """One knee ready to project.

    Attributes:
        spec: what was asked for.
        bones: femur, tibia, fibula, patella (with their cuts), then the unlabelled ankle bones.
        skin, muscle: soft-tissue envelope lobes (outer, and inside the subcutaneous fat).
        solids: implants, cement, radiolucent lines and sclerotic rims.
        knee, femur: the knee (tibia) frame and the placed femur frame.
        femoral, tibial: implant builds (None for a native knee or the unreplaced side).
        seating: contact points of the femur on the tibial side.
        lucency_mm: the radiolucent-line width of every interface region (mm).
        interface_normals: unit normal (knee coordinates) of every planar interface region; anchor
            mantles (cylinders, seen edge-on at their silhouette from any side) are absent.
        interface_probes: a thin layer where each region's line would lie (never rendered).
    """

    spec: KneeSpec
    bones: list[Bone]
    skin: list[Lobe]
    muscle: list[Lobe]
    solids: list[Solid]
    knee: Frame
    femur: Frame
    femoral: FemoralBuild | None
    tibial: TibialBuild | None
    seating: Seating
    lucency_mm: dict[str, float] = field(default_factory=dict)
    interface_normals: dict[str, np.ndarray] = field(default_factory=dict)
    interface_probes: dict[str, Solid] = field(default_factory=dict)


def _points(lobes: list[Lobe]) -> np.ndarray:
    """Surface points of ``lobes`` in the coordinates of the frame they were built in (the femur's)."""
    parts = [surface_points(lobe) @ lobe.frame.axes.T + lobe.frame.origin for lobe in lobes]
    return np.concatenate(parts) if parts else np.zeros((0, 3))


def _slab(
    frame: Frame,
    plane: Plane,
    depth0: float,
    depth1: float,
    extra: tuple[Plane, ...],
    extent: tuple[tuple[float, float, float], tuple[float, float, float]],
) -> Polytope:
    """The layer of bone between ``depth0`` and ``depth1`` mm inside the half-space ``plane``.

    ``extent`` (frame box) bounds the interface; for an axis-aligned plane the box is narrowed to the
    layer itself, so that tracing it (and the bone inside it) stays cheap.
    """
    n = np.asarray(plane.normal, dtype=float)
    scale = float(np.linalg.norm(n))
    inner = Plane(plane.normal, plane.offset - depth0 * scale)
    outer = Plane((-plane.normal[0], -plane.normal[1], -plane.normal[2]), -(plane.offset - depth1 * scale))
    lo, hi = list(extent[0]), list(extent[1])
    axis = int(np.argmax(np.abs(n)))
    if np.count_nonzero(np.abs(n) > 1e-9) == 1:
        level = plane.offset / n[axis]
        ends = sorted((level - np.sign(n[axis]) * depth0, level - np.sign(n[axis]) * depth1))
        lo[axis], hi[axis] = ends[0] - 0.5, ends[1] + 0.5
    return Polytope(frame, (inner, outer, *extra), (lo[0], lo[1], lo[2]), (hi[0], hi[1], hi[2]))


def _annulus(anchor: Lobe, r0: float, r1: float) -> tuple[Lobe, Lobe]:
    """Lobes around an anchor (stem, peg) grown by ``r0`` and ``r1`` mm (the mantle between them)."""

    def grown(by: float) -> Lobe:
        p = anchor.profile
        t0 = p.t0 - by
        prof = make_profile(t0, p.t1, p.dt, 0.0, 0.0, 0.0, 0.0)
        idx = np.clip(np.round((prof.t - p.t0) / p.dt).astype(int), 0, len(p.rm) - 1)
        prof.cm, prof.ca = p.cm[idx], p.ca[idx]
        base = np.where(prof.t < p.t0, np.max(p.rm), p.rm[idx])
        prof.rm = prof.ra = np.where(base > 0, base + by, 0.0)
        return Lobe(anchor.frame, prof)

    return grown(r0), grown(r1)


def build_knee(spec: KneeSpec, flexion_deg: float, seed: int) -> KneeScene:
    """Build ``spec``'s knee at ``flexion_deg`` (the seed fixes design details such as screw angles)."""
    knee = Frame.identity()
    tibia, tshape = build_tibia(spec, knee)
    fibula = build_fibula(spec, knee)
    tibial = build_tibial(spec, knee, tshape, np.random.default_rng([seed, 1]), tibia.outer[0])
    plateau = Support(0.0, -np.tan(np.radians(tshape.varus_deg)), np.tan(np.radians(tshape.slope_deg)))
    supports = (plateau, plateau)
    if tibial is not None:
        supports = (tibial.supports[0] or plateau, tibial.supports[1] or plateau)
        tibia.keep.extend(tibial.cuts)

    def femur_side(frame: Frame) -> tuple[Bone, FemurShape, FemoralBuild | None]:
        femur, fshape = build_femur(spec, frame)
        femoral = build_femoral(spec, frame, fshape, np.random.default_rng([seed, 2]))
        return femur, fshape, femoral

    femur0, _, femoral0 = femur_side(Frame.identity())
    medial = femur0.outer[1:2]
    lateral = femur0.outer[2:3]
    if femoral0 is not None:
        medial = femoral0.contacts[0] or medial
        lateral = femoral0.contacts[1] or lateral
    gaps = (spec.joint_space_medial_mm, spec.joint_space_lateral_mm)
    seating = seat_femur(
        _points(medial),
        _points(lateral),
        supports,
        gaps,
        flexion_deg,
        valgus_guess_deg=spec.tibiofemoral_base_deg,
        contact_a_mm=-3.0 * spec.bone_scale,
    )
    femur, fshape, femoral = femur_side(seating.frame)
    if femoral is not None:
        femur.keep.extend(femoral.cuts)
    patella = build_patella(spec, seating.frame, fshape, flexion_deg)
    skin, muscle = build_soft_tissue(spec, knee, seating.frame)
    solids: list[Solid] = []
    for build in (femoral, tibial):
        if build is not None:
            solids.extend(build.metal)
    lucency: dict[str, float] = {}
    normals: dict[str, np.ndarray] = {}
    probes: dict[str, Solid] = {}
    if femoral is not None or tibial is not None:
        solids.extend(_interfaces(spec, femur, tibia, femoral, tibial, lucency, normals, probes))
    if spec.patella_resurfaced:
        cut = patella.outer[0].planes[0]
        solids.append(
            cement_solid(
                "patellar cement",
                spec.cement_mu_per_cm / 10.0,
                list(patella.outer),
                clips=[_slab(patella.frame, cut, 0.0, 1.8, (), ((-30.0, -20.0, -30.0), (30.0, 20.0, 30.0)))],
            )
        )
    return KneeScene(
        spec,
        [femur, tibia, fibula, patella, *build_ankle(spec, knee)],
        skin,
        muscle,
        solids,
        knee,
        seating.frame,
        femoral,
        tibial,
        seating,
        lucency_mm=lucency,
        interface_normals=normals,
        interface_probes=probes,
    )


def _interfaces(
    spec: KneeSpec,
    femur: Bone,
    tibia: Bone,
    femoral: FemoralBuild | None,
    tibial: TibialBuild | None,
    lucency: dict[str, float],
    normals: dict[str, np.ndarray],
    probes: dict[str, Solid],
) -> list[Solid]:
    """Cement mantles, radiolucent lines (fibrous tissue) and their sclerotic rims at the interfaces.

    Fills ``lucency`` (width per region, mm), ``normals`` (unit normal of every planar region) and
    ``probes`` (a thin layer where each region's line would lie, never rendered).
    """
    cemented = spec.fixation in ("cemented", "hybrid")
    cement_mm = 1.8 if cemented else 0.0
    mu_cement = spec.cement_mu_per_cm / 10.0
    solids: list[Solid] = []
    regions: dict[str, Interface] = {}
    if tibial is not None:
        lo, hi = tibial.m_range
        bound = (Plane((1.0, 0.0, 0.0), hi), Plane((-1.0, 0.0, 0.0), -lo))
        underside = Plane((0.0, 0.0, 1.0), 0.0)
        t_extent = ((lo - 1.0, -32.0, -tibial.stem_length_mm - 8.0), (hi + 1.0, 32.0, 2.0))
        if cemented:
            solids.append(
                cement_solid(
                    "tibial cement",
                    mu_cement,
                    list(tibia.outer),
                    clips=[_slab(tibial.frame, underside, 0.0, cement_mm, bound, t_extent)],
                    minus=tibial.augment,
                )
            )
            if spec.fixation == "cemented":
                for anchor in tibial.anchors:
                    _, mantle = _annulus(anchor, 0.0, cement_mm)
                    solids.append(
                        cement_solid("tibial anchor cement", mu_cement, list(tibia.outer), [mantle], anchor)
                    )
        quadrants = {"tray_MA": (1, 1), "tray_MP": (1, -1), "tray_LA": (-1, 1), "tray_LP": (-1, -1)}
        for name, (sm, sa) in quadrants.items():
            planes = (*bound, Plane((-sm, 0.0, 0.0), 0.0), Plane((0.0, -sa, 0.0), 0.0))
            regions[name] = Interface(tibia, tibial.frame, underside, planes, t_extent)
        if tibial.stem is not None:
            anchor = tibial.stem
            for name, sm in (("stem_M", 1), ("stem_L", -1)):
                regions[name] = Interface(tibia, anchor=anchor, half=Plane((-sm, 0.0, 0.0), 0.0))
            tip = Plane((0.0, 0.0, 1.0), -tibial.stem_length_mm)
            side_planes = (Plane((1.0, 0, 0), 8.0), Plane((-1.0, 0, 0), 8.0))
            regions["stem_tip"] = Interface(tibia, tibial.frame, tip, side_planes, t_extent)
    if femoral is not None and femoral.keep_planes:
        f_extent = femoral.extent
        keep = Polytope(femoral.frame, femoral.keep_planes, *f_extent)
        if cemented:
            inset = Polytope(
                femoral.frame,
                tuple(Plane(p.normal, p.offset - cement_mm) for p in femoral.keep_planes),
                *f_extent,
            )
            # The mantle lies between the cut bone and the component, so only under the component's
            # footprint: a cut surface the component does not cover (the posterior cut above the
            # posterior condyles, the anterior cut beside the flange) carries no cement. Seen en face
            # on an AP film such a sheet is 1.8 mm of cement and invisible, yet it was labelled.
            solids.append(cement_solid("femoral cement", mu_cement, list(femoral.cover), [keep], inset))
        if spec.fixation == "cemented" and femoral.stem is not None:
            # A cemented revision stem sits in a mantle of cement, as the tibial stem does.
            _, mantle = _annulus(femoral.stem, 0.0, cement_mm)
            solids.append(
                cement_solid("femoral stem cement", mu_cement, list(femur.outer), [mantle], femoral.stem)
            )
        for name, plane in femoral.cut_planes.items():
            if name in ("distal", "posterior"):
                for suffix, sm in (("_M", 1), ("_L", -1)):
                    extra = (*femoral.keep_planes, Plane((-sm, 0.0, 0.0), 0.0))
                    regions[name + suffix] = Interface(femur, femoral.frame, plane, extra, f_extent)
            else:
                regions[name] = Interface(femur, femoral.frame, plane, femoral.keep_planes, f_extent)
        if femoral.stem is not None:
            regions["femoral_stem"] = Interface(femur, anchor=femoral.stem)
    for name, region in regions.items():
        width = float(spec.lucency_mm.get(name, 0.0))
        lucency[name] = round(width, 2)
        if region.plane is not None and region.frame is not None:
            normal = region.frame.direction(region.plane.normal)
            normals[name] = normal / np.linalg.norm(normal)
        offset = (
            cement_mm
            if name.startswith(("tray", "distal", "anterior", "posterior")) or (spec.fixation == "cemented")
            else 0.0
        )
        # Where a line of this region would lie, whether or not there is one (never rendered): the truth
        # uses it to tell which zones the film shows (see truth.assessable_regions).
        probes[name] = _layer(f"interface probe {name}", "soft", region, offset, PROBE_MM)
        if width <= 0:
            continue
        solids.append(_layer(f"lucent line {name}", "soft", region, offset, width))
        solids.append(_layer(f"sclerotic rim {name}", "cortical", region, offset + width, 0.8, offset))
    return solids


PROBE_MM = 1.0
"""Thickness (mm) of the interface probes: a layer as thin as a line, for the truth's visibility test."""


def _layer(
    name: str, material: str, region: Interface, start: float, width: float, inner: float | None = None
) -> Solid:
    """A layer of bone turned to ``material`` from ``start`` to ``start + width`` mm off the interface.

    For an anchor mantle the layer is an annulus whose hole starts at ``inner`` (default ``start``),
    along the anchor's side only: the cap beyond its tip is the tip's region (a stem's ``stem_tip``, with
    its own width), so a line of the side does not wrap round the tip where the truth says there is none.
    """
    if region.anchor is None:
        assert region.frame is not None and region.plane is not None and region.extent is not None
        clips: list[Primitive] = [
            _slab(region.frame, region.plane, start, start + width, region.extra, region.extent)
        ]
        minus: Primitive | None = None
    else:
        anchor, half = region.anchor, region.half
        hole, outer = _annulus(anchor, start if inner is None else inner, start + width)
        if inner is not None:
            _, hole = _annulus(anchor, inner, start)
        side = Plane((0.0, 0.0, -1.0), -anchor.profile.t0)  # the anchor's tip section and above
        half_space: list[Primitive] = [Polytope(anchor.frame, (side,), (-200.0,) * 3, (200.0,) * 3)]
        if half is not None:
            half_space.append(Polytope(anchor.frame, (half,), (-200.0,) * 3, (200.0,) * 3))
        clips, minus = [outer, *half_space], hole
    return Solid(name, material, list(region.bone.outer), clips=clips, minus=minus, replaces="trabecular")
