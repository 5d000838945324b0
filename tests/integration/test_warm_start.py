"""Retraining starts from the champion's weights when its network is the configured one, from scratch
otherwise or when asked, and the training run records which (tag ``orthoseg.warm_start``)."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pandas as pd
import pytest
import torch
from mlflow import MlflowClient

from orthoseg.dataset import read_manifest
from orthoseg.evaluation import evaluate_run
from orthoseg.model_package import download_model
from orthoseg.registry import promote_model, register_model
from orthoseg.retrain import retrain
from orthoseg.settings import Settings
from orthoseg.storage import join_key, store_from_settings
from orthoseg.training import run_training
from orthoseg.training.warm_start import WARM_START_TAG, initial_state_dict
from tests.integration._dataset_helpers import write_dataset_version
from tests.integration._registry_helpers import BENCH, write_policy

pytestmark = pytest.mark.usefixtures("ray_cluster")

GROWN = "v-grown"
CHAMPION_URI = "models:/orthoseg-knee/1"


def _with_train(settings: Settings, **changes: object) -> Settings:
    return settings.model_copy(update={"train": settings.train.model_copy(update=changes)})


def _champion_weights(settings: Settings, folder: Path) -> dict[str, torch.Tensor]:
    model = download_model(CHAMPION_URI, folder, device="cpu")
    return {k: v.detach().clone() for k, v in model.network.state_dict().items()}


@pytest.fixture(scope="module")
def champion(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A tiny network trained for one epoch on v-bench, registered and promoted (version 1, @champion),
    and a newer dataset version holding v-bench plus 8 annotated films."""
    root = tmp_path_factory.mktemp("warm-start")
    settings = Settings(
        store=str(root / "store"),
        mlflow_uri=f"sqlite:///{root / 'mlflow.db'}",
        work_dir=str(root / "work"),
        preprocess={"canvas_px": 64, "spacing_mm": 4.0},
        train={"epochs": 1, "batch_size": 2, "network_channels": (4, 8, 16), "num_workers": 1},
        promotion={"policy_path": str(write_policy(root / "policy.yaml")), "retrain_min_new_images": 8},
    )
    store = store_from_settings(settings)
    write_dataset_version(store, BENCH, count=6, seed=11, test_fraction=0.34)
    trained = run_training(settings, BENCH)
    assert trained.warm_start_from is None and trained.warm_start.startswith("none")
    evaluate_run(settings, trained.run_id, BENCH)
    version = register_model(settings, trained.run_id, BENCH).version
    assert version == "1" and promote_model(settings, version).promoted
    write_dataset_version(store, "v-batch2", count=8, seed=23, test_fraction=0.25)
    rows = pd.concat([read_manifest(store, BENCH), read_manifest(store, "v-batch2")], ignore_index=True)
    buffer = io.BytesIO()
    rows.to_parquet(buffer, index=False)
    store.put_bytes(join_key("datasets", GROWN, "manifest.parquet"), buffer.getvalue())
    store.put_bytes("datasets/LATEST", GROWN.encode())
    return settings


def test_retraining_starts_from_the_champions_weights(
    champion: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    champion_weights = _champion_weights(champion, tmp_path / "champion")
    warm = _with_train(champion, init_weights_uri=CHAMPION_URI)
    initial = initial_state_dict(warm)
    assert initial.keys() == champion_weights.keys()
    for key, value in champion_weights.items():
        torch.testing.assert_close(initial[key], value, rtol=0, atol=0, msg=key)
    scratch = initial_state_dict(champion)
    assert any(not torch.equal(scratch[k], v) for k, v in champion_weights.items())

    # A learning rate of ~0 keeps the weights where they start: the trained model is the champion's.
    with caplog.at_level(logging.INFO, logger="orthoseg.training.warm_start"):
        outcome = retrain(_with_train(champion, learning_rate=1e-9))
    downloads = [r for r in caplog.records if r.getMessage().startswith("Downloading the initial weights")]
    assert len(downloads) == 1, "the champion is downloaded once: to decide, and its weights reused"
    assert outcome.trained and outcome.warm_start_from == CHAMPION_URI
    assert outcome.warm_start_reason is not None and "champion v1's weights" in outcome.warm_start_reason
    assert "trained from champion v1's weights" in outcome.reason
    run = MlflowClient(champion.mlflow_uri).get_run(str(outcome.run_id))
    assert run.data.tags[WARM_START_TAG] == CHAMPION_URI
    assert run.data.params["train.init_weights_uri"] == CHAMPION_URI
    retrained = download_model(run.data.tags["orthoseg.model_uri"], tmp_path / "retrained", device="cpu")
    for key, value in retrained.network.state_dict().items():
        torch.testing.assert_close(value, champion_weights[key], rtol=0, atol=1e-6, msg=key)


def test_another_architecture_or_asking_trains_from_scratch_and_says_why(
    champion: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    wider = _with_train(champion, network_channels=(8, 16, 32))
    decided = retrain(wider, force=True, dry_run=True)
    assert not decided.trained and decided.warm_start_from is None
    difference = "architecture differs: channels (4, 8, 16) -> (8, 16, 32)"
    assert decided.warm_start_reason is not None and difference in decided.warm_start_reason
    assert decided.warm_start_reason.startswith("from scratch: champion v")
    asked = retrain(champion, force=True, dry_run=True, from_scratch=True)
    assert (asked.warm_start_from, asked.warm_start_reason) == (None, "from scratch, as asked")
    assert "would train from scratch, as asked" in asked.reason

    # Training told to start from a model of another architecture warns, trains from scratch, records why.
    with caplog.at_level(logging.WARNING, logger="orthoseg.training.warm_start"):
        result = run_training(_with_train(wider, init_weights_uri=CHAMPION_URI), GROWN)
    assert result.warm_start_from is None
    assert result.warm_start == f"none ({difference})"
    assert any(difference in r.getMessage() and "from scratch" in r.getMessage() for r in caplog.records)
    tags = MlflowClient(champion.mlflow_uri).get_run(result.run_id).data.tags
    assert tags[WARM_START_TAG] == f"none ({difference})"
