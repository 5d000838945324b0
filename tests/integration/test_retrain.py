"""``retrain`` trains only when enough annotated images arrived since the champion's dataset version, and
puts what it trains through the benchmark gate against that champion."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from orthoseg.dataset import read_manifest
from orthoseg.promotion import promote_model
from orthoseg.retrain import count_new_annotated_images, decide_retrain, retrain
from orthoseg.settings import Settings
from orthoseg.storage import join_key, store_from_settings
from tests.integration._dataset_helpers import write_dataset_version
from tests.integration._registry_helpers import BENCH, register_constant_model, write_policy

GROWN = "v-grown"
ADDED = 8


def _settings(tmp_path: Path, threshold: int) -> Settings:
    return Settings(
        store=str(tmp_path / "store"),
        mlflow_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        work_dir=str(tmp_path / "work"),
        preprocess={"canvas_px": 64, "spacing_mm": 4.0},
        train={"epochs": 1, "batch_size": 2, "network_channels": (4, 8, 16), "num_workers": 1},
        promotion={
            "policy_path": str(write_policy(tmp_path / "policy.yaml")),
            "retrain_min_new_images": threshold,
        },
    )


@pytest.fixture()
def grown(tmp_path: Path) -> Settings:
    """A champion trained on v-bench, and a newer dataset version holding v-bench plus 8 annotated films
    (datasets accumulate, as validation writes them)."""
    settings = _settings(tmp_path, threshold=20)
    store = store_from_settings(settings)
    write_dataset_version(store, BENCH, count=6, seed=11, test_fraction=0.34)
    write_dataset_version(store, "v-batch2", count=ADDED, seed=23, test_fraction=0.25)
    rows = pd.concat([read_manifest(store, BENCH), read_manifest(store, "v-batch2")], ignore_index=True)
    buffer = io.BytesIO()
    rows.to_parquet(buffer, index=False)
    store.put_bytes(join_key("datasets", GROWN, "manifest.parquet"), buffer.getvalue())
    store.put_bytes("datasets/LATEST", GROWN.encode())
    assert promote_model(settings, register_constant_model(settings, frozenset({"femur"}))).promoted
    return settings


def _with_threshold(settings: Settings, threshold: int) -> Settings:
    promotion = settings.promotion.model_copy(update={"retrain_min_new_images": threshold})
    return settings.model_copy(update={"promotion": promotion})


def test_new_images_are_counted_since_the_champions_dataset(grown: Settings) -> None:
    assert count_new_annotated_images(grown, GROWN, BENCH) == ADDED
    assert count_new_annotated_images(grown, GROWN, None) == 6 + ADDED
    assert count_new_annotated_images(grown, GROWN, "v-absent") == 6 + ADDED


def test_below_the_threshold_it_does_not_train_and_says_why(grown: Settings) -> None:
    outcome = retrain(grown)
    assert (outcome.trained, outcome.new_annotated_images, outcome.threshold) == (False, ADDED, 20)
    assert (outcome.champion_version, outcome.champion_dataset_version) == ("1", BENCH)
    assert f"{ADDED} new annotated images in {GROWN}" in outcome.reason
    assert "below the threshold 20" in outcome.reason and outcome.run_id is None
    dry = retrain(_with_threshold(grown, ADDED), dry_run=True)
    assert not dry.trained and "reach the threshold" in dry.reason and "would train" in dry.reason


def test_the_decision_alone_trains_nothing_and_names_the_warm_start(grown: Settings) -> None:
    """``decide_retrain`` (the training pipeline's gate) decides as ``retrain`` does, without training."""
    tracking = MlflowClient(grown.mlflow_uri)
    experiments = [e.experiment_id for e in tracking.search_experiments()]
    runs_before = len(tracking.search_runs(experiments))
    below = decide_retrain(grown, GROWN)
    assert (below.should_train, below.trained, below.new_annotated_images) == (False, False, ADDED)
    assert below.warm_start_from is None and "below the threshold 20: not training" in below.reason
    enough = decide_retrain(_with_threshold(grown, ADDED), GROWN)
    assert (enough.should_train, enough.trained, enough.forced) == (True, False, False)
    assert enough.warm_start_from == "models:/orthoseg-knee/1"
    assert "reach the threshold 8: training from champion v1's weights" in enough.reason
    forced = decide_retrain(grown, None, force=True, from_scratch=True)
    assert (forced.should_train, forced.forced, forced.dataset_version) == (True, True, GROWN)
    assert forced.warm_start_from is None
    assert "below the threshold 20, but training is forced: training from scratch, as asked" in forced.reason
    experiments = [e.experiment_id for e in tracking.search_experiments()]
    assert len(tracking.search_runs(experiments)) == runs_before  # nothing trained


def test_the_command_exits_cleanly_when_there_is_too_little_new_data(grown: Settings) -> None:
    environment = {
        **os.environ,
        "ORTHOSEG_STORE": grown.store,
        "ORTHOSEG_MLFLOW_URI": grown.mlflow_uri,
        "ORTHOSEG_WORK_DIR": grown.work_dir,
        "ORTHOSEG_PROMOTION__POLICY_PATH": grown.promotion.policy_path,
        "ORTHOSEG_PROMOTION__RETRAIN_MIN_NEW_IMAGES": "9",
    }
    result = subprocess.run(
        [sys.executable, "-m", "orthoseg.cli", "retrain", "--from-scratch", "--json"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert (payload["trained"], payload["new_annotated_images"], payload["threshold"]) == (False, ADDED, 9)


@pytest.mark.usefixtures("ray_cluster")
def test_over_the_threshold_it_trains_and_judges_the_model_against_the_champion(grown: Settings) -> None:
    outcome = retrain(_with_threshold(grown, ADDED))
    assert outcome.trained and outcome.run_id and outcome.registered_version == "2"
    decision = outcome.promotion
    assert decision is not None and decision["version"] == "2"
    assert decision["champion"]["version"] == "1"  # judged against the first model...
    assert decision["benchmark"]["dataset_version"] == BENCH  # ...on the benchmark, not its own split
    assert decision["candidate"]["images"] == decision["champion"]["images"]
    assert decision["decided_via"].startswith("retrain")
    # The champion has the configured architecture: training started from its weights.
    assert outcome.warm_start_from == "models:/orthoseg-knee/1"


@pytest.mark.usefixtures("ray_cluster")
def test_two_successive_retrains_judge_the_second_model_against_the_first(tmp_path: Path) -> None:
    """The first retrain (no champion: every annotated image is new) trains and becomes champion; new
    annotations arrive; the second retrain counts only them, trains from the first model's weights, and
    is judged against the first model on the benchmark set, both scored on the same images."""
    settings = _settings(tmp_path, threshold=6)
    store = store_from_settings(settings)
    write_dataset_version(store, BENCH, count=6, seed=11, test_fraction=0.34)
    first = retrain(settings)
    assert first.trained and first.champion_version is None and first.new_annotated_images == 6
    assert first.registered_version == "1" and first.warm_start_from is None
    assert first.promotion is not None and first.promotion["promoted"]

    write_dataset_version(store, "v-batch2", count=ADDED, seed=23, test_fraction=0.25)
    rows = pd.concat([read_manifest(store, BENCH), read_manifest(store, "v-batch2")], ignore_index=True)
    buffer = io.BytesIO()
    rows.to_parquet(buffer, index=False)
    store.put_bytes(join_key("datasets", GROWN, "manifest.parquet"), buffer.getvalue())
    store.put_bytes("datasets/LATEST", GROWN.encode())

    second = retrain(settings)
    assert second.trained and second.new_annotated_images == ADDED
    assert (second.champion_version, second.champion_dataset_version) == ("1", BENCH)
    assert second.registered_version == "2" and second.warm_start_from == "models:/orthoseg-knee/1"
    decision = second.promotion
    assert decision is not None and decision["version"] == "2"
    assert decision["champion"]["version"] == "1"
    assert decision["benchmark"]["dataset_version"] == BENCH
    assert decision["candidate"]["images"] == decision["champion"]["images"] > 0
