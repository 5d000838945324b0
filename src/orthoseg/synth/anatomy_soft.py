"""The soft-tissue envelope of the knee as solids: skin (fat) and muscle, thigh and leg."""

from __future__ import annotations

import numpy as np

from orthoseg.synth.anatomy import cap, smooth
from orthoseg.synth.geometry import Frame, Lobe, make_profile
from orthoseg.synth.scenario import KneeSpec


def build_soft_tissue(
    spec: KneeSpec, knee: Frame, femur: Frame, length_mm: float = 480.0
) -> tuple[list[Lobe], list[Lobe]]:
    """Skin envelope (thigh and leg down past the heel, overlapping smoothly at the knee) and the muscle
    inside the fat."""
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

    def leg(shrink: float, tendons: float) -> Lobe:
        def calf(t: np.ndarray) -> np.ndarray:
            return np.exp(-(((t + 120.0) / 90.0) ** 2))

        def ankle(t: np.ndarray) -> np.ndarray:
            # The leg narrows to ~70 mm across the malleoli; below the calf the muscle gives way to
            # tendons, so the envelope's muscle thins by ``tendons`` mm more than its fat.
            return 1.0 - 0.24 * smooth((-t - 220.0) / 120.0)

        def inset(t: np.ndarray) -> np.ndarray:
            return shrink + tendons * smooth((-t - 250.0) / 90.0)

        top = lambda t: cap(t, 70.0, -65.0, 3.0)  # noqa: E731
        return Lobe(
            knee,
            make_profile(
                -length_mm,
                70.0,
                0.5,
                0.0,
                lambda t: -6.0 - 16.0 * calf(t),
                lambda t: np.maximum((47.0 * s * ankle(t) - inset(t)) * (1 + 0.1 * calf(t)) * top(t), 0.0),
                lambda t: np.maximum((44.0 * s * ankle(t) - inset(t)) * (1 + 0.35 * calf(t)) * top(t), 0.0),
            ),
        )

    return [thigh(0.0), leg(0.0, 0.0)], [thigh(fat), leg(fat, 12.0)]
