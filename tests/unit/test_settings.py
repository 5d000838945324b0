"""Settings come from ORTHOSEG_* variables, are typed, and refuse unknown keys."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from orthoseg.settings import Settings


def test_defaults_are_the_embedded_deployment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ORTHOSEG_STORE", "ORTHOSEG_MLFLOW_URI", "ORTHOSEG_RAY_ADDRESS", "ORTHOSEG_MODEL_NAME"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert settings.store == "./.orthoseg/store"
    assert settings.mlflow_uri == "sqlite:///.orthoseg/mlflow.db"
    assert settings.ray_address is None
    assert settings.model_name == "orthoseg-knee"


def test_environment_switches_deployment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORTHOSEG_STORE", "s3://clinic-bucket/orthoseg")
    monkeypatch.setenv("ORTHOSEG_S3_ENDPOINT_URL", "http://minio:9000")
    monkeypatch.setenv("ORTHOSEG_TRAIN__EPOCHS", "3")
    monkeypatch.setenv("ORTHOSEG_PREPROCESS__CANVAS_PX", "320")
    settings = Settings()
    assert settings.store == "s3://clinic-bucket/orthoseg"
    assert settings.s3_endpoint_url == "http://minio:9000"
    assert settings.train.epochs == 3
    assert settings.preprocess.canvas_px == 320


def test_unknown_keys_and_bad_values_are_errors() -> None:
    with pytest.raises(ValidationError, match="extra"):
        Settings(stroe="typo")  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="canvas_px"):
        Settings(preprocess={"canvas_px": 4})


def test_settings_round_trip_as_pipeline_parameter() -> None:
    settings = Settings(train={"epochs": 5})
    assert Settings(**settings.model_dump(mode="json")) == settings
