"""Presentation look of the simulated films: dark soft tissue, bright bone with crisp cortices, metal as a
white plateau above any bone, bright collimated borders, and a per-image randomised appearance."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from scipy import ndimage

from orthoseg.labels import BY_NAME
from orthoseg.synth import SynthConfig, generate_case
from orthoseg.synth.case import render_case
from orthoseg.synth.detector import STORED_MAX, _beam_gain, collimation_field, look_of
from orthoseg.synth.processing import Look, local_contrast, tone_curve
from orthoseg.synth.scenario import image_spec

FEMUR, TIBIA = BY_NAME["femur"].channel, BY_NAME["tibia"].channel
METAL = (BY_NAME["femoral_component"].channel, BY_NAME["tibial_component"].channel)


def _config(category: str, seed: int = 7, count: int = 4) -> SynthConfig:
    return SynthConfig(
        count=count,
        seed=seed,
        image_px=512,
        views=("AP",),
        category_weights={category: 1.0},
        bilateral_fraction=0.0,
    )


@pytest.fixture(scope="module")
def native_renders() -> list[tuple[np.ndarray, np.ndarray, object]]:
    """(presentation values MONOCHROME2, masks, spec) of four native APs at 512 px."""
    config = _config("native")
    out = []
    for index in range(config.count):
        spec = image_spec(index, config)
        values, masks, *_ = render_case(spec, config)
        out.append((values.astype(np.float64) / STORED_MAX, masks, spec))
    return out


def _soft_and_bone(values: np.ndarray, masks: np.ndarray, spec: object) -> tuple[np.ndarray, np.ndarray]:
    field = collimation_field(values.shape, spec, spec.spacing_mm)  # type: ignore[attr-defined]
    bones = masks[:4].any(axis=0)
    bone = (masks[FEMUR] | masks[TIBIA]) & field
    body = field & (values > 0.03)  # not the raw beam
    soft = body & ~ndimage.binary_dilation(bones, iterations=4)
    return values[soft], values[bone]


def test_soft_tissue_is_dark_and_bone_bright(native_renders: list) -> None:
    for values, masks, spec in native_renders:
        soft, bone = _soft_and_bone(values, masks, spec)
        assert soft.size > 500 and bone.size > 500
        # real DR knee (0.14 mm, 8 bit): soft tissue ~0.22, bone ~0.49 of the display range
        assert np.median(soft) < 0.35
        assert np.median(bone) > np.median(soft) + 0.2
        assert np.median(bone) < 0.85  # bone is not burnt out: there is headroom for metal


def _shaft_contrast(native_renders: list) -> list[float]:
    """Cortex (peak of the outer quarter of the width, both sides) minus canal (middle 30 %), shaft rows."""
    differences = []
    for values, masks, _ in native_renders:
        for channel, from_top in ((FEMUR, True), (TIBIA, False)):
            mask = masks[channel]
            rows = np.flatnonzero(mask.sum(axis=1) > 12)
            if rows.size < 30:
                continue
            shaft = rows[:8] if from_top else rows[-8:]  # the end of the bone away from the joint
            for row in shaft:
                cols = np.flatnonzero(mask[row])
                width = cols[-1] - cols[0]
                rim = max(3, int(round(0.25 * width)))
                cortex = 0.5 * (
                    values[row, cols[0] : cols[0] + rim].max()
                    + values[row, cols[-1] - rim + 1 : cols[-1] + 1].max()
                )
                canal = values[row, cols[0] + int(0.35 * width) : cols[0] + int(0.65 * width) + 1].mean()
                differences.append(float(cortex - canal))
    return differences


def test_cortex_is_brighter_than_the_canal_on_a_shaft(native_renders: list) -> None:
    differences = _shaft_contrast(native_renders)
    assert len(differences) >= 16
    # the shaft reads as a tube: bright cortices either side of a darker canal (real DR film: ~0.2)
    assert np.median(differences) > 0.08
    assert np.mean(np.asarray(differences) > 0.02) > 0.9


def test_metal_is_a_white_plateau_above_bone() -> None:
    config = _config("tka", seed=5, count=3)
    for index in range(config.count):
        spec = image_spec(index, config)
        values, masks, *_ = render_case(spec, config)
        metal = masks[METAL[0]] | masks[METAL[1]]
        cement = masks[BY_NAME["cement"].channel]
        bone = (masks[FEMUR] | masks[TIBIA]) & ~ndimage.binary_dilation(metal, iterations=3) & ~cement
        core = ndimage.binary_erosion(metal, iterations=2)
        assert core.sum() > 100 and bone.sum() > 500
        assert np.percentile(values[core], 5) > np.percentile(values[bone], 99.9)
        assert np.median(values[core]) >= 0.98 * STORED_MAX
        assert np.std(values[core]) < 0.01 * STORED_MAX  # flat, no processing halo inside
        if cement.sum() > 50:  # radio-opaque cement: brighter than bone, still below the metal
            assert np.percentile(values[cement & ~metal], 99) < np.median(values[core])


def test_collimated_border_is_bright_and_raw_beam_black() -> None:
    config = _config("native", seed=3, count=12)
    checked = 0
    for index in range(config.count):
        spec = image_spec(index, config)
        if max(spec.collimation_mm) < 8.0:
            continue
        values, masks, *_ = render_case(spec, config)
        field = collimation_field(values.shape, spec, spec.spacing_mm)
        outside = ndimage.binary_erosion(~field, iterations=2)
        if outside.sum() < 200:
            continue
        soft_bone = values[field & masks[:2].any(axis=0)]
        assert np.median(values[outside]) > 0.85 * STORED_MAX
        assert np.median(values[outside]) > np.percentile(soft_bone, 99)
        assert np.percentile(values[field], 1) < 0.06 * STORED_MAX  # some raw beam, black
        checked += 1
    assert checked >= 2


def test_appearance_is_randomised_per_image_and_deterministic_by_seed() -> None:
    specs = [image_spec(i, SynthConfig(count=200, seed=1)) for i in range(200)]
    for name in (
        "tone_slope",
        "tone_offset",
        "tone_gamma",
        "detail_gain",
        "edge_enhancement",
        "range_compression",
    ):
        values = np.array([getattr(s, name) for s in specs])
        assert values.std() > 0.05 * abs(values.mean()), name
    assert 0.1 < np.mean([s.grid_lines_per_cm > 0 for s in specs]) < 0.5
    assert any(s.clip_point < 1.0 for s in specs) and any(s.vignetting > 0 for s in specs)
    assert any(s.stitch_gains != (1.0, 1.0, 1.0, 1.0) for s in specs)
    assert 0 < np.mean([s.heel_strength < 0.05 for s in specs]) < 0.5
    # different seeds: different tone curves; same seed: the same bytes
    a, b = image_spec(0, _config("native", seed=1)), image_spec(0, _config("native", seed=2))
    assert not np.array_equal(tone_curve(look_of(a)), tone_curve(look_of(b)))
    first = generate_case(1, _config("tka", seed=9))
    second = generate_case(1, _config("tka", seed=9))
    other = generate_case(1, _config("tka", seed=10))
    assert first.dataset.PixelData == second.dataset.PixelData
    assert first.dataset.PixelData != other.dataset.PixelData


def test_neutral_processing_reconstructs_the_image_exactly() -> None:
    rng = np.random.default_rng(0)
    image = ndimage.gaussian_filter(rng.random((203, 170)), 2).astype(np.float32)
    neutral = Look(
        fine_gain=1, edge_gain=1, detail_gain=1, large_gain=1, range_compression=0, contrast_power=1
    )
    assert np.allclose(local_contrast(image.copy(), None, 0.3, neutral), image, atol=1e-5)
    # with gains, band-pass detail grows and the coarsest layer is compressed
    strong = Look(edge_gain=3, detail_gain=3, large_gain=1, range_compression=0.8)
    ramp = np.tile(np.linspace(0, 1, 600, dtype=np.float32), (300, 1))  # 1.0 over 18 cm
    step = ramp + 0.05 * (np.arange(600) >= 300).astype(np.float32)
    out = local_contrast(step.copy(), None, 0.3, strong)
    jump = out[150, 302] - out[150, 297]
    assert jump > 0.1  # the 0.05 step (plus ~0.01 of ramp) comes out at least doubled
    assert out[150, -20] - out[150, 20] < 0.7  # the ramp (limb thickness) is flattened


def test_grid_lines_show_as_aliased_stripes() -> None:
    spec = image_spec(0, _config("native"))
    spec = replace(
        spec,
        grid_lines_per_cm=60.0,
        grid_strength=0.05,
        grid_vertical=True,
        heel_strength=0.0,
        vignetting=0.0,
        stitch_gains=(1.0, 1.0, 1.0, 1.0),
    )
    gain = _beam_gain((64, 256), spec)
    profile = gain[0] - gain[0].mean()
    spectrum = np.abs(np.fft.rfft(profile))
    cycles = 6.0 * spec.spacing_mm
    expected = abs(cycles - round(cycles))
    assert abs(np.argmax(spectrum) / 256 - expected) < 2 / 256
    assert 0.03 < gain.max() - gain.min() < 0.07
