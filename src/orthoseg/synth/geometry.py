"""Closed-form ray geometry: the interval each detector ray spends inside a solid, on the pixel grid.

Solids are built from two primitives in a local frame (axes m, a, t; mm):

* ``Lobe``: a generalised elliptic cylinder along t whose cross-section (centre, two semi-axes) is a
  tabulated profile of t, optionally clipped by half-spaces. With profiles one models shafts, flared
  metaphyses, rounded condyles, stems and pegs; a constant profile is an elliptic cylinder.
* ``Polytope``: an intersection of half-spaces (plates, keels, boxes, cut planes).

Rays are parallel (magnification is applied to the pixel spacing), one per pixel. For a ray the solid
is entered at depth ``lo`` and left at ``hi`` (mm along the beam, the same origin for every frame),
so unions, intersections and differences of solids along a ray are interval arithmetic. A ray across
a lobe's axis (t constant along it) meets one cross-section: its chord is closed form. A ray that also
runs along the axis (a flexed femur's lobes on an AP film) crosses changing sections: its entry and
exit are found by root finding on the lobe's implicit function (``orthoseg.synth.lobe_trace``), to
~0.02 mm.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

EMPTY_DEPTH = np.float32(0.0)


def rotation(axis: str, angle_deg: float) -> np.ndarray:
    """3x3 rotation matrix about frame axis 'm' (x), 'a' (y) or 't' (z), right-handed."""
    c, s = np.cos(np.radians(angle_deg)), np.sin(np.radians(angle_deg))
    if axis == "m":
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    if axis == "a":
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    if axis == "t":
        return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    raise ValueError(f"axis must be 'm', 'a' or 't', got {axis!r}")


@dataclass(frozen=True)
class Frame:
    """A local frame: ``origin`` and ``axes`` (columns = unit m, a, t axes) in parent coordinates (mm)."""

    origin: np.ndarray
    axes: np.ndarray

    @staticmethod
    def identity() -> Frame:
        return Frame(np.zeros(3), np.eye(3))

    def child(self, offset: tuple[float, float, float] | np.ndarray, rot: np.ndarray | None = None) -> Frame:
        """A frame at ``offset`` (in this frame's coordinates), rotated by ``rot`` relative to this one."""
        axes = self.axes if rot is None else self.axes @ rot
        return Frame(self.origin + self.axes @ np.asarray(offset, dtype=float), axes)

    def to_parent(self, point: tuple[float, float, float] | np.ndarray) -> np.ndarray:
        return self.origin + self.axes @ np.asarray(point, dtype=float)

    def direction(self, vector: tuple[float, float, float] | np.ndarray) -> np.ndarray:
        return self.axes @ np.asarray(vector, dtype=float)


@dataclass(frozen=True)
class Plane:
    """Half-space ``normal . q <= offset`` in the primitive's frame (normal need not be unit)."""

    normal: tuple[float, float, float]
    offset: float


def tilted_plane(normal: tuple[float, float, float], point: tuple[float, float, float]) -> Plane:
    """Half-space on the side opposite to ``normal`` of the plane through ``point``."""
    n = np.asarray(normal, dtype=float)
    n = n / np.linalg.norm(n)
    return Plane((float(n[0]), float(n[1]), float(n[2])), float(n @ np.asarray(point, dtype=float)))


# A function of the t array (mm): one value per t, or one for all.
AlongT = Callable[[np.ndarray], np.ndarray | float]
# One of a profile's columns: a number, or a function of t.
ProfileSpec = float | AlongT


@dataclass
class Profile:
    """Cross-sections along t on a uniform grid: centre (cm, ca) and semi-axes (rm, ra), mm."""

    t0: float
    dt: float
    cm: np.ndarray
    ca: np.ndarray
    rm: np.ndarray
    ra: np.ndarray

    @property
    def t1(self) -> float:
        return self.t0 + self.dt * (len(self.rm) - 1)

    @property
    def t(self) -> np.ndarray:
        return self.t0 + self.dt * np.arange(len(self.rm))


def make_profile(
    t0: float, t1: float, dt: float, cm: ProfileSpec, ca: ProfileSpec, rm: ProfileSpec, ra: ProfileSpec
) -> Profile:
    """Tabulate a profile; each of cm, ca, rm, ra is a number or a function of the t array."""
    n = max(2, int(np.ceil((t1 - t0) / dt)) + 1)
    t = t0 + dt * np.arange(n)

    def value(spec: ProfileSpec) -> np.ndarray:
        out = spec(t) if callable(spec) else np.full(n, float(spec))
        return np.asarray(out, dtype=np.float64)

    return Profile(t0, dt, value(cm), value(ca), np.maximum(value(rm), 0.0), np.maximum(value(ra), 0.0))


@dataclass
class Lobe:
    """Generalised elliptic cylinder (profile along t) clipped by half-spaces, in ``frame``."""

    frame: Frame
    profile: Profile
    planes: tuple[Plane, ...] = ()

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        p = self.profile
        lo = np.array([np.min(p.cm - p.rm), np.min(p.ca - p.ra), p.t0])
        hi = np.array([np.max(p.cm + p.rm), np.max(p.ca + p.ra), p.t1])
        return lo, hi


@dataclass
class Polytope:
    """Intersection of half-spaces, inside the box ``lo``..``hi`` (frame coordinates, for bounding)."""

    frame: Frame
    planes: tuple[Plane, ...]
    lo: tuple[float, float, float]
    hi: tuple[float, float, float]

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(self.lo, dtype=float), np.asarray(self.hi, dtype=float)


def box(frame: Frame, lo: tuple[float, float, float], hi: tuple[float, float, float]) -> Polytope:
    """Axis-aligned cuboid in ``frame``."""
    planes = (
        Plane((1, 0, 0), hi[0]),
        Plane((-1, 0, 0), -lo[0]),
        Plane((0, 1, 0), hi[1]),
        Plane((0, -1, 0), -lo[1]),
        Plane((0, 0, 1), hi[2]),
        Plane((0, 0, -1), -lo[2]),
    )
    return Polytope(frame, planes, lo, hi)


Primitive = Lobe | Polytope


@dataclass(frozen=True)
class Camera:
    """Parallel projection of one knee's coordinates onto the pixel grid.

    Attributes:
        center: knee-coordinate point that lands on pixel (i0, j0) at depth 0.
        e_u, e_v: unit image directions of increasing column and row, knee coordinates.
        beam: unit beam direction (source to detector), knee coordinates.
        spacing_mm: pixel spacing in the plane of the knee.
        shape: (rows, columns).
        i0, j0: pixel of ``center``.
    """

    center: np.ndarray
    e_u: np.ndarray
    e_v: np.ndarray
    beam: np.ndarray
    spacing_mm: float
    shape: tuple[int, int]
    i0: float
    j0: float

    def project(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) knee points -> (N, 2) pixel (row, column) coordinates."""
        d = np.atleast_2d(points) - self.center
        return np.stack(
            [d @ self.e_v / self.spacing_mm + self.i0, d @ self.e_u / self.spacing_mm + self.j0], 1
        )

    def direction_2d(self, vector: np.ndarray) -> np.ndarray:
        """A knee-coordinate direction as seen on the image: (row, column) components, not normalised."""
        return np.array([vector @ self.e_v, vector @ self.e_u])


@dataclass
class Span:
    """Per-pixel depth interval [lo, hi] of rays through a solid, on the bounding box r0:r1, c0:c1."""

    r0: int
    r1: int
    c0: int
    c1: int
    lo: np.ndarray = field(repr=False)
    hi: np.ndarray = field(repr=False)

    def length(self) -> np.ndarray:
        return np.maximum(self.hi - self.lo, 0.0)

    @property
    def box(self) -> tuple[int, int, int, int]:
        return self.r0, self.r1, self.c0, self.c1


Box = tuple[int, int, int, int]


def _pixel_box(prim: Primitive, camera: Camera, margin: int = 2) -> Box | None:
    lo, hi = prim.bounds()
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    pix = camera.project(corners @ prim.frame.axes.T + prim.frame.origin)
    r0 = max(int(np.floor(pix[:, 0].min())) - margin, 0)
    r1 = min(int(np.ceil(pix[:, 0].max())) + margin, camera.shape[0])
    c0 = max(int(np.floor(pix[:, 1].min())) - margin, 0)
    c1 = min(int(np.ceil(pix[:, 1].max())) + margin, camera.shape[1])
    if r0 >= r1 or c0 >= c1:
        return None
    return r0, r1, c0, c1


def _linear(coef: np.ndarray, const: float, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """const + coef[0] * row + coef[1] * column on the grid (float32)."""
    return (np.float32(const) + np.float32(coef[0]) * rows)[:, None] + (np.float32(coef[1]) * cols)[None, :]


def trace(prim: Primitive, camera: Camera, within: Box | None = None) -> Span | None:
    """Depth intervals of every pixel's ray through ``prim`` (None when it misses the image).

    Args:
        prim: the solid.
        camera: the view.
        within: only evaluate inside this pixel box (rows r0:r1, columns c0:c1), e.g. a clip's box.
    """
    bbox = _pixel_box(prim, camera)
    if bbox is None:
        return None
    r0, r1, c0, c1 = bbox
    if within is not None:
        r0, r1, c0, c1 = max(r0, within[0]), min(r1, within[1]), max(c0, within[2]), min(c1, within[3])
        if r0 >= r1 or c0 >= c1:
            return None
    rows = np.arange(r0, r1, dtype=np.float32)
    cols = np.arange(c0, c1, dtype=np.float32)
    rot = prim.frame.axes.T
    # Ray of pixel (i, j): q(tau) = q_base + i * q_i + j * q_j + tau * d, in the primitive's frame.
    q_base = rot @ (
        camera.center
        - prim.frame.origin
        - camera.i0 * camera.spacing_mm * camera.e_v
        - camera.j0 * camera.spacing_mm * camera.e_u
    )
    q_i = rot @ (camera.spacing_mm * camera.e_v)
    q_j = rot @ (camera.spacing_mm * camera.e_u)
    d = rot @ camera.beam
    if isinstance(prim, Lobe):
        from orthoseg.synth.lobe_trace import lobe_interval

        lo, hi = lobe_interval(prim.profile, q_base, q_i, q_j, d, rows, cols)
    else:
        lo = np.full((len(rows), len(cols)), -1e6, dtype=np.float32)
        hi = np.full((len(rows), len(cols)), 1e6, dtype=np.float32)
    for plane in prim.planes:
        n = np.asarray(plane.normal, dtype=float)
        k = float(n @ d)
        rhs_coef = np.array([-(n @ q_i), -(n @ q_j)])
        rhs_const = plane.offset - float(n @ q_base)
        if abs(k) < 1e-9:
            outside = _linear(rhs_coef, rhs_const, rows, cols) < 0
            hi[outside] = lo[outside]
        elif k > 0:
            np.minimum(hi, _linear(rhs_coef / k, rhs_const / k, rows, cols), out=hi)
        else:
            np.maximum(lo, _linear(rhs_coef / k, rhs_const / k, rows, cols), out=lo)
    return Span(r0, r1, c0, c1, lo, hi)


def intersect(a: Span, b: Span) -> Span | None:
    """Per-ray intersection of two spans (on the overlap of their boxes)."""
    r0, r1 = max(a.r0, b.r0), min(a.r1, b.r1)
    c0, c1 = max(a.c0, b.c0), min(a.c1, b.c1)
    if r0 >= r1 or c0 >= c1:
        return None
    sa = (slice(r0 - a.r0, r1 - a.r0), slice(c0 - a.c0, c1 - a.c0))
    sb = (slice(r0 - b.r0, r1 - b.r0), slice(c0 - b.c0, c1 - b.c0))
    return Span(r0, r1, c0, c1, np.maximum(a.lo[sa], b.lo[sb]), np.minimum(a.hi[sa], b.hi[sb]))


@dataclass
class Field:
    """A path-length (or any) map on a bounding box of the image."""

    r0: int
    r1: int
    c0: int
    c1: int
    values: np.ndarray = field(repr=False)

    def add_to(self, image: np.ndarray, scale: float = 1.0) -> None:
        image[self.r0 : self.r1, self.c0 : self.c1] += np.float32(scale) * self.values

    @property
    def box(self) -> tuple[int, int, int, int]:
        return self.r0, self.r1, self.c0, self.c1

    def mask_into(self, mask: np.ndarray, threshold: float = 1e-3) -> None:
        mask[self.r0 : self.r1, self.c0 : self.c1] |= self.values > threshold


def span_length(span: Span) -> Field:
    return Field(span.r0, span.r1, span.c0, span.c1, span.length())


def union_length(spans: list[Span], clip: Span | None = None) -> Field | None:
    """Length of the union of intervals along each ray (inclusion-exclusion to second order).

    Exact when no three intervals overlap on one ray, which holds for the lobes one bone is built of
    (condyles lie side by side; each meets the metaphysis). With ``clip``, only the part inside it.
    """
    parts = [s for s in spans if s is not None]
    if clip is not None:
        parts = [x for x in (intersect(s, clip) for s in parts) if x is not None]
    if not parts:
        return None
    r0 = min(s.r0 for s in parts)
    r1 = max(s.r1 for s in parts)
    c0 = min(s.c0 for s in parts)
    c1 = max(s.c1 for s in parts)
    total = np.zeros((r1 - r0, c1 - c0), dtype=np.float32)
    for s in parts:
        total[s.r0 - r0 : s.r1 - r0, s.c0 - c0 : s.c1 - c0] += s.length()
    for i in range(len(parts)):
        for j in range(i + 1, len(parts)):
            both = intersect(parts[i], parts[j])
            if both is not None:
                total[both.r0 - r0 : both.r1 - r0, both.c0 - c0 : both.c1 - c0] -= both.length()
    np.maximum(total, 0.0, out=total)
    return Field(r0, r1, c0, c1, total)


def subtract(a: Field | None, b: Field | None) -> Field | None:
    """a - b on a's box (clipped at zero): e.g. the cortex is the outer minus the inner bone."""
    if a is None:
        return None
    out = a.values.copy()
    if b is not None:
        r0, r1 = max(a.r0, b.r0), min(a.r1, b.r1)
        c0, c1 = max(a.c0, b.c0), min(a.c1, b.c1)
        if r0 < r1 and c0 < c1:
            out[r0 - a.r0 : r1 - a.r0, c0 - a.c0 : c1 - a.c0] -= b.values[
                r0 - b.r0 : r1 - b.r0, c0 - b.c0 : c1 - b.c0
            ]
    np.maximum(out, 0.0, out=out)
    return Field(a.r0, a.r1, a.c0, a.c1, out)
