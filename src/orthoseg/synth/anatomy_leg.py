"""The leg bones below the knee as solids: tibia and fibula (cortex around cancellous bone or marrow).

Frames and conventions as in ``anatomy.py`` (knee frame K: m medial, a anterior, s superior, origin at
the centre of the tibial plateau). Dimensions are for ``bone_scale`` 1; mediolateral ones also follow
``ml_factor`` (narrower in women).
"""

from __future__ import annotations

import numpy as np

from orthoseg.synth.anatomy import DT_MM, Bone, TibiaShape, cap, knotted, ml_factor, smooth, spur
from orthoseg.synth.geometry import AlongT, Frame, Lobe, Plane, make_profile, rotation
from orthoseg.synth.leg_framing import TIBIA_LENGTH_MM
from orthoseg.synth.scenario import KneeSpec

# Proximal tibia AP outline (half-width, mm, bone_scale 1) against height above the plateau (mm): plateau
# ~77 mm wide (68-74 mm women, 76-84 mm men: Mensch & Amstutz 1975, Hitt 2003, Yue 2011), a concave
# metaphyseal flare narrowing below ~15 mm to the shaft (~27 mm, 25-30 mm) by ~70-80 mm.
TIBIA_HALF_WIDTH = (
    (12.0, 38.5),
    (-8.0, 38.5),
    (-14.0, 38.0),
    (-19.0, 36.0),
    (-24.0, 32.6),
    (-29.0, 28.6),
    (-34.0, 24.8),
    (-40.0, 21.6),
    (-48.0, 19.0),
    (-58.0, 17.2),
    (-78.0, 14.7),
    (-100.0, 13.9),
    (-140.0, 13.5),
    # Distal tibia: the shaft narrows to ~23 mm at the junction of the middle and distal thirds, then
    # flares to the distal metaphysis, ~46 mm across the plafond with the medial malleolus (Hamilton 1984;
    # Tümer 2019: plafond 30-35 mm articular width, distal tibia 42-52 mm).
    (-180.0, 13.5),
    (-245.0, 12.3),
    (-280.0, 12.6),
    (-305.0, 13.4),
    (-325.0, 15.4),
    (-342.0, 18.2),
    (-355.0, 20.6),
    (-365.0, 22.0),
)


def build_tibia(spec: KneeSpec, frame: Frame) -> tuple[Bone, TibiaShape]:
    """The tibia in K: plateau (posterior slope, slight varus), flared metaphysis, tuberosity, shaft,
    distal metaphysis, plafond and medial malleolus.

    The cortex is ~1 mm under the plateau and ~5-6 mm in the diaphysis (canal ~14 mm), thinning again to
    ~1 mm over the distal metaphysis; the cancellous bone gives way to marrow ~45-95 mm below the
    plateau and returns ~60-120 mm above the plafond.
    """
    k = spec.bone_scale
    length_mm = TIBIA_LENGTH_MM * k
    w = ml_factor(spec)
    shape = TibiaShape(
        plateau_half_width=38.5 * w,
        plateau_half_depth=24.0 * k,
        plateau_center_a=-4.0 * k,
        shaft_radius=13.5 * k,
        canal_radius=7.0 * k,
        slope_deg=spec.plateau_slope_native_deg,
        varus_deg=3.0,
    )
    top = Plane((np.tan(np.radians(shape.varus_deg)), -np.tan(np.radians(shape.slope_deg)), 1.0), 0.0)

    def flare(t: np.ndarray) -> np.ndarray:
        return np.clip((t + 85 * k) / (75 * k), 0.0, 1.0) ** 1.7

    def main(shrink_fn: AlongT) -> Lobe:
        def rm(t: np.ndarray) -> np.ndarray:
            rim = 1.0 - 0.06 * np.clip((t + 4 * k) / (4 * k), 0, 1) ** 2
            width = knotted(t, TIBIA_HALF_WIDTH, k, w)
            width = width + (shape.shaft_radius - 13.5 * w) * smooth((-t - 50 * k) / (50 * k))
            # The plafond's edges are rounded, not cut square.
            return width * rim * cap(t, -length_mm, 4.0 * k, 2.5) - shrink_fn(t)

        def ra(t: np.ndarray) -> np.ndarray:
            depth = (shape.shaft_radius + 1.5 * k) + (
                shape.plateau_half_depth - shape.shaft_radius - 1.5 * k
            ) * flare(t)
            # The distal metaphysis deepens to ~33 mm anteroposteriorly at the plafond.
            depth = depth + 2.0 * k * smooth((-t - length_mm + 70 * k) / (60 * k))
            return depth - shrink_fn(t)

        return Lobe(
            frame,
            make_profile(
                -length_mm, 12.0 * k, DT_MM, 0.0, lambda t: shape.plateau_center_a * flare(t), rm, ra
            ),
            (top,),
        )

    def cortex(t: np.ndarray) -> np.ndarray:
        diaphysis = smooth((-t - 35 * k) / (45 * k)) * smooth((t + length_mm) / (90 * k))
        return 1.0 + (shape.shaft_radius - shape.canal_radius - 1.0) * diaphysis

    outer = [main(lambda t: 0.0)]
    inner_main = main(cortex)
    # Subchondral plate: the cancellous bone stops ~1.8 mm below the articular surface.
    inner_main.planes = (
        Plane(top.normal, -1.8 * float(np.linalg.norm(top.normal))),
        Plane((0.0, 0.0, -1.0), length_mm - 1.8),
    )
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
    # Medial malleolus: ~14 mm wide at the plafond, tapering to a rounded tip ~13 mm below it on the
    # medial side, its medial surface continuing the tibia's medial cortex.
    tip = -length_mm - 13.0 * k

    def taper(t: np.ndarray) -> np.ndarray:
        return 0.45 + 0.55 * smooth((t - tip) / (22.0 * k))

    def malleolus_cm(t: np.ndarray) -> np.ndarray:
        return 22.0 * w - 7.0 * k * taper(t) - 1.5 * k * (1.0 - taper(t))

    for shrink, bucket in ((0.0, outer), (1.2, inner)):

        def malleolus_rm(t: np.ndarray, s: float = shrink) -> np.ndarray:
            ends = cap(t, tip + 0.5 * s, 4.0 * k, 2.0) * cap(t, -length_mm + 40.0 * k, -30.0 * k, 1.2)
            return np.maximum(7.0 * k * taper(t) * ends - s, 0.0)

        def malleolus_ra(t: np.ndarray, s: float = shrink) -> np.ndarray:
            ends = cap(t, tip + 0.5 * s, 4.0 * k, 2.0) * cap(t, -length_mm + 40.0 * k, -30.0 * k, 1.2)
            return np.maximum(9.0 * k * taper(t) * ends - s, 0.0)

        malleolus = make_profile(
            tip, -length_mm + 40.0 * k, DT_MM, malleolus_cm, 0.0, malleolus_rm, malleolus_ra
        )
        bucket.append(Lobe(frame, malleolus))
    if spec.category in ("native", "uka_medial", "uka_lateral"):
        # Tibial spines (intercondylar eminence): medial taller.
        for m, height in ((4.5 * k, 6.0 * k), (-4.5 * k, 5.0 * k)):
            for shrink, bucket in ((0.0, outer), (0.8, inner)):

                def spine_rm(t: np.ndarray, h: float = height, s: float = shrink) -> np.ndarray:
                    return (5.0 * k - s) * np.sqrt(np.clip(1 - (np.maximum(t, 0) / h) ** 1.5, 0, 1))

                def spine_ra(t: np.ndarray, h: float = height, s: float = shrink) -> np.ndarray:
                    return (8.0 * k - s) * np.sqrt(np.clip(1 - (np.maximum(t, 0) / h) ** 2, 0, 1))

                spine = make_profile(-6.0, height - shrink, DT_MM, m, -2.0 * k, spine_rm, spine_ra)
                bucket.append(Lobe(frame, spine))
    if spec.osteophytes:
        size = 1.0 + 1.0 * spec.kl_grade
        for sign in (1.0, -1.0):
            base = (sign * (shape.plateau_half_width - 3.0), -2.0, -3.5)
            outer.append(spur(frame, base, sign * 45.0, 2.3 * size, 1.0 * size, 9.0))
    bone = Bone(
        "tibia",
        frame,
        outer,
        inner,
        trabecular_until_t=(-45 * k, -95 * k),
        joint_t=0.0,
        distal_cancellous_t=(-length_mm + 120 * k, -length_mm + 60 * k),
        distal_joint_t=-length_mm,
    )
    return bone, shape


def build_fibula(spec: KneeSpec, knee: Frame) -> Bone:
    """The fibula, posterolateral: head ~25 mm wide, its apex ~12 mm below the plateau, tucked behind the
    tibia's lateral edge (overlapping it on AP); neck narrowing to a ~13 mm shaft (Hollinshead; fibular
    head 22-28 mm, mid-shaft 11-15 mm). Distally it converges on the tibia (overlapping its lateral edge
    by ~5-10 mm on AP) and widens into the lateral malleolus, whose tip lies ~25 mm below the plafond."""
    k = spec.bone_scale
    w = ml_factor(spec)
    top = -12.0 * k
    tip = -(TIBIA_LENGTH_MM + 25.0) * k
    frame = knee.child((-36.5 * w, -17.0 * k, 0.0), rotation("a", -2.4))

    def outline(shrink: float) -> Lobe:
        def malleolus(t: np.ndarray) -> np.ndarray:
            return smooth((-t + tip + 75 * k) / (45 * k))

        def rm(t: np.ndarray) -> np.ndarray:
            head = 1.0 - smooth((-t - 28 * k) / (16 * k))
            radius = 6.5 * k + 6.0 * k * head + 1.0 * k * malleolus(t)
            return np.maximum(radius * cap(t, top, -9 * k, 1.7) * cap(t, tip, 14 * k, 1.8) - shrink, 0.0)

        def ra(t: np.ndarray) -> np.ndarray:
            head = 1.0 - smooth((-t - 28 * k) / (16 * k))
            radius = 6.5 * k + 6.0 * k * head + 4.5 * k * malleolus(t)
            return np.maximum(radius * cap(t, top, -9 * k, 1.7) * cap(t, tip, 14 * k, 1.8) - shrink, 0.0)

        def cm(t: np.ndarray) -> np.ndarray:
            # The head bulges medially, towards the proximal tibiofibular joint.
            return 2.0 * k * (1.0 - smooth((-t - 22 * k) / (16 * k)))

        return Lobe(frame, make_profile(tip, top, DT_MM, cm, 0.0, rm, ra))

    outer = [outline(0.0)]
    # Apex (styloid process) rising from the posterolateral head.
    outer.append(spur(frame, (-5.0 * k, -2.0 * k, top - 4.0 * k), 12.0, 6.5 * k, 4.0 * k, 4.5 * k))
    return Bone(
        "fibula",
        frame,
        outer,
        [outline(2.2 * k)],
        trabecular_until_t=(-45 * k, -75 * k),
        distal_cancellous_t=(tip + 100 * k, tip + 50 * k),
    )
