"""Framing of lower-leg films: tibia films after stemmed revisions, and films of the distal leg and ankle.

A model that has only seen films centred on the knee takes any long bone shaft for whatever it saw there;
films of the whole tibia (knee at the top edge) and of the distal leg (no knee) teach it where the tibia
and fibula run and end.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Tibial length, plateau to plafond (mm, bone_scale 1): adult tibiae are ~330-400 mm (mean ~365 in men).
TIBIA_LENGTH_MM = 365.0
# A knee film is centred this far above the tibial plateau (mm), on the joint line.
FILM_CENTRE_ABOVE_PLATEAU_MM = 8.0


@dataclass(frozen=True)
class LegFraming:
    """Where a lower-leg film lies along the leg (object-plane mm, below the knee's film centre).

    Attributes:
        field_mm: length of leg the film must show.
        center_below_knee_mm: how far below the knee's centre the film's centre lies.
        aspect: columns over rows (tibia films are collimated narrow).
        framing: "tibia" (the whole tibia, the knee at the top edge) or "distal_leg" (no knee on the film).
    """

    field_mm: float
    center_below_knee_mm: float
    aspect: float
    framing: str


def leg_framing(rng: np.random.Generator, fraction: float, bone_scale: float) -> LegFraming | None:
    """The framing of a single-knee AP film: on the lower leg with probability ``fraction``, else None
    (a film centred on the knee)."""
    if rng.random() >= fraction:
        return None
    plafond_mm = TIBIA_LENGTH_MM * bone_scale + FILM_CENTRE_ABOVE_PLATEAU_MM
    shows_knee = bool(rng.random() < 0.5)
    top_mm = float(rng.uniform(-70.0, -30.0)) if shows_knee else float(rng.uniform(70.0, 0.45 * plafond_mm))
    bottom_mm = plafond_mm + float(rng.uniform(30.0, 90.0))
    return LegFraming(
        field_mm=bottom_mm - top_mm,
        center_below_knee_mm=0.5 * (top_mm + bottom_mm),
        aspect=float(rng.uniform(0.35, 0.75)),
        framing="tibia" if shows_knee else "distal_leg",
    )
