"""The film's span cache: solids that share a bone trace it once, and get what they would have traced."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from orthoseg.synth import SynthConfig
from orthoseg.synth.case import knee_camera
from orthoseg.synth.geometry import Camera, trace
from orthoseg.synth.knee import KneeScene, build_knee
from orthoseg.synth.scenario import image_spec
from orthoseg.synth.solids import solid_length
from orthoseg.synth.span_cache import SpanCache, clip_window
from orthoseg.synth.truth import edge_on_regions


def _scene(view: str) -> tuple[KneeScene, Camera]:
    config = SynthConfig(count=1, seed=11, image_px=640, views=(view,), bilateral_fraction=0.0)
    spec = image_spec(0, config)
    knee = replace(spec.knees[0], category="tka", family="cr_pegged", fixation="cemented")
    knee = replace(knee, lucency_mm={"tray_MA": 1.0, "tray_LA": 0.8, "anterior": 1.2})
    scene = build_knee(knee, spec.flexion_deg, seed=4)
    return scene, knee_camera(spec, knee.side, spec.spacing_mm / spec.magnification, 0.0)


def _dense(field: object, shape: tuple[int, int]) -> np.ndarray:
    out = np.zeros(shape, dtype=np.float32)
    if field is not None:
        out[field.r0 : field.r1, field.c0 : field.c1] = field.values  # type: ignore[attr-defined]
    return out


@pytest.mark.parametrize("view", ["AP", "LAT"])
def test_every_solid_and_probe_gets_the_path_length_it_would_trace_alone(view: str) -> None:
    scene, camera = _scene(view)
    probes = [scene.interface_probes[r] for r in edge_on_regions(scene, camera)]
    solids = [*scene.solids, *probes]
    cache = SpanCache(camera)
    cache.plan(solids)
    drawn = 0
    for solid in solids:
        alone = _dense(solid_length(solid, camera), camera.shape)
        shared = _dense(solid_length(solid, camera, cache), camera.shape)
        drawn += int((alone > 0).sum())
        # Rays are solved on a coarse grid and refined near edges: a different box moves a chord by
        # at most the solver's tolerance (0.02 mm per root), so path lengths agree to ~0.05 mm.
        assert np.abs(alone - shared).max() < 0.05, solid.name
        assert np.mean((alone > 0.02) != (shared > 0.02)) < 1e-4, solid.name
    assert drawn > 10_000


def test_a_bone_that_several_solids_cut_is_traced_once_and_sliced_for_each() -> None:
    scene, camera = _scene("LAT")
    tibia = next(b for b in scene.bones if b.name == "tibia")
    cutting = [s for s in scene.solids if s.parts and s.parts[0] is tibia.outer[0]]
    assert len(cutting) >= 3  # the tibial cement, and a lucent line and its rim under the tray
    cache = SpanCache(camera)
    cache.plan(cutting)
    windows = [window for reaches, window in (clip_window(s, cache) for s in cutting) if reaches]
    spans = [cache.trace(tibia.outer[0], w) for w in windows]
    assert len(spans) >= 3 and all(s is not None for s in spans)
    # Every solid's piece of the bone is a view of one traced array ...
    assert all(np.shares_memory(spans[0].lo, s.lo) for s in spans[1:])  # type: ignore[union-attr]
    # ... with what tracing that piece alone gives, to the solver's tolerance.
    for window, span in zip(windows, spans, strict=True):
        alone = trace(tibia.outer[0], camera, window)
        assert alone is not None and span is not None and alone.box == span.box
        inside = alone.hi > alone.lo
        assert np.abs(alone.lo - span.lo)[inside].max() < 0.05
        assert np.abs(alone.hi - span.hi)[inside].max() < 0.05
