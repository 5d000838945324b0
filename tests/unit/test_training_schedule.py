"""The learning-rate schedule (warm-up, cosine, purity) and the Ray run name (the key for resuming)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from orthoseg.settings import Settings
from orthoseg.training.run import ray_run_name
from orthoseg.training.schedule import learning_rate_at

BASE = 4e-3
EPOCHS = 20
WARMUP = 2.0
MIN_RATIO = 0.01
FOLDER_NAME = re.compile(r"[A-Za-z0-9._-]+")


def _rate(progress: float) -> float:
    return learning_rate_at(progress, BASE, EPOCHS, WARMUP, MIN_RATIO)


def test_warmup_rises_linearly_and_reaches_the_base() -> None:
    progress = np.linspace(0.1, WARMUP, 20)
    rates = np.array([_rate(p) for p in progress])
    np.testing.assert_allclose(rates, BASE * progress / WARMUP, rtol=1e-12)
    assert np.all(np.diff(rates) > 0)
    assert _rate(WARMUP) == pytest.approx(BASE, rel=1e-12)
    assert 0 < _rate(0.0) < _rate(0.1)


def test_cosine_ends_at_the_floor_and_never_rises_after_warmup() -> None:
    assert _rate(EPOCHS) == pytest.approx(BASE * MIN_RATIO, rel=1e-9)
    assert _rate(EPOCHS + 5) == pytest.approx(BASE * MIN_RATIO, rel=1e-9)
    halfway = WARMUP + (EPOCHS - WARMUP) / 2
    assert _rate(halfway) == pytest.approx(BASE * (1 + MIN_RATIO) / 2, rel=1e-9)
    rates = np.array([_rate(p) for p in np.linspace(WARMUP, EPOCHS, 500)])
    assert np.all(np.diff(rates) <= 0)
    assert rates[0] > rates[-1]


def test_no_warmup_starts_at_the_base() -> None:
    assert learning_rate_at(0.0, BASE, EPOCHS) == pytest.approx(BASE)
    assert learning_rate_at(EPOCHS, BASE, EPOCHS) == pytest.approx(0.0, abs=1e-15)


def test_schedule_is_pure_so_a_resumed_run_continues_it() -> None:
    steps = 7
    progress = [epoch + step / steps for epoch in range(EPOCHS) for step in range(steps)]
    first = [_rate(p) for p in progress]
    resumed_at = len(progress) // 2
    _ = [_rate(p) for p in reversed(progress)]  # other calls in between change nothing
    resumed = [_rate(p) for p in progress[resumed_at:]]
    assert resumed == first[resumed_at:]


@pytest.mark.parametrize(
    ("progress", "epochs", "warmup"),
    [(0.0, 5, 5.0), (1.0, 5, 7.5), (-0.1, 5, 0.0), (0.0, 0, 0.0), (0.0, -1, 0.0)],
)
def test_bad_arguments_raise(progress: float, epochs: int, warmup: float) -> None:
    with pytest.raises(ValueError):
        learning_rate_at(progress, BASE, epochs, warmup)


def _settings(**sections: dict) -> Settings:
    return Settings(profile=None, **sections)


def test_ray_run_name_is_stable_for_equal_settings() -> None:
    first = ray_run_name(_settings(train={"epochs": 3}), "abc123")
    assert first == ray_run_name(_settings(train={"epochs": 3}), "abc123")
    assert first.startswith("orthoseg-abc123-")


@pytest.mark.parametrize(
    "change",
    [
        {"train": {"epochs": 4}},
        {"train": {"epochs": 3, "learning_rate": 1e-3}},
        {"train": {"epochs": 3, "architecture": "dynunet"}},
        {"preprocess": {"canvas_px": 320}},
        {"preprocess": {"spacing_mm": 0.5}},
        {"augment": {"enabled": False}},
    ],
)
def test_ray_run_name_changes_with_any_setting_that_changes_training(change: dict) -> None:
    base = {"train": {"epochs": 3}}
    changed = _settings(**{**base, **change})
    assert ray_run_name(changed, "abc123") != ray_run_name(_settings(**base), "abc123")


def test_ray_run_name_changes_with_the_dataset_version() -> None:
    settings = _settings()
    assert ray_run_name(settings, "abc123") != ray_run_name(settings, "abc124")


@pytest.mark.parametrize("version", ["abc123", "2024-05-01T10:00/batch 7", "v" * 200, "x/" * 100])
def test_ray_run_name_is_a_bounded_folder_name(version: str) -> None:
    name = ray_run_name(_settings(), version)
    assert FOLDER_NAME.fullmatch(name), name
    assert len(name) <= 100
    assert name not in {".", ".."}


def test_long_versions_that_share_a_prefix_get_different_names() -> None:
    settings = _settings()
    assert ray_run_name(settings, "v" * 200 + "a") != ray_run_name(settings, "v" * 200 + "b")


def test_ray_run_name_is_ascii_for_non_ascii_versions() -> None:
    assert FOLDER_NAME.fullmatch(ray_run_name(_settings(), "versión²"))
