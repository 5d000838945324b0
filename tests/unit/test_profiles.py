"""Named training profiles fill the settings the caller left unset; explicit values always win."""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError

from orthoseg.model import check_canvas_fits
from orthoseg.profiles import PROFILES, profile_defaults
from orthoseg.settings import Settings


@pytest.fixture(autouse=True)
def _no_orthoseg_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("ORTHOSEG_"):
            monkeypatch.delenv(name)


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_profile_fills_train_and_preprocess(name: str) -> None:
    settings = Settings(profile=name)
    assert settings.profile == name
    for section in ("train", "preprocess", "augment"):
        values = getattr(settings, section).model_dump()
        for key, expected in PROFILES[name][section].items():
            assert values[key] == expected, (section, key)


def test_profiles_differ_from_each_other_and_from_no_profile() -> None:
    plain = Settings()
    dumps = {name: Settings(profile=name).model_dump(exclude={"profile"}) for name in PROFILES}
    assert len({repr(d) for d in dumps.values()}) == len(PROFILES)
    assert all(d != plain.model_dump(exclude={"profile"}) for d in dumps.values())


def test_explicit_values_win_over_the_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(profile="demo", train={"batch_size": 3}, preprocess={"canvas_px": 128})
    assert settings.train.batch_size == 3
    assert settings.preprocess.canvas_px == 128
    assert settings.train.epochs == PROFILES["demo"]["train"]["epochs"]  # the rest still from the profile
    assert settings.preprocess.spacing_mm == PROFILES["demo"]["preprocess"]["spacing_mm"]

    monkeypatch.setenv("ORTHOSEG_TRAIN__EPOCHS", "5")
    from_env = Settings(profile="standard")
    assert from_env.train.epochs == 5
    assert from_env.train.learning_rate == PROFILES["standard"]["train"]["learning_rate"]
    assert from_env.preprocess.canvas_px == PROFILES["standard"]["preprocess"]["canvas_px"]


def test_profile_can_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORTHOSEG_PROFILE", "full")
    monkeypatch.setenv("ORTHOSEG_TRAIN__EPOCHS", "7")
    settings = Settings()
    assert settings.profile == "full"
    assert settings.train.architecture == "dynunet" and settings.train.deep_supervision
    assert settings.train.epochs == 7


def test_unknown_profile_names_the_known_ones() -> None:
    with pytest.raises(ValidationError) as error:
        Settings(profile="huge")
    message = str(error.value)
    assert "huge" in message
    assert all(name in message for name in PROFILES)


def test_profile_defaults_is_a_copy_and_refuses_unknown_names() -> None:
    values = profile_defaults("demo")
    values["train"]["epochs"] = -1
    assert PROFILES["demo"]["train"]["epochs"] != -1
    with pytest.raises(KeyError):
        profile_defaults("huge")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"profile": "demo"},
        {"profile": "standard", "train": {"epochs": 3}},
        {"profile": "full", "preprocess": {"canvas_px": 256}, "augment": {"enabled": False}},
        {"train": {"epochs": 5}},
    ],
)
def test_settings_round_trip_as_pipeline_parameters(kwargs: dict) -> None:
    settings = Settings(**kwargs)
    assert Settings(**settings.model_dump(mode="json", exclude={"pseudonym_salt"})) == settings


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_profile_canvas_fits_its_network_and_warmup_is_shorter_than_training(name: str) -> None:
    settings = Settings(profile=name)
    check_canvas_fits(settings.train.network_config(), settings.preprocess.canvas_px)
    assert settings.train.warmup_epochs < settings.train.epochs
