"""Physics invariants: metal > bone > soft tissue on the image; more bone, more attenuation."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from scipy import ndimage

from orthoseg.labels import BY_NAME
from orthoseg.synth import SynthCase, SynthConfig
from orthoseg.synth.case import knee_camera
from orthoseg.synth.detector import gaussian_noise
from orthoseg.synth.knee import build_knee
from orthoseg.synth.physics import MU_PER_MM, texture_field, trabecular_tile
from orthoseg.synth.render import bone_lengths, project, upsample
from orthoseg.synth.scenario import image_spec


def _monochrome2(case: SynthCase) -> np.ndarray:
    ds = case.dataset
    values = np.frombuffer(ds.PixelData, dtype="<u2").reshape(int(ds.Rows), int(ds.Columns)).astype(float)
    return 4095 - values if ds.PhotometricInterpretation == "MONOCHROME1" else values


def test_metal_is_brighter_than_bone_which_is_brighter_than_soft_tissue(small_cases: list[SynthCase]) -> None:
    compared = 0
    for case in small_cases:
        values = _monochrome2(case)
        masks = case.masks
        metal = masks[BY_NAME["femoral_component"].channel] | masks[BY_NAME["tibial_component"].channel]
        bone = (masks[BY_NAME["femur"].channel] | masks[BY_NAME["tibia"].channel]) & ~ndimage.binary_dilation(
            metal, iterations=3
        )
        anything = masks.any(axis=0)
        soft = (
            ~ndimage.binary_dilation(anything, iterations=6) & (values > 0.1 * 4095) & (values < 0.97 * 4095)
        )
        if not (soft.sum() > 200 and bone.sum() > 200):
            continue
        assert np.median(values[bone]) > np.median(values[soft]) + 150
        if metal.sum() > 50:
            core = ndimage.binary_erosion(metal, iterations=2)
            if core.any():
                assert np.median(values[core]) > 0.95 * 4095  # metal saturates to near-white
                assert np.median(values[core]) > np.percentile(values[bone], 99)
        compared += 1
    assert compared >= 10


def test_stored_values_are_12_bit_and_monochrome1_is_inverted(small_cases: list[SynthCase]) -> None:
    photometric = set()
    for case in small_cases:
        stored = np.frombuffer(case.dataset.PixelData, dtype="<u2")
        assert stored.max() <= 4095
        photometric.add(str(case.dataset.PhotometricInterpretation))
    assert photometric == {"MONOCHROME1", "MONOCHROME2"}


def test_thicker_bone_attenuates_more() -> None:
    config = SynthConfig(
        count=4, seed=3, image_px=256, category_weights={"native": 1.0}, views=("AP",), bilateral_fraction=0.0
    )
    spec = image_spec(0, config)
    knee = spec.knees[0]
    camera = knee_camera(spec, knee.side, 0.6, 0.0)
    sums = []
    for scale in (0.9, 1.1):
        scene = build_knee(replace(knee, bone_scale=scale), spec.flexion_deg, seed=1)
        tibia = next(b for b in scene.bones if b.name == "tibia")
        outer, _ = bone_lengths(tibia, camera)
        sums.append(float(outer.values.sum()))
    assert sums[1] > sums[0] * 1.2  # ~ scale^3 in volume
    scene = build_knee(knee, spec.flexion_deg, seed=1)
    texture = np.zeros(camera.shape, dtype=np.float32)
    line = project([scene], [camera], texture, bone_factor=1).line_integral
    tibia_mask = project([scene], [camera], texture, bone_factor=1).masks[BY_NAME["tibia"].channel]
    soft_only = line[~tibia_mask & (line > 0)]
    assert np.median(line[tibia_mask]) > np.median(soft_only)
    assert MU_PER_MM["cobalt_chrome"] > MU_PER_MM["titanium"] > MU_PER_MM["cortical"] > MU_PER_MM["soft"]


def test_noise_and_texture_statistics() -> None:
    noise = gaussian_noise(np.random.default_rng(0), (300, 300))
    assert abs(float(noise.mean())) < 0.02 and float(noise.std()) == pytest.approx(1.0, abs=0.02)
    tile = trabecular_tile(period_px=5.0)
    assert abs(float(tile.mean())) < 1e-3 and float(tile.std()) == pytest.approx(1.0, abs=1e-3)
    field = texture_field((700, 300), np.random.default_rng(1), spacing_mm=0.25)
    assert field.shape == (700, 300)


def test_upsample_preserves_constants_and_linear_ramps() -> None:
    ramp = np.tile(np.arange(10, dtype=np.float32), (6, 1))
    up = upsample(ramp, 2, (12, 20))
    assert np.allclose(up[:, 1:-1], (np.arange(1, 19) - 0.5) / 2.0)
    assert np.allclose(upsample(np.full((5, 5), 3.0, np.float32), 4, (20, 18)), 3.0)
