"""Training on real local Ray and a real MLflow (sqlite): curves, model, idempotence, resume from Ray."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from mlflow import MlflowClient

from orthoseg.dataset import load_split
from orthoseg.model import build_network_from_config
from orthoseg.model_package import download_model, load_weights
from orthoseg.settings import Settings
from orthoseg.storage import store_from_settings
from orthoseg.training import CHECKPOINT_PREFIX, CKPT_BEST, run_training
from tests.integration._dataset_helpers import write_dataset_version

pytestmark = pytest.mark.usefixtures("ray_cluster")


def _steps(client: MlflowClient, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def _run_folder(settings: Settings, name: str) -> Path:
    return Path(settings.store) / CHECKPOINT_PREFIX / name


def _checkpoints(settings: Settings, name: str) -> list[str]:
    return sorted(p.name for p in _run_folder(settings, name).glob("epoch_*"))


def test_training_tracks_the_run_is_idempotent_and_resumes_from_ray_checkpoints(
    settings: Settings, tmp_path: Path
) -> None:
    version = write_dataset_version(store_from_settings(settings), count=12, seed=3)
    seen: list[tuple[int, int]] = []

    first = run_training(settings, version, progress=lambda done, total: seen.append((done, total)))

    assert seen == [(1, 2), (2, 2)]
    assert (first.epochs, first.resumed_from_epoch, first.dataset_version) == (2, 0, version)
    assert first.images == {"train": 8, "val": 2}
    assert 1 <= first.best_epoch <= 2
    assert first.best_val_dice_mean is not None and 0.0 <= first.best_val_dice_mean <= 1.0
    assert set(first.val_dice) <= {
        "femur",
        "tibia",
        "fibula",
        "patella",
        "femoral_component",
        "tibial_component",
        "cement",
    }
    client = MlflowClient(settings.mlflow_uri)
    run = client.get_run(first.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["dataset_version"] == version
    assert run.data.params["train.epochs"] == "2"
    assert run.data.params["preprocess.canvas_px"] == "128"
    assert "code_version" in run.data.params and "git_commit" in run.data.params
    for key in ("train_loss", "lr", "val_dice_mean", "val_dice_femur", "val_dice_cement"):
        assert _steps(client, first.run_id, key) == [1, 2], key
    assert "training_curves.png" in {a.path for a in client.list_artifacts(first.run_id)}
    # Artifacts live beside the sqlite database, not in ./mlruns of whatever folder the test started in.
    assert run.info.artifact_uri.startswith((tmp_path / "mlartifacts").as_uri())
    # Pseudonymised data only: neither the PatientID nor the name of any image reaches MLflow.
    logged = " ".join([*run.data.params.values(), *run.data.tags.values()])
    assert "PAT-" not in logged and "Patient" not in logged

    # The logged model is the best epoch's weights, loaded from safetensors (no pickle anywhere).
    latest = _checkpoints(settings, first.ray_run_name)[-1]
    network = build_network_from_config(settings.train.network_config()).eval()
    load_weights(network, _run_folder(settings, first.ray_run_name) / latest / CKPT_BEST)
    val = load_split(settings, version, "val")
    with torch.inference_mode():
        expected = torch.sigmoid(network(torch.from_numpy(val.image))).numpy()
    model = download_model(first.model_uri, tmp_path / "model")
    probabilities = model.predict_canvas(val.image)
    np.testing.assert_array_equal(probabilities, expected)
    assert model.preprocess == settings.preprocess
    assert not [p for p in (tmp_path / "model").rglob("*") if p.suffix in {".pkl", ".pickle", ".pt", ".pth"}]
    pyfunc = mlflow.pyfunc.load_model(first.model_uri)
    np.testing.assert_array_equal(pyfunc.predict(val.image), probabilities)

    # Same dataset and configuration again: the finished run is returned, nothing is trained.
    checkpoints = _checkpoints(settings, first.ray_run_name)
    again = run_training(settings, version)
    assert (again.run_id, again.model_uri, again.best_epoch) == (
        first.run_id,
        first.model_uri,
        first.best_epoch,
    )
    assert len(client.search_runs([run.info.experiment_id])) == 1
    assert _checkpoints(settings, first.ray_run_name) == checkpoints

    # The MLflow run is lost (deleted in the UI): the rerun restores the Ray run from its latest
    # checkpoint instead of training from scratch, and rebuilds the record from the checkpoint history.
    client.delete_run(first.run_id)
    rebuilt = run_training(settings, version)
    assert rebuilt.run_id != first.run_id
    assert rebuilt.resumed_from_epoch == 2
    assert rebuilt.best_epoch == first.best_epoch
    assert rebuilt.best_val_dice_mean == pytest.approx(first.best_val_dice_mean)
    assert _steps(client, rebuilt.run_id, "train_loss") == [1, 2]
    assert _checkpoints(settings, first.ray_run_name) == checkpoints
    rebuilt_model = download_model(rebuilt.model_uri, tmp_path / "rebuilt")
    np.testing.assert_array_equal(rebuilt_model.predict_canvas(val.image), probabilities)
