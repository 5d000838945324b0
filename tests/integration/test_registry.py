"""Evaluate → register → promote → rollback → resolve → load, against a real MLflow registry (sqlite).

The runs here hold untrained networks logged exactly as training logs its model: the registry and the
gate only look at a run's logged model and its test Dice, not at how the weights were made.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

from orthoseg import __version__
from orthoseg.dataset import load_split
from orthoseg.evaluation import evaluate_run
from orthoseg.model import NetworkConfig, build_network_from_config
from orthoseg.model_package import config_hash, connect_tracking, log_segmentation_model
from orthoseg.registry import (
    RegistryError,
    load_registered_model,
    promote_model,
    register_model,
    resolve_model,
    rollback,
)
from orthoseg.settings import PromotionSettings, Settings
from orthoseg.storage import store_from_settings
from orthoseg.training import DATASET_TAG, PREPROCESS_HASH_TAG
from tests.integration._dataset_helpers import write_dataset_version


def _log_run(settings: Settings, version: str, seed: int) -> str:
    """An MLflow run carrying a (randomly initialised) model, tagged like a training run."""
    connect_tracking(settings)
    mlflow.set_experiment(settings.experiment_name)
    torch.manual_seed(seed)
    config = NetworkConfig(channels=settings.train.network_channels)
    network = build_network_from_config(config)
    with mlflow.start_run() as run:
        mlflow.set_tags(
            {
                DATASET_TAG: version,
                PREPROCESS_HASH_TAG: config_hash(settings.preprocess),
                "orthoseg.code_version": __version__,
            }
        )
        mlflow.log_param("dataset_version", version)
        log_segmentation_model(network, config, settings.preprocess)
    return run.info.run_id


@pytest.fixture(scope="module")
def registry_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, str, list[str]]]:
    """Settings, a dataset version and two evaluated runs, better one first."""
    root = tmp_path_factory.mktemp("registry")
    settings = Settings(
        store=str(root / "store"),
        mlflow_uri=f"sqlite:///{root / 'mlflow.db'}",
        work_dir=str(root / "work"),
        preprocess={"canvas_px": 64, "spacing_mm": 4.0},
        train={"network_channels": (4, 8, 16)},
    )
    version = write_dataset_version(store_from_settings(settings), count=6, seed=11, test_fraction=0.34)
    # The benchmark set is this version's test split, so the gate's numbers are the runs' test Dice.
    policy = root / "promotion.yaml"
    policy.write_text(
        f"benchmark: {{dataset_version: {version}, split: test}}\n"
        "min_dice_mean: 0.0\nmin_mean_improvement: 0.0\nmax_structure_regression: 1.0\n"
    )
    settings = settings.model_copy(update={"promotion": PromotionSettings(policy_path=str(policy))})
    runs = [_log_run(settings, version, seed) for seed in (0, 1)]
    evaluations = [evaluate_run(settings, run_id, version) for run_id in runs]
    assert evaluations[0].dice_mean != evaluations[1].dice_mean
    ordered = [e.run_id for e in sorted(evaluations, key=lambda e: e.dice_mean, reverse=True)]
    yield settings, version, ordered


def test_evaluation_is_logged_to_the_run(registry_env: tuple[Settings, str, list[str]]) -> None:
    settings, version, runs = registry_env
    client = connect_tracking(settings)
    run = client.get_run(runs[0])
    assert 0.0 <= run.data.metrics["test_dice_mean"] <= 1.0
    assert "test_dice_femur" in run.data.metrics
    assert run.data.tags["orthoseg.evaluated_dataset_version"] == version
    assert "evaluation/test_dice.png" in {a.path for a in client.list_artifacts(runs[0], "evaluation")}


def test_register_promote_rollback_resolve_and_load(registry_env: tuple[Settings, str, list[str]]) -> None:
    settings, version, (better_run, worse_run) = registry_env
    with pytest.raises(RegistryError):
        resolve_model(settings, "champion")

    better = register_model(settings, better_run, version)
    assert register_model(settings, better_run, version).version == better.version  # idempotent
    worse = register_model(settings, worse_run)
    assert (better.version, worse.version) == ("1", "2")
    assert better.tags["dataset_version"] == version
    assert better.tags["code_version"] == __version__
    assert better.tags["preprocess_hash"] == config_hash(settings.preprocess)
    assert float(better.tags["test_dice_mean"]) > float(worse.tags["test_dice_mean"])
    assert "test_dice_femur" in better.tags

    first = promote_model(settings, better.version)
    assert (first.promoted, first.alias, first.previous_champion) == (True, "champion", None)
    assert "no champion yet" in first.reason

    second = promote_model(settings, worse.version)
    assert (second.promoted, second.alias, second.previous_champion) == (False, "challenger", "1")
    assert second.candidate_dice_mean < second.champion_dice_mean
    assert second.candidate_dice_mean == pytest.approx(float(worse.tags["test_dice_mean"]), abs=1e-6)
    assert "mean_improvement" in second.reason and "champion v1" in second.reason
    assert resolve_model(settings, "champion") == ("1", f"models:/{settings.model_name}/1")
    assert resolve_model(settings, "@challenger")[0] == "2"
    assert resolve_model(settings, "latest")[0] == "2"
    assert resolve_model(settings, "1")[0] == "1"
    with pytest.raises(RegistryError):
        resolve_model(settings, "7")

    undone = rollback(settings, worse.version)
    assert (undone.promoted, undone.alias, undone.previous_champion) == (True, "champion", "1")
    assert resolve_model(settings, "champion")[0] == "2"
    assert resolve_model(settings, "previous")[0] == "1"
    with pytest.raises(RegistryError):
        resolve_model(settings, "challenger")  # the challenger became champion
    again = promote_model(settings, better.version)  # the gate puts the better model back
    assert (again.promoted, again.previous_champion) == (True, "2")

    model, loaded_version = load_registered_model(settings, "champion")
    assert loaded_version == "1"
    test = load_split(settings, version, "test", preprocess=model.preprocess)
    probabilities = model.predict_canvas(test.image)
    assert probabilities.shape == (len(test), 7, 64, 64)
    assert np.isfinite(probabilities).all() and probabilities.min() >= 0.0 and probabilities.max() <= 1.0
    cached = Path(settings.work_dir) / "models" / "registry" / settings.model_name / "1"
    assert list(cached.rglob("weights.safetensors"))


def test_register_refuses_a_run_that_was_not_evaluated(registry_env: tuple[Settings, str, list[str]]) -> None:
    settings, version, _ = registry_env
    run_id = _log_run(settings, version, seed=5)
    with pytest.raises(RegistryError, match="evaluate"):
        register_model(settings, run_id, version)
