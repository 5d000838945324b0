"""Settings come from ORTHOSEG_* variables, are typed, and refuse unknown keys."""

from __future__ import annotations

from pathlib import Path

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


def test_inference_is_a_settings_section_the_cli_can_override(monkeypatch: pytest.MonkeyPatch) -> None:
    """Actors, GPUs per actor and passes come from ORTHOSEG_INFERENCE__*; CLI options win; bad values
    are errors naming the field; the section survives the trip through the pipelines' parameters."""
    from orthoseg.inference_config import with_overrides
    from pipelines.runner import settings_payload

    monkeypatch.setenv("ORTHOSEG_INFERENCE__CONCURRENCY", "4")
    monkeypatch.setenv("ORTHOSEG_INFERENCE__NUM_GPUS_PER_ACTOR", "1")
    settings = Settings()
    assert (settings.inference.concurrency, settings.inference.num_gpus_per_actor) == (4, 1.0)
    config = with_overrides(settings.inference, concurrency=2, tta_passes=1, batch_size=None)
    assert (config.concurrency, config.tta_passes, config.num_gpus_per_actor) == (2, 1, 1.0)
    assert config.batch_size == settings.inference.batch_size
    with pytest.raises(ValidationError, match="tta_passes"):
        with_overrides(settings.inference, tta_passes=99)
    assert Settings(**settings_payload(settings)).inference == settings.inference


def test_validation_is_a_settings_section_and_the_salt_stays_top_level(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ORTHOSEG_VALIDATION__* reach the config validation runs with; explicit overrides win; the flat
    names of earlier versions and a salt inside the section are refused; the section survives the trip
    through the pipelines' parameters."""
    from orthoseg.validation_config import ValidationConfig
    from pipelines.runner import settings_payload

    monkeypatch.setenv("ORTHOSEG_VALIDATION__WORKERS", "3")
    monkeypatch.setenv("ORTHOSEG_VALIDATION__PIXEL_SPACING_RANGES_MM", '{"DX": [0.05, 1.0]}')
    monkeypatch.setenv("ORTHOSEG_PSEUDONYM_SALT", "top-level-salt")
    settings = Settings()
    config = ValidationConfig.from_settings(settings)  # what validate_batch and prescreen_batch use
    assert config.workers == 3
    assert config.pixel_spacing_ranges_mm == {"DX": (0.05, 1.0)}  # the whole mapping, CR and DR dropped
    assert config.effective_salt() == "top-level-salt"
    assert ValidationConfig.from_settings(settings, workers=5).workers == 5
    assert Settings(**settings_payload(settings)).validation == settings.validation

    with pytest.raises(ValidationError, match="extra"):
        Settings(validation_workers=3)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="ORTHOSEG_PSEUDONYM_SALT"):
        Settings(validation={"pseudonym_salt": "second-salt"})
    monkeypatch.setenv("ORTHOSEG_VALIDATION_WORKERS", "3")
    with pytest.raises(
        ValidationError, match="rename ORTHOSEG_VALIDATION_WORKERS to ORTHOSEG_VALIDATION__WORKERS"
    ):
        Settings()


def test_experiment_artifacts_sit_beside_a_sqlite_database_whatever_the_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ORTHOSEG_MLFLOW_ARTIFACT_LOCATION", raising=False)
    absolute = Settings(mlflow_uri=f"sqlite:///{tmp_path / 'db' / 'mlflow.db'}")
    assert absolute.artifact_location() == (tmp_path / "db" / "mlartifacts").as_uri()
    monkeypatch.chdir(tmp_path)
    relative = Settings(mlflow_uri="sqlite:///.orthoseg/mlflow.db")
    assert relative.artifact_location() == (tmp_path / ".orthoseg" / "mlartifacts").as_uri()
    # A tracking server chooses its own artifact root; an explicit location always wins.
    assert Settings(mlflow_uri="http://127.0.0.1:5000").artifact_location() is None
    explicit = Settings(mlflow_uri="http://127.0.0.1:5000", mlflow_artifact_location="s3://bucket/mlflow")
    assert explicit.artifact_location() == "s3://bucket/mlflow"
