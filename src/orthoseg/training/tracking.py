"""What training tells MLflow: parameters, live per-epoch curves, the curve figure, the code version.

The driver owns the MLflow run; Ray workers never talk to MLflow. Rank 0 sends one message per finished
epoch through a Ray queue and ``ProgressRelay`` logs it on a driver thread, so curves and the CLI
progress bar move while Ray trains.
"""

from __future__ import annotations

import json
import logging
import subprocess
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from orthoseg import __version__
from orthoseg.labels import LABEL_CONTRACT_VERSION, STRUCTURE_NAMES
from orthoseg.progress import ProgressCallback

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

    from orthoseg.canvas_cache import CanvasCacheIndex
    from orthoseg.settings import Settings

logger = logging.getLogger(__name__)

# Run tags through which a re-run finds the MLflow run of the same Ray run.
RAY_RUN_TAG = "orthoseg.ray_run_name"
DATASET_TAG = "orthoseg.dataset_version"
CONFIG_HASH_TAG = "orthoseg.config_hash"
PREPROCESS_HASH_TAG = "orthoseg.preprocess_hash"


def git_commit() -> str:
    """The commit of the checkout the package runs from, or ``unknown`` (installed wheels, no git)."""
    try:
        completed = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    commit = completed.stdout.strip()
    return commit if completed.returncode == 0 and commit else "unknown"


def experiment_id(client: MlflowClient, name: str, artifact_location: str | None = None) -> str:
    """The experiment ``name`` (restored if deleted), created with ``artifact_location`` when new.

    Without an artifact location MLflow puts a sqlite store's artifacts in ``./mlruns`` of whatever folder
    the first run happened to start in; an existing experiment keeps the location it was created with.
    """
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
        return str(experiment.experiment_id)
    return str(client.create_experiment(name, artifact_location=artifact_location))


def find_run(client: MlflowClient, experiment_id: str, name: str) -> Run | None:
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{RAY_RUN_TAG}` = '{name}'",
        order_by=["attributes.start_time DESC"],
    )
    return runs[0] if runs else None


def run_params(settings: Settings, dataset_version: str, name: str, images: dict[str, int]) -> dict[str, str]:
    """The run's parameters: every training, preprocessing and augmentation setting, and the lineage."""
    params: dict[str, Any] = {f"train.{k}": v for k, v in settings.train.model_dump(mode="json").items()}
    params.update({f"preprocess.{k}": v for k, v in settings.preprocess.model_dump(mode="json").items()})
    params.update({f"augment.{k}": v for k, v in settings.augment.model_dump(mode="json").items()})
    params.update(
        {
            "profile": settings.profile or "none",
            "dataset_version": dataset_version,
            "code_version": __version__,
            "git_commit": git_commit(),
            "label_contract_version": LABEL_CONTRACT_VERSION,
            "ray_run_name": name,
            "images_train": images["train"],
            "images_val": images["val"],
        }
    )
    return {k: json.dumps(v) if isinstance(v, list | tuple | dict) else str(v) for k, v in params.items()}


def curves_png(history: list[dict[str, Any]], path: Path) -> None:
    """Training loss and validation Dice per epoch, as one PNG (matplotlib, no GUI backend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    epochs = [h["epoch"] for h in history]
    figure = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(figure)
    loss_axes, dice_axes = figure.subplots(1, 2)
    loss_axes.plot(epochs, [h["train_loss"] for h in history], marker="o")
    loss_axes.set_xlabel("epoch")
    loss_axes.set_ylabel("Dice + BCE loss")
    loss_axes.set_title("training loss")
    for name in STRUCTURE_NAMES:
        key = f"val_dice_{name}"
        if any(key in h for h in history):
            dice_axes.plot(epochs, [h.get(key, np.nan) for h in history], label=name, linewidth=1)
    if any("val_dice_mean" in h for h in history):
        dice_axes.plot(
            epochs, [h.get("val_dice_mean", np.nan) for h in history], "k-", label="mean", linewidth=2
        )
    dice_axes.set_ylim(0, 1)
    dice_axes.set_xlabel("epoch")
    dice_axes.set_ylabel("Dice")
    dice_axes.set_title("validation Dice")
    dice_axes.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    figure.savefig(path)


class ProgressRelay:
    """Drains the workers' progress queue on a thread: logs each epoch's metrics to MLflow and calls
    the progress callback, so curves and the CLI bar move while Ray trains."""

    def __init__(
        self,
        queue: Any,
        client: MlflowClient,
        run_id: str,
        epochs: int,
        logged_epochs: set[int],
        progress: ProgressCallback | None,
    ) -> None:
        self.queue = queue
        self.client = client
        self.run_id = run_id
        self.epochs = epochs
        self.logged_epochs = logged_epochs
        self.progress = progress
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="orthoseg-progress", daemon=True)

    def log_epoch(self, epoch: int, metrics: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        if epoch in self.logged_epochs:
            return
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, epoch) for k, v in metrics.items() if k != "epoch"]
        self.client.log_batch(self.run_id, metrics=batch)
        self.logged_epochs.add(epoch)
        if self.progress is not None:
            try:
                self.progress(epoch, self.epochs)
            except Exception:  # a broken display must not stop training
                logger.exception("progress callback failed")

    def _run(self) -> None:
        from ray.exceptions import RayError
        from ray.util.queue import Empty

        while True:
            try:
                message = self.queue.get(block=True, timeout=0.5)
            except Empty:
                if self._stop.is_set():
                    return
                continue
            except RayError as error:  # the queue actor went away with the run
                logger.debug("progress queue closed: %s", error)
                return
            try:
                self.log_epoch(int(message["epoch"]), message["metrics"])
            except Exception:
                logger.exception("could not log epoch %s to MLflow", message.get("epoch"))

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def log_augmentation_preview(settings: Settings, train: CanvasCacheIndex, samples: int = 6) -> None:
    """``augmentation_preview.png``: a few training canvases as the network sees them, augmented."""
    import tempfile

    import mlflow

    from orthoseg.augment import augmentation_preview_png
    from orthoseg.canvas_cache import decode_shard
    from orthoseg.storage import open_store

    if not settings.augment.enabled or not train.shards:
        return
    store = open_store(train.store_uri, train.s3_endpoint_url)
    shard = decode_shard(store.get_bytes(train.shards[0].key))
    side = train.preprocess.canvas_px
    top = train.context_rows  # the anatomy-centred window of each strip
    with tempfile.TemporaryDirectory(prefix="orthoseg-augment-") as tmp:
        path = Path(tmp) / "augmentation_preview.png"
        augmentation_preview_png(
            shard["image"][:samples, :, top : top + side],
            shard["masks"][:samples, :, top : top + side],
            settings.augment,
            path,
            seed=settings.train.seed,
        )
        mlflow.log_artifact(str(path))
