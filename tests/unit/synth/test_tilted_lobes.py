"""Lobes whose axis leans toward the beam (a flexed femur on an AP film): traced against exact references.

A lobe's sections vary along its axis t; a ray that runs along t as it crosses the lobe meets changing
sections. The references: a sphere (its silhouette is a circle and its chords 2 sqrt(R^2 - r^2) at any
tilt) and brute-force sampling of rays against the lobe's implicit definition (profile interpolated
linearly between samples), refined by bisection.
"""

from __future__ import annotations

import numpy as np
import pytest

from orthoseg.synth.anatomy import condyle_lobe
from orthoseg.synth.geometry import Camera, Frame, Lobe, make_profile, rotation, trace

SPACING = 0.1
CAMERA = Camera(
    np.zeros(3),
    np.array([1.0, 0.0, 0.0]),
    np.array([0.0, 0.0, -1.0]),
    np.array([0.0, -1.0, 0.0]),
    SPACING,
    (520, 520),
    259.5,
    259.5,
)


def _inside(lobe: Lobe, q: np.ndarray) -> np.ndarray:
    """Points (..., 3, lobe frame) inside the lobe: sections interpolated linearly along t."""
    p = lobe.profile
    t = q[..., 2]
    cm, ca = np.interp(t, p.t, p.cm), np.interp(t, p.t, p.ca)
    rm, ra = np.interp(t, p.t, p.rm), np.interp(t, p.t, p.ra)
    ok = (t >= p.t0 - 0.5 * p.dt) & (t <= p.t1 + 0.5 * p.dt) & (rm > 1e-9) & (ra > 1e-9)
    with np.errstate(divide="ignore", invalid="ignore"):
        ok &= ((q[..., 0] - cm) / rm) ** 2 + ((q[..., 1] - ca) / ra) ** 2 <= 1.0
    return ok


def _brute_force(lobe: Lobe, rows: np.ndarray, cols: np.ndarray, reach: float = 60.0) -> np.ndarray:
    """Path length of each pixel ray (rows x cols): samples every 0.05 mm, both ends bisected."""
    rr, cc = np.meshgrid(rows.astype(float), cols.astype(float), indexing="ij")
    world = (
        CAMERA.center
        + (rr - CAMERA.i0)[..., None] * SPACING * CAMERA.e_v
        + (cc - CAMERA.j0)[..., None] * SPACING * CAMERA.e_u
    )
    rot = lobe.frame.axes.T
    q0 = ((world - lobe.frame.origin) @ rot.T).reshape(-1, 3)
    d = rot @ CAMERA.beam
    step = 0.05
    taus = np.arange(-reach, reach + step, step)
    length = np.zeros(len(q0))
    for start in range(0, len(q0), 128):
        ins = _inside(lobe, q0[start : start + 128, None, :] + taus[None, :, None] * d)
        hit = np.flatnonzero(ins.any(1))
        if not len(hit):
            continue
        first = np.argmax(ins[hit], 1)
        last = ins.shape[1] - 1 - np.argmax(ins[hit][:, ::-1], 1)
        q = q0[start + hit]
        ends = []
        for outside, inside in ((taus[first] - step, taus[first]), (taus[last] + step, taus[last])):
            for _ in range(25):
                mid = 0.5 * (outside + inside)
                ok = _inside(lobe, q + mid[:, None] * d)
                inside, outside = np.where(ok, mid, inside), np.where(ok, outside, mid)
            ends.append(0.5 * (outside + inside))
        length[start + hit] = ends[1] - ends[0]
    return length.reshape(rr.shape)


def _traced(lobe: Lobe) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Path length on the whole image, with the pixel rows and columns."""
    span = trace(lobe, CAMERA)
    assert span is not None
    full = np.zeros(CAMERA.shape)
    full[span.r0 : span.r1, span.c0 : span.c1] = span.length()
    return full, np.arange(CAMERA.shape[0]), np.arange(CAMERA.shape[1])


def _frame(tilt_deg: float) -> Frame:
    """A lobe frame whose t axis leans toward the beam (about m) by ``tilt_deg``."""
    return Frame.identity().child((0.0, 0.0, -12.0), rotation("m", tilt_deg))


def _sphere(frame: Frame, radius: float, center: tuple[float, float, float]) -> Lobe:
    """A sphere as a lobe, its centre off the frame's axis (the tracer must follow the sections)."""
    cm, ca, tc = center

    def r(t: np.ndarray) -> np.ndarray:
        return np.sqrt(np.clip(radius**2 - (t - tc) ** 2, 0.0, None))

    return Lobe(frame, make_profile(tc - radius, tc + radius, 0.1, cm, ca, r, r))


@pytest.mark.parametrize("tilt", [0.0, 5.0, 10.0, 20.0])
def test_tilted_sphere_silhouette_and_chords_are_exact(tilt: float) -> None:
    radius, center = 12.0, (4.0, -7.0, 14.0)
    frame = _frame(tilt)
    length, rows, cols = _traced(_sphere(frame, radius, center))
    pixel = CAMERA.project(frame.to_parent(center))[0]
    r = np.hypot(rows[:, None] - pixel[0], cols[None, :] - pixel[1]) * SPACING
    exact = 2.0 * np.sqrt(np.clip(radius**2 - r**2, 0.0, None))
    # Silhouette: inside exactly where the circle is, up to 0.1 mm.
    inside = length > 1e-3
    assert not np.any(inside & (r > radius + 0.1))
    assert np.all(inside[r < radius - 0.1])
    lowest = rows[inside.any(1)].max()
    assert abs(lowest - (pixel[0] + radius / SPACING)) * SPACING <= 0.1
    # Chords within 2% away from the rim (the profile is sampled every 0.1 mm).
    core = r < 0.9 * radius
    assert np.max(np.abs(length[core] - exact[core]) / exact[core]) <= 0.02
    assert np.mean(np.abs(length[core] - exact[core])) <= 0.08


@pytest.mark.parametrize("tilt", [5.0, 10.0, 20.0])
def test_tilted_condyle_matches_brute_force(tilt: float) -> None:
    lobe = condyle_lobe(_frame(tilt), 0.0, 15.0, 22.0, -9.0, 0.0, 16.0, 1.0)
    length, _, _ = _traced(lobe)
    span = trace(lobe, CAMERA)
    assert span is not None
    rows, cols = np.arange(span.r0, span.r1, 7), np.arange(span.c0, span.c1, 7)
    reference = _brute_force(lobe, rows, cols)
    traced = length[np.ix_(rows, cols)]
    inside_ref, inside = reference > 1e-3, traced > 1e-3
    # The silhouette: the lowest point (the joint line) within 0.1 mm, a handful of rim rays at most.
    assert abs(rows[inside.any(1)].max() - rows[inside_ref.any(1)].max()) * SPACING <= 0.1
    assert np.sum(inside != inside_ref) <= 0.002 * inside_ref.sum() + 2
    core = reference > 0.2 * reference.max()
    error = np.abs(traced - reference)[core] / reference[core]
    assert np.percentile(error, 99) <= 0.02
    assert np.mean(error) <= 0.002


def test_tilted_cylinder_is_cut_where_its_ends_cross_the_ray() -> None:
    lobe = Lobe(
        Frame.identity().child((0.0, 0.0, -10.0), rotation("m", 35.0) @ rotation("t", 25.0)),
        make_profile(0.0, 20.0, 0.1, 2.0, -3.0, 7.0, 4.0),
    )
    length, _, _ = _traced(lobe)
    span = trace(lobe, CAMERA)
    assert span is not None
    rows, cols = np.arange(span.r0, span.r1, 9), np.arange(span.c0, span.c1, 9)
    reference = _brute_force(lobe, rows, cols)
    traced = length[np.ix_(rows, cols)]
    assert np.max(np.abs(traced - reference)) <= 0.05
    assert np.sum((traced > 1e-3) != (reference > 1e-3)) <= 2


def test_untilted_lobes_keep_the_closed_form_chord() -> None:
    """No lean toward the beam: each row's ray meets the nearest profile sample's ellipse, as before."""
    profile = make_profile(-10.0, 10.0, 0.1, lambda t: 0.1 * t, 1.5, lambda t: 6.0 + 0.2 * t, 4.0)
    lobe = Lobe(Frame(np.zeros(3), rotation("a", 7.0)), profile)  # a lean across the beam only
    span = trace(lobe, CAMERA)
    assert span is not None
    rows = np.arange(span.r0, span.r1)
    cols = np.arange(span.c0, span.c1)
    rot = lobe.frame.axes.T
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    world = (rr - CAMERA.i0)[..., None] * SPACING * CAMERA.e_v + (cc - CAMERA.j0)[
        ..., None
    ] * SPACING * CAMERA.e_u
    q = world @ rot.T
    k = np.floor((q[..., 2] - profile.t0) / profile.dt + 0.5).astype(int)
    valid = (k >= 0) & (k < len(profile.rm))
    k = np.clip(k, 0, len(profile.rm) - 1)
    x = (q[..., 0] - profile.cm[k]) / profile.rm[k]
    expected = np.where(valid, 2.0 * profile.ra[k] * np.sqrt(np.clip(1.0 - x**2, 0.0, None)), 0.0)
    assert np.max(np.abs(span.length() - expected)) <= 1e-3
