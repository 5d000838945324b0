"""The native knee as solids: femur, tibia, fibula and patella (cortex around trabecular bone), soft tissue.

Frames (mm): a knee frame K with m medial, a anterior and s superior, origin at the centre of the tibial
plateau. The tibia is built in K; the femur in its own frame F (origin between the distal condyles,
t along the anatomical axis), placed later on the tibia (``placement.py``). Dimensions are for an
average adult and scale with ``KneeSpec.bone_scale``; the soft-tissue envelope with ``soft_scale``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from orthoseg.synth.geometry import Frame, Lobe, Plane, Polytope, make_profile, rotation
from orthoseg.synth.scenario import KneeSpec

DT_MM = 0.1  # profile sampling along bone axes


def smooth(x: np.ndarray) -> np.ndarray:
    """Smoothstep on [0, 1] (clipped outside)."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def cap(t: np.ndarray, t_end: float, height: float, power: float = 2.0) -> np.ndarray:
    """Rounded end (superellipse) factor in [0, 1]: 0 at ``t_end``, 1 beyond ``t_end + height``."""
    u = np.clip((t - t_end) / height, 0.0, 1.0) if height > 0 else np.clip((t_end - t) / -height, 0.0, 1.0)
    return (1.0 - (1.0 - u) ** power) ** (1.0 / power)


@dataclass
class Cut:
    """How an implant trims a bone: keep only ``region`` or remove it (minus ``spare``) from some lobes.

    Attributes:
        region: the solid region (lobe or polytope).
        mode: "keep" or "remove".
        lobes: indices of the bone's lobes it applies to (None: all).
        spare: part of a removed region that stays bone (a spherical shell's inside).
    """

    region: Lobe | Polytope
    mode: str
    lobes: tuple[int, ...] | None = None
    spare: Lobe | Polytope | None = None


@dataclass
class Bone:
    """A bone: outer and inner (trabecular or marrow) solids, and where along t it is trabecular.

    Attributes:
        name: label-contract structure name.
        frame: the bone's frame (every lobe's frame is this frame).
        outer: lobes whose union is the whole bone.
        inner: lobes whose union is the bone inside the cortex.
        trabecular_until_t: t (bone frame) where cancellous bone gives way to the marrow cavity,
            as (start, end) of the transition; None when the inside is cancellous everywhere.
        keep: optional cut (a ``Polytope`` region) the bone is trimmed to, set by implants.
    """

    name: str
    frame: Frame
    outer: list[Lobe]
    inner: list[Lobe]
    trabecular_until_t: tuple[float, float] | None = None
    keep: list[Cut] = field(default_factory=list)
    joint_t: float | None = None


@dataclass
class FemurShape:
    """Dimensions of the distal femur that implants follow (F frame, mm)."""

    condyle_m: tuple[float, float]  # medial, lateral condyle centre m
    condyle_half_width: tuple[float, float]
    condyle_radius: tuple[float, float]  # sagittal radius of each condyle
    condyle_center_a: float
    condyle_bottom_t: tuple[float, float]
    anterior_a: float  # anterior surface of the distal femur
    shaft_radius: float
    canal_radius: float


@dataclass
class TibiaShape:
    """Dimensions of the proximal tibia that implants follow (K frame, mm)."""

    plateau_half_width: float
    plateau_half_depth: float
    plateau_center_a: float
    shaft_radius: float
    canal_radius: float
    slope_deg: float
    varus_deg: float


def condyle_lobe(
    frame: Frame,
    m: float,
    half_width: float,
    radius: float,
    center_a: float,
    bottom_t: float,
    anterior_a: float,
    k: float,
    shrink: float = 0.0,
) -> Lobe:
    """One femoral condyle: a sagittal circle posteriorly and distally, the trochlea anteriorly."""
    r = radius - shrink
    posterior_height = 30.0 * k

    def a_min(t: np.ndarray) -> np.ndarray:
        u = t - bottom_t
        low = center_a - np.sqrt(np.clip(r**2 - (radius - u) ** 2, 0.0, None))
        up = center_a - r * np.sqrt(np.clip(1.0 - ((u - radius) / posterior_height) ** 2, 0.0, None))
        return np.where(u <= radius, low, up)

    def a_max(t: np.ndarray) -> np.ndarray:
        u = t - bottom_t
        circle = center_a + 1.25 * np.sqrt(np.clip(r**2 - (radius - u) ** 2, 0.0, None))
        return np.minimum(
            np.maximum(circle, np.where(u > radius, anterior_a - shrink, -1e9)), anterior_a - shrink
        )

    t0, t1 = bottom_t + shrink, bottom_t + radius + posterior_height

    def rm(t: np.ndarray) -> np.ndarray:
        return (half_width - shrink) * cap(t, bottom_t + shrink, 15.0 * k, 2.0) * cap(t, t1, -22.0 * k, 2.0)

    return Lobe(
        frame,
        make_profile(
            t0,
            t1,
            DT_MM,
            m,
            lambda t: 0.5 * (a_min(t) + a_max(t)),
            rm,
            lambda t: np.clip(0.5 * (a_max(t) - a_min(t)), 0.0, None),
        ),
    )


def build_femur(spec: KneeSpec, frame: Frame, length_mm: float = 420.0) -> tuple[Bone, FemurShape]:
    """The femur in its frame F: shaft, metaphysis, two condyles; cortex thick in the shaft."""
    k = spec.bone_scale
    # The medial condyle reaches further along the anatomical axis (joint line obliquity, aLDFA ~81 deg).
    obliquity = np.tan(np.radians(np.clip(spec.tibiofemoral_base_deg - 3.0, -2.0, 9.0)))
    shape = FemurShape(
        condyle_m=(20.5 * k, -20.5 * k),
        condyle_half_width=(13.5 * k, 14.0 * k),
        condyle_radius=(22.0 * k, 20.5 * k),
        condyle_center_a=-9.0 * k,
        condyle_bottom_t=(-21.0 * k * obliquity, 21.0 * k * obliquity),
        anterior_a=16.0 * k,
        shaft_radius=13.5 * k,
        canal_radius=8.0 * k,
    )
    bow = 0.004 * spec.shaft_bow

    def meta(shrink_fn: object) -> Lobe:
        def rm(t: np.ndarray) -> np.ndarray:
            width = shape.shaft_radius + (36.0 * k - shape.shaft_radius) * (
                1 - smooth((t - 24 * k) / (85 * k))
            )
            return (width - shrink_fn(t)) * cap(t, 14.0 * k, 24.0 * k, 1.4)  # type: ignore[operator]

        def ra(t: np.ndarray) -> np.ndarray:
            depth = shape.shaft_radius + (21.0 * k - shape.shaft_radius) * (
                1 - smooth((t - 20 * k) / (80 * k))
            )
            return (depth - shrink_fn(t)) * cap(t, 14.0 * k, 16.0 * k, 2.0)  # type: ignore[operator]

        def ca(t: np.ndarray) -> np.ndarray:
            return -3.0 * k * (1 - smooth((t - 20 * k) / (80 * k))) + bow * np.clip(t - 60, 0, None) * 4

        return Lobe(frame, make_profile(14.0 * k, length_mm, DT_MM, 0.0, ca, rm, ra))

    def cortex(t: np.ndarray) -> np.ndarray:
        return 1.1 + (shape.shaft_radius - shape.canal_radius - 1.1) * smooth((t - 60 * k) / (70 * k))

    outer = [meta(lambda t: 0.0)]
    inner = [meta(cortex)]
    for side in (0, 1):
        args = (
            frame,
            shape.condyle_m[side],
            shape.condyle_half_width[side],
            shape.condyle_radius[side],
            shape.condyle_center_a,
            shape.condyle_bottom_t[side],
            shape.anterior_a,
            k,
        )
        outer.append(condyle_lobe(*args))
        inner.append(condyle_lobe(*args, shrink=1.1))
    if spec.osteophytes:
        outer.extend(_osteophytes_femur(spec, frame, shape))
    bone = Bone("femur", frame, outer, inner, trabecular_until_t=(70 * k, 130 * k), joint_t=0.0)
    return bone, shape


def spur(
    parent: Frame,
    base: tuple[float, float, float],
    tilt_deg: float,
    length: float,
    width: float,
    depth: float,
) -> Lobe:
    """An osteophyte: a cone from ``base`` (parent coordinates) pointing along its t, tilted about a."""
    frame = parent.child(base, rotation("a", tilt_deg))
    return Lobe(
        frame,
        make_profile(
            0.0,
            length,
            DT_MM,
            0.0,
            0.0,
            lambda t: width * np.clip(1.0 - t / length, 0, 1) ** 1.3,
            lambda t: depth * np.sqrt(np.clip(1.0 - t / length, 0, 1)),
        ),
    )


def _osteophytes_femur(spec: KneeSpec, frame: Frame, shape: FemurShape) -> list[Lobe]:
    """Marginal spurs at the condyles, pointing distally and outwards (KL >= 2)."""
    size = 1.0 + 1.1 * spec.kl_grade
    lobes = []
    for side in (0, 1):
        sign = np.sign(shape.condyle_m[side])
        edge = shape.condyle_m[side] + sign * (shape.condyle_half_width[side] - 2.5)
        base = (edge, shape.condyle_center_a + 2.0, shape.condyle_bottom_t[side] + 6.0)
        lobes.append(spur(frame, base, 180.0 - sign * 40.0, 2.2 * size, 0.9 * size, 8.0))
    return lobes


def build_tibia(spec: KneeSpec, frame: Frame, length_mm: float = 420.0) -> tuple[Bone, TibiaShape]:
    """The tibia in K: plateau (posterior slope, slight varus), flared metaphysis, tuberosity, shaft."""
    k = spec.bone_scale
    shape = TibiaShape(
        plateau_half_width=38.0 * k,
        plateau_half_depth=24.0 * k,
        plateau_center_a=-4.0 * k,
        shaft_radius=14.0 * k,
        canal_radius=7.5 * k,
        slope_deg=spec.plateau_slope_native_deg,
        varus_deg=3.0,
    )
    top = Plane((np.tan(np.radians(shape.varus_deg)), -np.tan(np.radians(shape.slope_deg)), 1.0), 0.0)

    def main(shrink_fn: object) -> Lobe:
        def flare(t: np.ndarray) -> np.ndarray:
            return np.clip((t + 85 * k) / (75 * k), 0.0, 1.0) ** 1.7

        def rm(t: np.ndarray) -> np.ndarray:
            rim = 1.0 - 0.06 * np.clip((t + 4 * k) / (4 * k), 0, 1) ** 2
            width = shape.shaft_radius + (shape.plateau_half_width - shape.shaft_radius) * flare(t)
            return width * rim - shrink_fn(t)  # type: ignore[operator]

        def ra(t: np.ndarray) -> np.ndarray:
            depth = (shape.shaft_radius + 1.5 * k) + (
                shape.plateau_half_depth - shape.shaft_radius - 1.5 * k
            ) * flare(t)
            return depth - shrink_fn(t)  # type: ignore[operator]

        return Lobe(
            frame,
            make_profile(
                -length_mm, 12.0 * k, DT_MM, 0.0, lambda t: shape.plateau_center_a * flare(t), rm, ra
            ),
            (top,),
        )

    def cortex(t: np.ndarray) -> np.ndarray:
        return 1.0 + (shape.shaft_radius - shape.canal_radius - 1.0) * smooth((-t - 70 * k) / (60 * k))

    outer = [main(lambda t: 0.0)]
    inner_main = main(cortex)
    # Subchondral plate: the cancellous bone stops ~1.8 mm below the articular surface.
    inner_main.planes = (Plane(top.normal, -1.8 * float(np.linalg.norm(top.normal))),)
    inner = [inner_main]
    tuberosity = make_profile(
        -50 * k,
        -10 * k,
        DT_MM,
        -4.0 * k,
        lambda t: 10.5 * k + 3.5 * k * np.sin(np.clip((t + 50 * k) / (40 * k), 0, 1) * np.pi),
        lambda t: 9.0 * k * cap(t, -50 * k, 14 * k) * cap(t, -10 * k, -10 * k),
        lambda t: 6.5 * k * cap(t, -50 * k, 16 * k) * cap(t, -10 * k, -10 * k),
    )
    outer.append(Lobe(frame, tuberosity))
    if spec.category in ("native", "uka_medial", "uka_lateral"):
        for m, height in ((4.5 * k, 6.0 * k), (-4.5 * k, 5.0 * k)):
            for shrink, bucket in ((0.0, outer), (0.8, inner)):
                spine = make_profile(
                    -6.0,
                    height - shrink,
                    DT_MM,
                    m,
                    -2.0 * k,
                    lambda t, h=height, s=shrink: (
                        (5.0 * k - s) * np.sqrt(np.clip(1 - (np.maximum(t, 0) / h) ** 1.5, 0, 1))
                    ),
                    lambda t, h=height, s=shrink: (
                        (8.0 * k - s) * np.sqrt(np.clip(1 - (np.maximum(t, 0) / h) ** 2, 0, 1))
                    ),
                )
                bucket.append(Lobe(frame, spine))
    if spec.osteophytes:
        size = 1.0 + 1.0 * spec.kl_grade
        for sign in (1.0, -1.0):
            base = (sign * (shape.plateau_half_width - 3.0), -2.0, -3.5)
            outer.append(spur(frame, base, sign * 45.0, 2.3 * size, 1.0 * size, 9.0))
    return Bone("tibia", frame, outer, inner, trabecular_until_t=(-95 * k, -150 * k), joint_t=0.0), shape


def build_fibula(spec: KneeSpec, knee: Frame, length_mm: float = 420.0) -> Bone:
    """The fibula, posterolateral, head ~15 mm below the plateau."""
    k = spec.bone_scale
    frame = knee.child((-31.0 * k, -17.0 * k, 0.0), rotation("a", -2.5))

    def outline(shrink: float) -> Lobe:
        def r(t: np.ndarray) -> np.ndarray:
            flare = 1.0 - smooth((-t - 24 * k) / (13 * k))
            radius = 7.0 * k + 4.5 * k * flare
            return radius * cap(t, -11 * k, -10 * k, 1.6) - shrink

        return Lobe(frame, make_profile(-length_mm, -11.0 * k, DT_MM, 0.0, 0.0, r, r))

    return Bone("fibula", frame, [outline(0.0)], [outline(2.3 * k)], trabecular_until_t=(-40 * k, -70 * k))


def build_patella(spec: KneeSpec, femur: Frame, shape: FemurShape, flexion_deg: float) -> Bone:
    """The patella on the trochlea; it slides distally and rotates with flexion."""
    k = spec.bone_scale
    pivot = np.array([0.0, shape.condyle_center_a, 21.0 * k])
    theta = np.radians(55.0 + 0.8 * flexion_deg)
    center = pivot + 36.0 * k * np.array([0.0, np.sin(theta), np.cos(theta)]) + np.array([3.0 * k, 0.0, 0.0])
    frame = femur.child(center, rotation("m", -0.6 * flexion_deg + 4.0))
    resurfaced = spec.patella_resurfaced

    def lobe(shrink: float) -> Lobe:
        half_h = 22.0 * k

        def rm(t: np.ndarray) -> np.ndarray:
            taper = 0.75 + 0.25 * np.clip((t + half_h) / (1.4 * half_h), 0, 1)
            return (
                (21.0 * k - shrink)
                * taper
                * cap(t, -half_h + shrink, 16 * k, 1.5)
                * cap(-t, -half_h + shrink, 12 * k, 2.0)
            )

        def ra(t: np.ndarray) -> np.ndarray:
            return (
                (9.5 * k - shrink) * cap(t, -half_h + shrink, 14 * k, 1.6) * cap(-t, -half_h + shrink, 7 * k)
            )

        planes = (Plane((0.0, -1.0, 0.0), 3.5 * k),) if resurfaced else ()
        return Lobe(
            frame,
            make_profile(
                -half_h + shrink,
                half_h - shrink,
                DT_MM,
                0.0,
                lambda t: 0.8 * k * np.tanh(-t / (8 * k)),
                rm,
                ra,
            ),
            planes,
        )

    return Bone("patella", frame, [lobe(0.0)], [lobe(0.9)])


def build_soft_tissue(
    spec: KneeSpec, knee: Frame, femur: Frame, length_mm: float = 420.0
) -> tuple[list[Lobe], list[Lobe]]:
    """Skin envelope (thigh and leg, overlapping smoothly at the knee) and the muscle inside the fat."""
    s = spec.soft_scale
    fat = 4.0 + 12.0 * max(s - 0.8, 0.0)

    def thigh(shrink: float) -> Lobe:
        def grow(t: np.ndarray) -> np.ndarray:
            return (1 + 0.45 * smooth((t - 30.0) / 220.0)) * cap(t, -70.0, 65.0, 3.0)

        return Lobe(
            femur,
            make_profile(
                -70.0,
                length_mm,
                0.5,
                0.0,
                lambda t: -4.0 - 10.0 * smooth((t - 20.0) / 150.0),
                lambda t: (48.0 * s - shrink) * grow(t),
                lambda t: (45.0 * s - shrink) * grow(t),
            ),
        )

    def leg(shrink: float) -> Lobe:
        def calf(t: np.ndarray) -> np.ndarray:
            return np.exp(-(((t + 120.0) / 90.0) ** 2))

        top = lambda t: cap(t, 70.0, -65.0, 3.0)  # noqa: E731
        return Lobe(
            knee,
            make_profile(
                -length_mm,
                70.0,
                0.5,
                0.0,
                lambda t: -6.0 - 16.0 * calf(t),
                lambda t: (47.0 * s - shrink) * (1 + 0.1 * calf(t)) * top(t),
                lambda t: (44.0 * s - shrink) * (1 + 0.35 * calf(t)) * top(t),
            ),
        )

    return [thigh(0.0), leg(0.0)], [thigh(fat), leg(fat)]
