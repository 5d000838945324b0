"""Shared small simulated cases for the synth tests (generated once per session, small images)."""

from __future__ import annotations

import pytest

from orthoseg.synth import SynthCase, SynthConfig, generate_case

SMALL_PX = 320


@pytest.fixture(scope="session")
def small_config() -> SynthConfig:
    return SynthConfig(count=24, seed=11, image_px=SMALL_PX)


@pytest.fixture(scope="session")
def small_cases(small_config: SynthConfig) -> list[SynthCase]:
    """Twenty-four simulated cases at ~320 px (every category appears with this seed)."""
    return [generate_case(index, small_config) for index in range(small_config.count)]
