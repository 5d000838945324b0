"""Seating the femur on the tibia: solve its coronal angle and position so each compartment has its gap."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from orthoseg.synth.geometry import Frame, Lobe, rotation


@dataclass(frozen=True)
class Support:
    """The surface a condyle rests on, as a plane in knee coordinates: s = s0 + gm * m + ga * a."""

    s0: float
    gm: float
    ga: float

    def height(self, m: float, a: float) -> float:
        return self.s0 + self.gm * m + self.ga * a


def surface_points(lobe: Lobe, step_mm: float = 0.25, angles: int = 72) -> np.ndarray:
    """(N, 3) points on a lobe's surface, in the coordinates of the lobe frame's parent's parent frame.

    Points are returned in the lobe's own frame; callers transform them.
    """
    p = lobe.profile
    stride = max(1, int(round(step_mm / p.dt)))
    t = p.t[::stride]
    theta = np.linspace(0, 2 * np.pi, angles, endpoint=False)
    m = p.cm[::stride, None] + p.rm[::stride, None] * np.cos(theta)[None]
    a = p.ca[::stride, None] + p.ra[::stride, None] * np.sin(theta)[None]
    keep = (p.rm[::stride] > 0)[:, None] & np.ones_like(theta, dtype=bool)[None]
    pts = np.stack([m, a, np.broadcast_to(t[:, None], m.shape)], -1)[keep]
    for plane in lobe.planes:
        pts = pts[pts @ np.asarray(plane.normal) <= plane.offset + 1e-6]
    return pts


def lowest(points_local: np.ndarray, frame: Frame) -> np.ndarray:
    """The point (knee coordinates) with the smallest s among ``points_local`` placed by ``frame``."""
    world = points_local @ frame.axes.T + frame.origin
    return world[int(np.argmin(world[:, 2]))]


@dataclass(frozen=True)
class Seating:
    """Result of seating: the femur frame and the lowest (contact) points, knee coordinates."""

    frame: Frame
    contact_medial: np.ndarray
    contact_lateral: np.ndarray
    valgus_deg: float


def seat_femur(
    medial_points: np.ndarray,
    lateral_points: np.ndarray,
    supports: tuple[Support, Support],
    gaps_mm: tuple[float, float],
    flexion_deg: float,
    valgus_guess_deg: float,
    contact_a_mm: float,
    center_m_mm: float = 0.0,
) -> Seating:
    """Find the femur frame that leaves ``gaps_mm`` (medial, lateral) above the two supports.

    Args:
        medial_points, lateral_points: surface points of what touches the tibial side (native condyles
            or the femoral component's runners), femur-frame coordinates.
        supports: (medial, lateral) support planes.
        gaps_mm: target joint spaces (cartilage or polyethylene), measured along s.
        flexion_deg: knee flexion (rotation of the femur about m).
        valgus_guess_deg: starting coronal angle of the femoral anatomical axis.
        contact_a_mm: a-position of the contact points on the tibia.
        center_m_mm: m-position of the midpoint between the contacts.
    """

    def placed(valgus: float) -> tuple[Frame, np.ndarray, np.ndarray, float]:
        axes = rotation("m", flexion_deg) @ rotation("a", -valgus)
        frame = Frame(np.zeros(3), axes)
        pm, pl = lowest(medial_points, frame), lowest(lateral_points, frame)
        shift = np.array([center_m_mm - 0.5 * (pm[0] + pl[0]), contact_a_mm - 0.5 * (pm[1] + pl[1]), 0.0])
        pm, pl = pm + shift, pl + shift
        want_m = supports[0].height(pm[0], pm[1]) + gaps_mm[0]
        want_l = supports[1].height(pl[0], pl[1]) + gaps_mm[1]
        error = (pm[2] - want_m) - (pl[2] - want_l)
        shift[2] = want_m - pm[2]
        return Frame(shift, axes), pm + [0, 0, shift[2]], pl + [0, 0, shift[2]], error

    x0, x1 = valgus_guess_deg, valgus_guess_deg + 1.0
    f0, f1 = placed(x0)[3], placed(x1)[3]
    for _ in range(8):
        if abs(f1 - f0) < 1e-12:
            break
        x0, x1, f0 = x1, x1 - f1 * (x1 - x0) / (f1 - f0), f1
        f1 = placed(x1)[3]
        if abs(f1) < 1e-4:
            break
    frame, pm, pl, _ = placed(x1)
    return Seating(frame, pm, pl, float(x1))
