"""The native knee as solids: femur and patella (cortex around trabecular bone), shared shapes and helpers.

The tibia and fibula are in ``anatomy_leg.py``, the soft-tissue envelope in ``anatomy_soft.py``.

Frames (mm): a knee frame K with m medial, a anterior and s superior, origin at the centre of the tibial
plateau. The tibia is built in K; the femur in its own frame F (origin between the distal condyles,
t along the anatomical axis), placed later on the tibia (``placement.py``). Dimensions are for an
average adult and scale with ``KneeSpec.bone_scale``; the soft-tissue envelope with ``soft_scale``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from orthoseg.labels import BY_NAME
from orthoseg.synth.geometry import AlongT, Frame, Lobe, Plane, Polytope, make_profile, rotation
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
        name: label-contract structure name, or the name of a bone the contract does not label (its
            pixels stay background: the ankle bones under a tibia film).
        frame: the bone's frame (every lobe's frame is this frame).
        outer: lobes whose union is the whole bone.
        inner: lobes whose union is the bone inside the cortex.
        trabecular_until_t: t (bone frame) where cancellous bone gives way to the marrow cavity,
            as (start, end) of the transition; None when the inside is cancellous everywhere.
        keep: optional cut (a ``Polytope`` region) the bone is trimmed to, set by implants.
        joint_t: t of the joint surface, where the bone has one.
        distal_cancellous_t: t where the marrow cavity gives way again to cancellous bone towards the
            far end (start, end), for long bones shown whole (the distal tibia and fibula).
        distal_joint_t: t of the far joint surface (the tibial plafond), with denser subchondral bone.
        shaft_direction: unit direction (bone frame) of the diaphysis' centreline: the anatomical axis
            a film shows and the angles' truth uses. The frame's t axis when the shaft is straight.
    """

    name: str
    frame: Frame
    outer: list[Lobe]
    inner: list[Lobe]
    trabecular_until_t: tuple[float, float] | None = None
    keep: list[Cut] = field(default_factory=list)
    joint_t: float | None = None
    distal_cancellous_t: tuple[float, float] | None = None
    distal_joint_t: float | None = None
    shaft_direction: tuple[float, float, float] = (0.0, 0.0, 1.0)

    @property
    def labelled(self) -> bool:
        """Whether the label contract has a structure for this bone."""
        return self.name in BY_NAME


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


def arc(x: np.ndarray) -> np.ndarray:
    """Quarter circle on [0, 1]: 0 at 0 rising to 1 with zero slope (clipped outside)."""
    x = np.clip(x, 0.0, 1.0)
    return np.sqrt(1.0 - (1.0 - x) ** 2)


def knotted(
    t: np.ndarray,
    knots: tuple[tuple[float, float], ...],
    t_scale: float,
    v_scale: float,
    sigma_mm: float = 2.5,
) -> np.ndarray:
    """Piecewise-linear profile through ``knots`` (t, value), scaled, then Gaussian-smoothed along t."""
    pts = sorted(knots)
    y = np.interp(t, [p[0] * t_scale for p in pts], [p[1] * v_scale for p in pts])
    dt = float(t[1] - t[0]) if len(t) > 1 else 1.0
    n = int(3.0 * sigma_mm / dt)
    if n < 1 or len(t) < 2:
        return y
    kernel = np.exp(-0.5 * (np.arange(-n, n + 1) * dt / sigma_mm) ** 2)
    return np.convolve(np.pad(y, n, mode="edge"), kernel / kernel.sum(), mode="valid")


def ml_factor(spec: KneeSpec) -> float:
    """Mediolateral scale: women's distal femora and tibiae are narrower for their size (lower ML/AP aspect,
    Chin et al. 2011, Yue et al. 2011), on top of ``bone_scale`` (mean 0.93 women, 1.04 men)."""
    return spec.bone_scale * (0.975 if spec.female else 1.0)


# Distal femur AP outline (half-width, mm, for bone_scale 1) against height above the condyles (mm):
# broad epicondylar block (~81 mm; 70-76 mm women, 80-88 mm men: Mensch & Amstutz 1975, Yoshioka
# 1987, Lonner 2008), a concave metaphyseal flare that reaches the shaft (~29 mm, 27-32 mm: Noble 1988)
# within ~60-80 mm of the joint line.
FEMUR_HALF_WIDTH = (
    (6.0, 30.0),
    (11.0, 38.8),
    (18.0, 40.6),
    (25.0, 40.6),
    (30.0, 39.4),
    (34.0, 36.4),
    (38.0, 31.8),
    (43.0, 27.6),
    (48.0, 24.8),
    (58.0, 21.0),
    (78.0, 17.6),
    (100.0, 15.6),
    (130.0, 14.5),
)


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
    epicondyle: float = 0.0,
) -> Lobe:
    """One femoral condyle: a sagittal circle posteriorly and distally, the trochlea anteriorly.

    Coronally (AP view) the distal surface is flat, with a rounded outer corner (~9 mm) and a tighter
    corner on the notch side; the outer side bulges by ``epicondyle`` mm 10-25 mm up (the epicondyle) and
    the posterior condyle narrows above ~28 mm, under the metaphyseal flare.
    """
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
    side = 1.0 if m >= 0 else -1.0
    outer_r, notch_r = 9.0 * k, 6.0 * k

    def edges(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        u = t - t0
        outer = (half_width - shrink) - outer_r * (1.0 - arc(u / outer_r))
        if epicondyle:
            outer = outer + epicondyle * smooth((u - 6.0 * k) / (10.0 * k))
        inner = -(half_width - shrink) + notch_r * (1.0 - arc(u / notch_r))
        return outer, inner

    def cm(t: np.ndarray) -> np.ndarray:
        outer, inner = edges(t)
        return m + side * 0.5 * (outer + inner)

    def rm(t: np.ndarray) -> np.ndarray:
        outer, inner = edges(t)
        return 0.5 * (outer - inner) * (1.0 - smooth((t - bottom_t - 28.0 * k) / (20.0 * k)))

    return Lobe(
        frame,
        make_profile(
            t0,
            t1,
            DT_MM,
            cm,
            lambda t: 0.5 * (a_min(t) + a_max(t)),
            rm,
            lambda t: np.clip(0.5 * (a_max(t) - a_min(t)), 0.0, None),
        ),
    )


def build_femur(spec: KneeSpec, frame: Frame, length_mm: float = 420.0) -> tuple[Bone, FemurShape]:
    """The femur in its frame F: shaft, metaphysis, epicondylar block, two condyles.

    AP: a broad trapezoid with rounded corners, a flat distal surface, a shallow intercondylar notch
    (~20 mm wide, ~25% of the condylar width: notch width index, Souryal 1993) and epicondylar bumps,
    narrowing quickly to the shaft. The cortex is ~1 mm in the metaphysis and 6-7 mm in the diaphysis
    (canal ~15 mm), and the cancellous bone gives way to marrow from ~35-85 mm up.
    """
    k = spec.bone_scale
    w = ml_factor(spec)
    # The medial condyle reaches further along the anatomical axis (joint line obliquity, aLDFA ~81 deg).
    obliquity = np.tan(np.radians(np.clip(spec.tibiofemoral_base_deg - 3.0, -2.0, 9.0)))
    shape = FemurShape(
        condyle_m=(22.5 * w, -22.5 * w),
        condyle_half_width=(14.8 * w, 15.3 * w),
        condyle_radius=(22.0 * k, 20.5 * k),
        condyle_center_a=-9.0 * k,
        condyle_bottom_t=(-21.0 * k * obliquity, 21.0 * k * obliquity),
        anterior_a=16.0 * k,
        shaft_radius=14.7 * k,
        canal_radius=7.8 * k,
    )
    bow = 0.004 * spec.shaft_bow
    t_base = 4.0 * k

    def meta(shrink_fn: AlongT) -> Lobe:
        def rm(t: np.ndarray) -> np.ndarray:
            width = knotted(t, FEMUR_HALF_WIDTH, k, w)
            width = width + (shape.shaft_radius - 14.5 * w) * smooth((t - 60 * k) / (60 * k))
            # Notch roof: a low arch between the condyles.
            return (width - shrink_fn(t)) * cap(t, t_base, 7.0 * k, 1.5)

        def ra(t: np.ndarray) -> np.ndarray:
            # Thin (trochlear groove) over the notch, full depth from ~25 mm up.
            depth = shape.shaft_radius + (21.0 * k - shape.shaft_radius) * (
                1 - smooth((t - 22 * k) / (70 * k))
            )
            notch = 0.8 + 0.2 * smooth((t - t_base) / (16 * k))
            return (depth * notch - shrink_fn(t)) * cap(t, t_base, 6.0 * k, 2.0)

        def ca(t: np.ndarray) -> np.ndarray:
            # The condyles sit behind the shaft; the centre reaches the shaft's line where the coronal
            # flare does (~60 mm), then follows the anterior bow.
            base = -3.0 * k * (1 - smooth((t - 20 * k) / (40 * k))) + bow * np.clip(t - 60, 0, None) * 4
            return base + 3.0 * k * (1 - smooth((t - t_base) / (16 * k)))

        return Lobe(frame, make_profile(t_base, length_mm, DT_MM, 0.0, ca, rm, ra))

    def cortex(t: np.ndarray) -> np.ndarray:
        return 1.0 + (shape.shaft_radius - shape.canal_radius - 1.0) * smooth((t - 30 * k) / (50 * k))

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
        epicondyle = (2.5 if side == 0 else 2.0) * w
        outer.append(condyle_lobe(*args, epicondyle=epicondyle))
        inner.append(condyle_lobe(*args, shrink=1.1, epicondyle=epicondyle))
    if spec.osteophytes:
        outer.extend(_osteophytes_femur(spec, frame, shape))
    shaft = np.array([0.0, 4 * bow, 1.0]) / float(np.hypot(4 * bow, 1.0))  # the centre's slope above 60 mm
    bone = Bone(
        "femur",
        frame,
        outer,
        inner,
        trabecular_until_t=(35 * k, 85 * k),
        joint_t=0.0,
        shaft_direction=(float(shaft[0]), float(shaft[1]), float(shaft[2])),
    )
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


def build_patella(spec: KneeSpec, femur: Frame, shape: FemurShape, flexion_deg: float) -> Bone:
    """The patella on the trochlea; it slides distally and rotates with flexion.

    ~43 mm wide, ~40 mm tall and ~21 mm thick (40-45 / 35-42 / 20-25 mm: Baldwin & House 2005,
    Iranpour 2010): a lens thinning towards its margins, with a thin (~0.5 mm) cortex and sparse
    cancellous bone, so that on an AP view it is a faint density over the femur rather than a bright blob.
    """
    k = spec.bone_scale
    w = ml_factor(spec)
    pivot = np.array([0.0, shape.condyle_center_a, 21.0 * k])
    theta = np.radians(55.0 + 0.8 * flexion_deg)
    center = pivot + 36.0 * k * np.array([0.0, np.sin(theta), np.cos(theta)]) + np.array([3.0 * k, 0.0, 0.0])
    frame = femur.child(center, rotation("m", -0.6 * flexion_deg + 4.0))
    resurfaced = spec.patella_resurfaced
    half_h = 20.0 * k

    def lobe(shrink: float) -> Lobe:
        def rm(t: np.ndarray) -> np.ndarray:
            # Broad rounded base (superior pole), narrower apex (inferior pole).
            taper = 0.72 + 0.28 * np.clip((t + half_h) / (1.4 * half_h), 0, 1)
            return (
                (21.5 * w - shrink)
                * taper
                * cap(t, -half_h + shrink, 14 * k, 1.3)
                * cap(-t, -half_h + shrink, 12 * k, 1.6)
            )

        def ra(t: np.ndarray) -> np.ndarray:
            return (
                (10.5 * k - shrink)
                * cap(t, -half_h + shrink, 16 * k, 1.2)
                * cap(-t, -half_h + shrink, 10 * k, 1.3)
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

    # A cancellous-to-marrow transition spanning far beyond the bone weights its cancellous bone
    # uniformly at ~0.6 (render.project): sparse trabeculae, no dense subchondral band.
    sparse = (-400.0 * k, 400.0 * k)
    return Bone("patella", frame, [lobe(0.0)], [lobe(0.5)], trabecular_until_t=sparse)
