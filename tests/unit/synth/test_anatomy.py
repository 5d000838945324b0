"""The simulated bones have published adult proportions (AP widths, shaft and cortex dimensions)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from orthoseg.labels import BY_NAME
from orthoseg.synth import SynthConfig, generate_case
from orthoseg.synth.anatomy import build_femur, build_patella
from orthoseg.synth.anatomy_leg import build_fibula, build_tibia
from orthoseg.synth.geometry import Frame, Lobe
from orthoseg.synth.scenario import KneeSpec, image_spec

NATIVE = SynthConfig(
    count=4, seed=5, image_px=512, views=("AP",), category_weights={"native": 1.0}, bilateral_fraction=0.0
)


def _knee(female: bool) -> KneeSpec:
    """An average woman (bone_scale 0.93) or man (1.04), no osteophytes."""
    knee = image_spec(0, NATIVE).knees[0]
    return replace(
        knee, female=female, bone_scale=0.93 if female else 1.04, kl_grade=0, osteophytes=False, shaft_bow=0.0
    )


def _width(lobes: list[Lobe], t: float) -> float:
    """AP-view (m-extent) width of the union of lobes at height t of their shared frame."""
    lo, hi = np.inf, -np.inf
    for lobe in lobes:
        p = lobe.profile
        if not p.t0 <= t <= p.t1:
            continue
        rm = float(np.interp(t, p.t, p.rm))
        if rm <= 0:
            continue
        cm = float(np.interp(t, p.t, p.cm))
        lo, hi = min(lo, cm - rm), max(hi, cm + rm)
    return float(hi - lo) if hi > lo else 0.0


def _cortex(outer: Lobe, inner: Lobe, t: float) -> float:
    return float(
        np.interp(t, outer.profile.t, outer.profile.rm) - np.interp(t, inner.profile.t, inner.profile.rm)
    )


@pytest.mark.parametrize(
    ("female", "epicondylar", "plateau"), [(True, (70, 76), (68, 74)), (False, (80, 88), (76, 84))]
)
def test_bone_widths_follow_published_dimensions(
    female: bool, epicondylar: tuple[float, float], plateau: tuple[float, float]
) -> None:
    spec = _knee(female)
    femur, fshape = build_femur(spec, Frame.identity())
    widths = {t: _width(femur.outer, t) for t in range(2, 200, 2)}
    widest = max(widths[t] for t in range(10, 36, 2))
    assert epicondylar[0] <= widest <= epicondylar[1]
    assert widths[4] > 0.88 * widest  # broad, flat condyles, not two round lobes
    shaft = widths[160]
    assert 27.0 <= shaft <= 32.0
    # A concave flare: half-way to the shaft by ~45 mm, within ~15 % of it by ~65 mm.
    assert widths[46] < 0.5 * (widest + shaft)
    assert widths[66] < 1.45 * shaft
    assert fshape.shaft_radius == pytest.approx(shaft / 2, abs=1.0)

    tibia, tshape = build_tibia(spec, Frame.identity())
    main = tibia.outer[:1]
    top = max(_width(main, -t) for t in range(4, 20))
    assert plateau[0] <= top <= plateau[1]
    assert 2 * tshape.plateau_half_width == pytest.approx(top, abs=3.0)
    tibial_shaft = _width(main, -160)
    assert 25.0 <= tibial_shaft <= 30.0
    assert _width(main, -40) < 0.5 * (top + tibial_shaft) + 6.0
    assert _width(main, -70) < 1.35 * tibial_shaft

    fibula = build_fibula(spec, Frame.identity())
    head = max(_width(fibula.outer[:1], fibula.outer[0].profile.t1 - t) for t in range(2, 20))
    assert 22.0 <= head <= 28.0
    assert 11.0 <= _width(fibula.outer[:1], -160) <= 15.0

    patella = build_patella(spec, femur.frame, fshape, 0.0)
    p = patella.outer[0].profile
    assert 36.0 <= 2 * p.rm.max() <= 48.0  # 40-45 mm in adults
    assert 18.0 <= 2 * p.ra.max() <= 25.0


def test_cortex_is_thin_in_the_metaphysis_and_thick_in_the_diaphysis() -> None:
    spec = _knee(False)
    femur, _ = build_femur(spec, Frame.identity())
    tibia, _ = build_tibia(spec, Frame.identity())
    assert _cortex(femur.outer[0], femur.inner[0], 25.0) < 1.6
    assert 4.5 < _cortex(femur.outer[0], femur.inner[0], 180.0) < 8.5
    assert _cortex(tibia.outer[0], tibia.inner[0], -15.0) < 1.6
    assert 4.0 < _cortex(tibia.outer[0], tibia.inner[0], -180.0) < 8.0
    # Marrow, not cancellous bone, fills the shafts.
    assert femur.trabecular_until_t is not None and femur.trabecular_until_t[1] < 120.0
    assert tibia.trabecular_until_t is not None and tibia.trabecular_until_t[1] > -120.0


def test_rendered_native_ap_has_adult_proportions() -> None:
    """Widths on the simulated image's masks at set distances from the joint line."""
    femur_ch, tibia_ch, fibula_ch = (BY_NAME[n].channel for n in ("femur", "tibia", "fibula"))
    for index in range(2):
        case = generate_case(index, NATIVE)
        spacing = case.truth["pixel_spacing_mm"][0]
        femur, tibia, fibula = case.masks[femur_ch], case.masks[tibia_ch], case.masks[fibula_ch]
        joint = 0.5 * (np.flatnonzero(femur.any(1)).max() + np.flatnonzero(tibia.any(1)).min())

        def width(mask: np.ndarray, mm: float, joint: float = joint, spacing: float = spacing) -> float:
            cols = np.flatnonzero(mask[int(round(joint + mm / spacing))])
            return float(cols[-1] - cols[0]) * spacing if cols.size else 0.0

        k = image_spec(index, NATIVE).knees[0].bone_scale
        condyles = max(width(femur, -d) for d in (10, 15, 20, 25))
        assert 70.0 <= condyles / k <= 90.0, case.truth
        assert width(femur, -60) < 0.65 * condyles
        plateau = max(width(tibia, d) for d in (8, 12, 16))
        assert 66.0 <= plateau / k <= 86.0
        assert width(tibia, 45) < 0.7 * plateau
        head = max(width(fibula, d) for d in range(18, 34, 2))
        assert 20.0 <= head / k <= 30.0
