"""Train the segmentation network with Ray Train on a dataset version; track everything in MLflow.

The driver (``run_training``) makes sure the dataset version's canvas cache exists (built in parallel
Ray Data tasks, ``orthoseg.canvas_cache``), hands the cached splits to a ``TorchTrainer`` as Ray Datasets,
and talks to MLflow. ``orthoseg.training.loop.train_loop_per_worker`` is the only code on Ray workers.

Warm start: ``train.init_weights_uri`` names a model whose weights start a fresh run when its network
matches (``orthoseg.training.warm_start``); the run's ``orthoseg.warm_start`` tag says what happened.

Resuming: the Ray run is named after the dataset version and a hash of the configuration, and its
checkpoints live in the store under ``training/ray/<run name>/`` (a local folder or ``s3://``, so every
node of a cluster reaches them). Running the same training again continues from that run's latest
checkpoint and reuses the MLflow run it started; a run that already finished is returned as it is. A
worker that dies mid-run costs a restart of the worker group from the latest checkpoint
(``train.max_failures`` times at most).
"""

from __future__ import annotations

import logging
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel

from orthoseg import __version__
from orthoseg.augment import AugmentConfig
from orthoseg.compute import connect_ray
from orthoseg.labels import LABEL_CONTRACT_VERSION, STRUCTURE_NAMES
from orthoseg.model import check_canvas_fits
from orthoseg.progress import ProgressCallback
from orthoseg.settings import PreprocessConfig, TrainConfig
from orthoseg.training.checkpoint import CKPT_BEST, read_summary
from orthoseg.training.tracking import (
    CONFIG_HASH_TAG,
    DATASET_TAG,
    PREPROCESS_HASH_TAG,
    RAY_RUN_TAG,
    ProgressRelay,
    curves_png,
    experiment_id,
    find_run,
    log_augmentation_preview,
    run_params,
)
from orthoseg.training.warm_start import NO_WARM_START, WARM_START_TAG, WarmStart, resolve_warm_start

if TYPE_CHECKING:
    import pyarrow.fs
    from mlflow.entities import Run

    from orthoseg.canvas_cache import CanvasCacheIndex
    from orthoseg.settings import Settings

logger = logging.getLogger(__name__)

# Store prefix of Ray Train's run folders (checkpoints).
CHECKPOINT_PREFIX = "training/ray"


class TrainingResult(BaseModel):
    """What one training run produced.

    Attributes:
        run_id: MLflow run id.
        dataset_version: dataset version trained on.
        epochs: epochs completed (the configured number).
        best_epoch: epoch (1-based) whose weights were logged as the model.
        best_val_dice_mean: validation Dice mean at ``best_epoch``; None without validation images.
        val_dice: validation Dice per structure at ``best_epoch`` (structures present in val masks).
        final_train_loss: Dice + BCE loss of the last epoch.
        seconds: wall time of this call.
        model_uri: MLflow URI of the logged model.
        ray_run_name: name of the Ray Train run (its checkpoints live under ``<work_dir>/ray_results``).
        resumed_from_epoch: epochs already done by an earlier attempt (0 for a fresh run).
        images: training and validation image counts.
        warm_start_from: the model whose weights started the run (None: from scratch).
        warm_start: the ``orthoseg.warm_start`` tag: that URI, or ``none (<why>)``.
    """

    run_id: str
    dataset_version: str
    epochs: int
    best_epoch: int
    best_val_dice_mean: float | None
    val_dice: dict[str, float]
    final_train_loss: float | None
    seconds: float
    model_uri: str
    ray_run_name: str
    resumed_from_epoch: int
    images: dict[str, int]
    warm_start_from: str | None = None
    warm_start: str = NO_WARM_START


def ray_run_name(settings: Settings, dataset_version: str) -> str:
    """Name of the Ray Train run for this dataset version and configuration (the key for resuming).

    Everything that changes what is trained is hashed: training, preprocessing and augmentation settings,
    the label contract and the code version.
    """
    from orthoseg.model_package import config_hash

    class _Key(BaseModel):
        dataset_version: str
        train: TrainConfig
        preprocess: PreprocessConfig
        augment: AugmentConfig
        label_contract_version: str
        code_version: str

    key = _Key(
        dataset_version=dataset_version,
        train=settings.train,
        preprocess=settings.preprocess,
        augment=settings.augment,
        label_contract_version=LABEL_CONTRACT_VERSION,
        code_version=__version__,
    )
    safe = "".join(c if (c.isascii() and c.isalnum()) or c in "-_." else "_" for c in dataset_version)[:60]
    return f"orthoseg-{safe}-{config_hash(key)}"


def checkpoint_storage(settings: Settings) -> tuple[str, pyarrow.fs.FileSystem | None]:
    """Where Ray Train keeps run folders: ``training/ray`` in the store, and the filesystem to reach it.

    A local store gives a local folder; an ``s3://`` store gives the bucket path with a pyarrow S3
    filesystem (custom endpoint included), so every node of a cluster reads the same checkpoints.
    """
    from orthoseg.storage import LocalStore, S3Store, join_key, store_from_settings

    store = store_from_settings(settings)
    if isinstance(store, LocalStore):
        folder = store.root / CHECKPOINT_PREFIX
        folder.mkdir(parents=True, exist_ok=True)
        return str(folder.resolve()), None
    if isinstance(store, S3Store):
        import pyarrow.fs

        filesystem = pyarrow.fs.S3FileSystem(
            endpoint_override=store.endpoint_url,
            scheme="https" if (store.endpoint_url or "https").startswith("https") else "http",
        )
        return join_key(store.bucket, store.prefix, CHECKPOINT_PREFIX), filesystem
    raise TypeError(f"cannot keep checkpoints in {store!r}")


def _datasets(train: CanvasCacheIndex, val: CanvasCacheIndex) -> dict[str, Any]:
    """The Ray Datasets of the run, created without Ray Data's progress output (the run has its own)."""
    from orthoseg.canvas_cache import canvas_dataset
    from orthoseg.compute import quiet_ray_data

    with quiet_ray_data():  # a Dataset keeps the context it was created in
        datasets = {"train": canvas_dataset(train, shuffle_shards=True)}
        if len(val):
            datasets["val"] = canvas_dataset(val)
    return datasets


def _fit(
    settings: Settings,
    name: str,
    train: CanvasCacheIndex,
    val: CanvasCacheIndex,
    relay_factory: Callable[[Any], ProgressRelay],
    warm_start: WarmStart,
) -> tuple[dict[str, Any], Any]:
    """Run (or resume) the Ray Train run ``name``; returns rank 0's return value and the latest
    ``ray.train.Checkpoint``. A fresh run starts from ``warm_start``'s weights when it has them."""
    import ray
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.util.queue import Queue

    from orthoseg.training.loop import LoopConfig, train_loop_per_worker

    storage_path, filesystem = checkpoint_storage(settings)
    queue = Queue(actor_options={"num_cpus": 0})
    relay = relay_factory(queue)
    loop = LoopConfig(
        train=settings.train,
        network=settings.train.network_config(),
        augment=settings.augment,
        structures_present=tuple(bool(p) for p in val.structures_present),
        train_images=len(train),
        val_images=len(val),
    )
    train_config = settings.train
    resources = {"CPU": train_config.cpus_per_worker, **({"GPU": 1.0} if train_config.use_gpu else {})}
    trainer = TorchTrainer(
        # TorchTrainer's annotation says the loop returns None; Ray Train v2 hands what it returns to
        # Result.return_value.
        train_loop_per_worker,  # type: ignore[arg-type]
        train_loop_config={
            "loop": loop.model_dump(mode="json"),
            "progress_queue": queue,
            # Ray: the weights travel once through the object store, not inside every task's arguments.
            "init_weights": None if warm_start.weights is None else ray.put(warm_start.weights),
        },
        scaling_config=ScalingConfig(
            num_workers=train_config.num_workers, use_gpu=train_config.use_gpu, resources_per_worker=resources
        ),
        run_config=RunConfig(
            name=name,
            storage_path=storage_path,
            storage_filesystem=filesystem,
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            failure_config=FailureConfig(max_failures=train_config.max_failures),
        ),
        datasets=_datasets(train, val),
        dataset_config=DataConfig(datasets_to_split=["train"]),
    )
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous_sigint = signal.getsignal(signal.SIGINT) if in_main_thread else None
    relay.start()
    try:
        result = trainer.fit()
    finally:
        relay.stop()
        if in_main_thread:
            # Ray installs its own Ctrl-C handler (graceful abort) for the run; give the caller theirs back.
            signal.signal(signal.SIGINT, previous_sigint)
        try:
            queue.shutdown()
        except Exception:
            logger.debug("progress queue already gone", exc_info=True)
    if result.checkpoint is None:
        raise RuntimeError(f"Ray run {name} ended without a checkpoint")
    return getattr(result, "return_value", None) or {}, result.checkpoint


def _result_from_run(run: Run, seconds: float, resumed_from_epoch: int) -> TrainingResult:
    from orthoseg.model_package import MODEL_URI_TAG

    metrics, params, tags = run.data.metrics, run.data.params, run.data.tags
    best = metrics.get("best_val_dice_mean")
    warm = tags.get(WARM_START_TAG, NO_WARM_START)
    return TrainingResult(
        run_id=run.info.run_id,
        dataset_version=tags.get(DATASET_TAG, params.get("dataset_version", "")),
        epochs=int(params.get("train.epochs", 0)),
        best_epoch=int(metrics.get("best_epoch", 0)),
        best_val_dice_mean=None if best is None or not np.isfinite(best) else float(best),
        val_dice={
            name: float(metrics[f"best_val_dice_{name}"])
            for name in STRUCTURE_NAMES
            if f"best_val_dice_{name}" in metrics
        },
        final_train_loss=metrics.get("train_loss"),
        seconds=round(seconds, 2),
        model_uri=tags[MODEL_URI_TAG],
        ray_run_name=tags.get(RAY_RUN_TAG, ""),
        resumed_from_epoch=resumed_from_epoch,
        images={"train": int(params.get("images_train", 0)), "val": int(params.get("images_val", 0))},
        warm_start_from=None if warm.startswith(NO_WARM_START) else warm,
        warm_start=warm,
    )


def run_training(
    settings: Settings,
    dataset_version: str | None = None,
    progress: ProgressCallback | None = None,
    warm_start: WarmStart | None = None,
) -> TrainingResult:
    """Train (or resume, or return) the model for a dataset version with the configured settings.

    Logs to MLflow (experiment ``settings.experiment_name``): parameters (training, preprocessing and
    augmentation settings, profile, dataset version, code version, git commit), per-epoch curves with
    ``step=epoch``, ``training_curves.png``, ``augmentation_preview.png``, the best epoch's summary
    metrics, and the model (best validation Dice epoch) as a safetensors pyfunc. Only image counts and
    no patient data reach MLflow. With ``train.init_weights_uri`` a fresh run starts from that model's
    weights when its network matches, else from scratch with a warning (tag ``orthoseg.warm_start``).

    Args:
        settings: store, MLflow, Ray, preprocessing, training and augmentation settings.
        dataset_version: version written by validation; None means the newest.
        progress: called as ``(epochs done, epochs)`` after each epoch.
        warm_start: the initial weights already resolved from ``train.init_weights_uri`` (retraining
            loads the champion to decide; this spares a second download). None: resolved here.

    Raises:
        orthoseg.dataset.DatasetError: when the dataset version is missing or has no training images.
        ValueError: when the canvas does not fit the network depth.
        mlflow.exceptions.MlflowException: when ``train.init_weights_uri`` does not resolve.
    """
    import mlflow

    from orthoseg.canvas_cache import build_canvas_cache
    from orthoseg.dataset import DatasetError, resolve_dataset_version
    from orthoseg.model import build_network_from_config
    from orthoseg.model_package import (
        MODEL_URI_TAG,
        config_hash,
        connect_tracking,
        load_weights,
        log_segmentation_model,
    )

    started = time.perf_counter()
    version = resolve_dataset_version(settings, dataset_version)
    network_config = settings.train.network_config()
    # canvas_px is a multiple of canvas_multiple (PreprocessConfig): this covers square and extended canvases.
    check_canvas_fits(network_config, settings.preprocess.canvas_multiple)
    name = ray_run_name(settings, version)

    client = connect_tracking(settings)
    experiment = experiment_id(client, settings.experiment_name, settings.artifact_location())
    existing = find_run(client, experiment, name)
    if existing is not None and existing.info.status == "FINISHED" and MODEL_URI_TAG in existing.data.tags:
        logger.info("Run %s already trained %s on %s; returning it", existing.info.run_id, name, version)
        if progress is not None:
            progress(settings.train.epochs, settings.train.epochs)
        return _result_from_run(
            existing, time.perf_counter() - started, int(existing.data.metrics.get("epochs_done", 0))
        )

    shard_images = settings.train.cache_shard_images
    train = build_canvas_cache(
        settings, version, "train", shard_images=shard_images, context_rows=settings.train.window_context_rows
    )
    val = build_canvas_cache(settings, version, "val", shard_images=shard_images)
    if len(train) == 0:
        raise DatasetError(f"dataset {version!r} has no training images")
    if len(val) == 0:
        logger.warning("Dataset %s has no validation images: the last epoch's weights are kept", version)
    images = {"train": len(train), "val": len(val)}
    warm_start = warm_start if warm_start is not None else resolve_warm_start(settings)
    connect_ray(settings)

    run_id = existing.info.run_id if existing is not None else None
    with mlflow.start_run(run_id=run_id, experiment_id=experiment, run_name=None if run_id else name) as run:
        run_id = run.info.run_id
        if existing is None:
            mlflow.log_params(run_params(settings, version, name, images))
            mlflow.set_tags(
                {
                    RAY_RUN_TAG: name,
                    DATASET_TAG: version,
                    CONFIG_HASH_TAG: name.rsplit("-", 1)[-1],
                    PREPROCESS_HASH_TAG: config_hash(settings.preprocess),
                    "orthoseg.code_version": __version__,
                    WARM_START_TAG: warm_start.tag,
                }
            )
            log_augmentation_preview(settings, train)
        else:
            logger.info("Resuming MLflow run %s of Ray run %s", run_id, name)
        logged = {m.step for m in client.get_metric_history(run_id, "train_loss")}
        relays: list[ProgressRelay] = []

        def make_relay(queue: Any) -> ProgressRelay:
            relays.append(ProgressRelay(queue, client, run_id, settings.train.epochs, logged, progress))
            return relays[-1]

        logger.info(
            "Training %s: %d train / %d val images, %d epochs, %d Ray workers",
            name,
            len(train),
            len(val),
            settings.train.epochs,
            settings.train.num_workers,
        )
        outcome, checkpoint = _fit(settings, name, train, val, make_relay, warm_start)
        network = build_network_from_config(network_config)
        with checkpoint.as_directory() as directory:
            state = read_summary(Path(directory))
            load_weights(network, Path(directory) / CKPT_BEST)
        history: list[dict[str, Any]] = state["history"]
        relay = relays[-1]
        for entry in history:  # epochs finished before a crash, or whose live message was lost
            relay.log_epoch(int(entry["epoch"]), entry)
        resumed_from = int(outcome.get("started_at", state["epoch"]))
        best_epoch = int(state["best_epoch"])
        best_entry = next((h for h in history if h["epoch"] == best_epoch), history[-1])
        summary = {"best_epoch": float(best_epoch), "epochs_done": float(state["epoch"])}
        summary["best_val_dice_mean"] = float(best_entry.get("val_dice_mean", np.nan))
        for key, value in best_entry.items():
            if key.startswith("val_dice_") and key != "val_dice_mean":
                summary[f"best_{key}"] = float(value)
        mlflow.log_metrics(summary)
        mlflow.log_metric("resumed_from_epoch", float(resumed_from))

        with tempfile.TemporaryDirectory(prefix="orthoseg-train-") as tmp:
            curves = Path(tmp) / "training_curves.png"
            curves_png(history, curves)
            mlflow.log_artifact(str(curves))
        model_uri = existing.data.tags.get(MODEL_URI_TAG) if existing is not None else None
        if not model_uri:
            model_uri = log_segmentation_model(network, network_config, settings.preprocess)
        mlflow.log_metric("training_seconds", time.perf_counter() - started)
        finished = client.get_run(run_id)
    result = _result_from_run(finished, time.perf_counter() - started, resumed_from)
    logger.info(
        "Trained %s in %.0f s: best epoch %d, val Dice mean %s",
        run_id,
        result.seconds,
        result.best_epoch,
        "n/a" if result.best_val_dice_mean is None else f"{result.best_val_dice_mean:.3f}",
    )
    return result
