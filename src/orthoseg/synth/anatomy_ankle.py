"""The ankle bones under a tibia film: talus and calcaneus, which the label contract does not label.

They are there so that a model learns where the tibia and fibula end: on a film of the whole leg the
plafond and the malleoli sit on the talar dome, and the calcaneus shows below it. Frames and conventions
as in ``anatomy.py`` (knee frame K: m medial, a anterior, s superior); dimensions for ``bone_scale`` 1
(talus ~30 mm across the dome, ~30 mm tall, ~55 mm long with its neck and head; calcaneus ~75 mm long,
~40 mm tall, ~35 mm wide: Stagni 2005, Hyer 2013).
"""

from __future__ import annotations

import numpy as np

from orthoseg.synth.anatomy import DT_MM, Bone, cap, ml_factor
from orthoseg.synth.geometry import Frame, Lobe, make_profile, rotation
from orthoseg.synth.leg_framing import TIBIA_LENGTH_MM
from orthoseg.synth.scenario import KneeSpec

# The ankle's cartilage: the talar dome lies this far below the plafond (mm, bone_scale 1).
ANKLE_JOINT_SPACE_MM = 3.0


def _rounded_block(
    frame: Frame,
    t_low: float,
    t_high: float,
    center_a: float,
    half_m: float,
    half_a: float,
    shrink: float,
    top_height: float,
    bottom_height: float,
    base_taper: float = 0.0,
) -> Lobe:
    """A block with rounded ends along t (the dome on top, a rounded base), ``shrink`` mm inside; its
    mediolateral half-width narrows by the fraction ``base_taper`` from top to base."""

    def rounded(t: np.ndarray, half: float, taper: float) -> np.ndarray:
        factor = cap(t, t_high - shrink, -top_height, 2.0) * cap(t, t_low + shrink, bottom_height, 2.0)
        narrowing = 1.0 - taper * np.clip((t_high - t) / (t_high - t_low), 0.0, 1.0)
        return np.maximum((half * narrowing - shrink) * factor, 0.0)

    return Lobe(
        frame,
        make_profile(
            t_low + shrink,
            t_high - shrink,
            DT_MM,
            0.0,
            center_a,
            lambda t: rounded(t, half_m, base_taper),
            lambda t: rounded(t, half_a, 0.0),
        ),
    )


def build_ankle(spec: KneeSpec, knee: Frame) -> list[Bone]:
    """Talus (body under the plafond, neck and head pointing forwards and down) and calcaneus, in K."""
    k = spec.bone_scale
    w = ml_factor(spec)
    dome = -(TIBIA_LENGTH_MM + ANKLE_JOINT_SPACE_MM) * k
    bottom = dome - 30.0 * k
    # The talar dome is a broad convex arc under the flat plafond; the body narrows towards the subtalar
    # joint, and the neck and head, pointing forwards and down, overlap it on an AP film.
    body = [
        _rounded_block(knee, bottom, dome, 2.0 * k, 15.0 * w, 17.0 * k, shrink, 10.0 * k, 7.0 * k, 0.2)
        for shrink in (0.0, 1.0)
    ]
    neck_frame = knee.child((0.0, 14.0 * k, dome - 17.0 * k), rotation("m", -110.0))
    neck = [
        _rounded_block(neck_frame, 0.0, 32.0 * k, 0.0, 10.5 * w, 9.0 * k, shrink, 10.0 * k, 5.0 * k)
        for shrink in (0.0, 1.0)
    ]
    talus = Bone("talus", knee, [body[0], neck[0]], [body[1], neck[1]])
    # The calcaneus lies under the talus (the subtalar joint) and mostly behind it.
    heel_top = bottom + 6.0 * k
    calcaneus_lobes = [
        _rounded_block(
            knee,
            heel_top - 38.0 * k,
            heel_top,
            -18.0 * k,
            14.0 * w,
            34.0 * k,
            shrink,
            14.0 * k,
            14.0 * k,
            -0.15,
        )
        for shrink in (0.0, 1.2)
    ]
    calcaneus = Bone("calcaneus", knee, [calcaneus_lobes[0]], [calcaneus_lobes[1]])
    return [talus, calcaneus]
