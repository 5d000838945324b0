"""Train the segmentation network with Ray Train on a dataset version; track everything in MLflow.

The driver (``run_training``) decodes the dataset once (``orthoseg.dataset``), puts the canvas arrays in
the Ray object store, starts a ``TorchTrainer`` and talks to MLflow. ``train_loop_per_worker`` is the
only code that runs on Ray workers; each Ray-specific step in it is marked ``# Ray:``.

Resuming: the Ray run is named after the dataset version and a hash of the configuration, and stored
under ``<work_dir>/ray_results``. Running the same training again continues from that run's latest
checkpoint and reuses the MLflow run it started; a run that already finished is returned as it is.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel

from orthoseg import __version__
from orthoseg.compute import connect_ray
from orthoseg.labels import LABEL_CONTRACT_VERSION, STRUCTURE_NAMES
from orthoseg.model import NetworkConfig, check_canvas_fits
from orthoseg.progress import ProgressCallback
from orthoseg.settings import PreprocessConfig, TrainConfig

if TYPE_CHECKING:
    import torch
    from mlflow import MlflowClient
    from mlflow.entities import Run

    from orthoseg.dataset import CanvasDataset
    from orthoseg.settings import Settings

logger = logging.getLogger(__name__)


# Run tags through which a re-run finds the MLflow run of the same Ray run.
RAY_RUN_TAG = "orthoseg.ray_run_name"
DATASET_TAG = "orthoseg.dataset_version"
CONFIG_HASH_TAG = "orthoseg.config_hash"
PREPROCESS_HASH_TAG = "orthoseg.preprocess_hash"

# Files of a Ray checkpoint (internal to training; the logged model is the safetensors package).
CKPT_WEIGHTS = "weights.safetensors"
CKPT_BEST = "best.safetensors"
CKPT_OPTIMIZER = "optimizer.pt"
CKPT_STATE = "state.json"


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


# ----------------------------------------------------------------------------------------------------
# Worker side
# ----------------------------------------------------------------------------------------------------


def _cosine_lr(base_lr: float, epoch: int, epochs: int) -> float:
    """Learning rate of 0-based ``epoch``: cosine annealing from ``base_lr`` over ``epochs`` (per epoch).

    A pure function of the epoch, so a resumed run continues on exactly the same schedule.
    """
    return float(0.5 * base_lr * (1.0 + np.cos(np.pi * epoch / max(epochs, 1))))


def _amp_dtype(device: torch.device, enabled: bool) -> torch.dtype | None:
    """bfloat16 on GPUs that support it, float16 on older GPUs, None (float32) on CPU."""
    import torch

    if not enabled or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _write_checkpoint(
    directory: Path,
    network: torch.nn.Module,
    best_state: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    state: dict[str, Any],
) -> None:
    import torch
    from safetensors.torch import save_file

    from orthoseg.model_package import save_weights

    save_weights(network, directory / CKPT_WEIGHTS)
    save_file(best_state, str(directory / CKPT_BEST))
    torch.save(
        {"optimizer": optimizer.state_dict(), "scaler": scaler.state_dict()}, directory / CKPT_OPTIMIZER
    )
    (directory / CKPT_STATE).write_text(json.dumps(state))


def _all_reduce_sum(values: torch.Tensor, world_size: int) -> torch.Tensor:
    import torch.distributed as dist

    if world_size > 1:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def train_loop_per_worker(config: dict[str, Any]) -> dict[str, Any]:
    """One Ray Train worker: train on its shard, validate on its share of val, checkpoint, report.

    Validation Dice is the mean per-image Dice per structure, where an image with a structure absent
    from both prediction and ground truth counts 1.0 (``orthoseg.evaluation.dice_per_image``);
    ``val_dice_mean`` averages the structures present in the validation ground truth.

    Args:
        config: ``train`` (TrainConfig as JSON), ``network`` (NetworkConfig as JSON), ``train_data`` and
            ``val_data`` (object refs of ``{"image", "masks"}`` arrays), ``val_present`` (C bools) and
            ``progress_queue`` (a ``ray.util.queue.Queue`` or None).

    Returns:
        From rank 0 (the value Ray hands back to the driver): the full per-epoch ``history``, the epoch
        this attempt ``started_at``, ``best_epoch`` and ``best_val_dice_mean``.
    """
    import ray
    import ray.train
    import ray.train.torch
    import torch
    from monai.losses import DiceLoss
    from safetensors.torch import load_file
    from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

    from orthoseg.evaluation import dice_per_image
    from orthoseg.model import build_network_from_config
    from orthoseg.model_package import load_weights, unwrap_network

    train_config = TrainConfig.model_validate(config["train"])
    network_config = NetworkConfig.model_validate(config["network"])
    present = np.asarray(config["val_present"], dtype=bool)

    context = ray.train.get_context()  # Ray: this worker's place in the group
    rank, world_size = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()  # Ray: the GPU Ray assigned to this worker, or the CPU
    torch.manual_seed(train_config.seed)

    # Ray: the canvases were put in the object store once by the driver; every worker maps the same copy.
    train_arrays = ray.get(config["train_data"])
    val_arrays = ray.get(config["val_data"])

    network = build_network_from_config(network_config)
    best_state = {k: v.detach().clone() for k, v in network.state_dict().items()}
    state: dict[str, Any] = {"epoch": 0, "history": [], "best_epoch": 0, "best_val_dice_mean": None}
    optimizer_state = None
    checkpoint = ray.train.get_checkpoint()  # Ray: latest checkpoint of this run name (None when fresh)
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            folder = Path(directory)
            state = json.loads((folder / CKPT_STATE).read_text())
            load_weights(network, folder / CKPT_WEIGHTS)
            best_state = load_file(str(folder / CKPT_BEST))
            optimizer_state = torch.load(folder / CKPT_OPTIMIZER, map_location="cpu", weights_only=True)
    start_epoch = int(state["epoch"])

    model = ray.train.torch.prepare_model(network)  # Ray: move to device, wrap in DDP when world_size > 1
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=train_config.learning_rate, weight_decay=train_config.weight_decay
    )
    amp_dtype = _amp_dtype(device, train_config.mixed_precision)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state["optimizer"])
        scaler.load_state_dict(optimizer_state["scaler"])

    # Object-store arrays are read-only; the worker's own copy is small (N x 8 canvases of bytes).
    train_set = TensorDataset(torch.tensor(train_arrays["image"]), torch.tensor(train_arrays["masks"]))
    loader = DataLoader(train_set, batch_size=train_config.batch_size, shuffle=True, drop_last=False)
    loader = ray.train.torch.prepare_data_loader(loader)  # Ray: DistributedSampler shard + device transfer
    # Validation shard: every world_size-th image, no padding, so each image counts exactly once.
    val_index = np.arange(rank, len(val_arrays["image"]), world_size)
    dice_loss = DiceLoss(sigmoid=True)
    bce_loss = torch.nn.BCEWithLogitsLoss()

    for epoch in range(start_epoch, train_config.epochs):
        started = time.perf_counter()
        lr = _cosine_lr(train_config.learning_rate, epoch, train_config.epochs)
        for group in optimizer.param_groups:
            group["lr"] = lr
        if isinstance(loader.sampler, DistributedSampler):
            loader.sampler.set_epoch(epoch)  # Ray: reshuffle the distributed shards each epoch
        model.train()
        loss_sum = torch.zeros(2, dtype=torch.float64)  # (sum of loss * images, images)
        for images, masks in loader:
            targets = masks.float()
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                logits = model(images)
            logits = logits.float()
            loss = dice_loss(logits, targets) + bce_loss(logits, targets)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            loss_sum += torch.tensor([loss.item() * images.shape[0], images.shape[0]], dtype=torch.float64)

        bare = unwrap_network(model).eval()
        dice_sum = torch.zeros(len(STRUCTURE_NAMES) + 1, dtype=torch.float64)  # per structure + count
        with torch.inference_mode():
            for start in range(0, len(val_index), train_config.batch_size):
                index = val_index[start : start + train_config.batch_size]
                images = torch.from_numpy(val_arrays["image"][index]).to(device)
                with torch.autocast(
                    device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None
                ):
                    logits = bare(images)
                pred = torch.sigmoid(logits.float()) >= 0.5
                truth = torch.from_numpy(val_arrays["masks"][index]).to(device)
                scores = dice_per_image(pred, truth).double().cpu()
                dice_sum[:-1] += scores.sum(dim=0)
                dice_sum[-1] += scores.shape[0]
        totals = _all_reduce_sum(torch.cat([loss_sum, dice_sum]), world_size)
        loss_total, dice_total = totals[:2], totals[2:]

        metrics: dict[str, float] = {
            "train_loss": float(loss_total[0] / loss_total[1].clamp(min=1.0)),
            "lr": lr,
            "epoch_seconds": time.perf_counter() - started,
        }
        val_mean = None
        if dice_total[-1] > 0:
            per_structure = (dice_total[:-1] / dice_total[-1]).numpy()
            for c, name in enumerate(STRUCTURE_NAMES):
                metrics[f"val_dice_{name}"] = float(per_structure[c])
            if present.any():
                val_mean = float(per_structure[present].mean())
                metrics["val_dice_mean"] = val_mean
        done = epoch + 1
        state["history"].append({"epoch": done, **metrics})
        best = state["best_val_dice_mean"]
        if val_mean is None or best is None or val_mean >= best:
            state["best_epoch"], state["best_val_dice_mean"] = done, val_mean
            best_state = {k: v.detach().to("cpu").clone() for k, v in bare.state_dict().items()}
        state["epoch"] = done

        if done % train_config.checkpoint_every_epochs == 0 or done == train_config.epochs:
            with tempfile.TemporaryDirectory(prefix="orthoseg-ckpt-") as tmp:
                if rank == 0:
                    _write_checkpoint(Path(tmp), model, best_state, optimizer, scaler, state)
                    saved = ray.train.Checkpoint.from_directory(tmp)
                else:
                    saved = None
                # Ray: persist rank 0's checkpoint under the run's storage path (a barrier for all ranks).
                ray.train.report(
                    {"epoch": done, **metrics}, checkpoint=saved, checkpoint_dir_name=f"epoch_{done:04d}"
                )
        else:
            ray.train.report({"epoch": done, **metrics})  # Ray: metrics only, same barrier
        if rank == 0 and config.get("progress_queue") is not None:
            config["progress_queue"].put({"epoch": done, "metrics": metrics})  # Ray: live progress to driver
    return {
        "history": state["history"],
        "started_at": start_epoch,
        "best_epoch": state["best_epoch"],
        "best_val_dice_mean": state["best_val_dice_mean"],
    }


# ----------------------------------------------------------------------------------------------------
# Driver side
# ----------------------------------------------------------------------------------------------------


def ray_run_name(settings: Settings, dataset_version: str) -> str:
    """Name of the Ray Train run for this dataset version and configuration (the key for resuming).

    Everything that changes what is trained is hashed: training and preprocessing settings, the label
    contract and the code version.
    """
    from orthoseg.model_package import config_hash

    class _Key(BaseModel):
        dataset_version: str
        train: TrainConfig
        preprocess: PreprocessConfig
        label_contract_version: str
        code_version: str

    key = _Key(
        dataset_version=dataset_version,
        train=settings.train,
        preprocess=settings.preprocess,
        label_contract_version=LABEL_CONTRACT_VERSION,
        code_version=__version__,
    )
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in dataset_version)[:60]
    return f"orthoseg-{safe}-{config_hash(key)}"


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


def _experiment_id(client: MlflowClient, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
        return str(experiment.experiment_id)
    return str(client.create_experiment(name))


def _find_run(client: MlflowClient, experiment_id: str, name: str) -> Run | None:
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{RAY_RUN_TAG}` = '{name}'",
        order_by=["attributes.start_time DESC"],
    )
    return runs[0] if runs else None


def _params(settings: Settings, dataset_version: str, name: str, images: dict[str, int]) -> dict[str, str]:
    params: dict[str, Any] = {f"train.{k}": v for k, v in settings.train.model_dump(mode="json").items()}
    params.update({f"preprocess.{k}": v for k, v in settings.preprocess.model_dump(mode="json").items()})
    params.update(
        {
            "dataset_version": dataset_version,
            "code_version": __version__,
            "git_commit": git_commit(),
            "label_contract_version": LABEL_CONTRACT_VERSION,
            "ray_run_name": name,
            "images_train": images["train"],
            "images_val": images["val"],
        }
    )
    return {k: json.dumps(v) if isinstance(v, list | tuple) else str(v) for k, v in params.items()}


def _curves_png(history: list[dict[str, Any]], path: Path) -> None:
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


class _ProgressRelay:
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
        from ray.util.queue import Empty

        while True:
            try:
                message = self.queue.get(block=True, timeout=0.5)
            except Empty:
                if self._stop.is_set():
                    return
                continue
            except Exception:  # the queue actor went away with the run
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


def _fit(
    settings: Settings,
    name: str,
    network_config: NetworkConfig,
    train: CanvasDataset,
    val: CanvasDataset,
    relay_factory: Callable[[Any], _ProgressRelay],
) -> tuple[dict[str, Any], Any]:
    """Run (or resume) the Ray Train run ``name``; returns rank 0's return value and the latest
    ``ray.train.Checkpoint``."""
    import ray
    from ray.train import CheckpointConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.util.queue import Queue

    storage = Path(settings.work_dir).expanduser().resolve() / "ray_results"
    storage.mkdir(parents=True, exist_ok=True)
    queue = Queue(actor_options={"num_cpus": 0})
    relay = relay_factory(queue)
    loop_config = {
        "train": settings.train.model_dump(mode="json"),
        "network": network_config.model_dump(mode="json"),
        "train_data": ray.put({"image": train.image, "masks": train.masks}),
        "val_data": ray.put({"image": val.image, "masks": val.masks}),
        "val_present": val.structures_present.tolist(),
        "progress_queue": queue,
    }
    trainer = TorchTrainer(
        train_loop_per_worker,  # type: ignore[arg-type]  # its return value reaches Result.return_value
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=settings.train.num_workers, use_gpu=settings.train.use_gpu),
        run_config=RunConfig(
            name=name, storage_path=str(storage), checkpoint_config=CheckpointConfig(num_to_keep=2)
        ),
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
    )


def run_training(
    settings: Settings, dataset_version: str | None = None, progress: ProgressCallback | None = None
) -> TrainingResult:
    """Train (or resume, or return) the model for a dataset version with the configured settings.

    Logs to MLflow (experiment ``settings.experiment_name``): parameters (training and preprocessing
    settings, dataset version, code version, git commit), per-epoch curves with ``step=epoch``, a
    ``training_curves.png``, the best epoch's summary metrics, and the model (best validation Dice
    epoch) as a safetensors pyfunc. Only image counts and no patient data reach MLflow.

    Args:
        settings: store, MLflow, Ray, work_dir, preprocessing and training settings.
        dataset_version: version written by validation; None means the newest.
        progress: called as ``(epochs done, epochs)`` after each epoch.

    Raises:
        orthoseg.dataset.DatasetError: when the dataset version is missing or has no training images.
        ValueError: when the canvas does not fit the network depth.
    """
    import mlflow

    from orthoseg.dataset import DatasetError, load_split, resolve_dataset_version
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
    network_config = NetworkConfig(channels=settings.train.network_channels)
    check_canvas_fits(network_config, settings.preprocess.canvas_px)
    name = ray_run_name(settings, version)

    client = connect_tracking(settings)
    experiment_id = _experiment_id(client, settings.experiment_name)
    existing = _find_run(client, experiment_id, name)
    if existing is not None and existing.info.status == "FINISHED" and MODEL_URI_TAG in existing.data.tags:
        logger.info("Run %s already trained %s on %s; returning it", existing.info.run_id, name, version)
        if progress is not None:
            progress(settings.train.epochs, settings.train.epochs)
        return _result_from_run(
            existing, time.perf_counter() - started, int(existing.data.metrics.get("epochs_done", 0))
        )

    train = load_split(settings, version, "train")
    val = load_split(settings, version, "val")
    if len(train) == 0:
        raise DatasetError(f"dataset {version!r} has no training images")
    if len(val) == 0:
        logger.warning("Dataset %s has no validation images: the last epoch's weights are kept", version)
    images = {"train": len(train), "val": len(val)}
    connect_ray(settings)

    run_id = existing.info.run_id if existing is not None else None
    with mlflow.start_run(
        run_id=run_id, experiment_id=experiment_id, run_name=None if run_id else name
    ) as run:
        run_id = run.info.run_id
        if existing is None:
            mlflow.log_params(_params(settings, version, name, images))
            mlflow.set_tags(
                {
                    RAY_RUN_TAG: name,
                    DATASET_TAG: version,
                    CONFIG_HASH_TAG: name.rsplit("-", 1)[-1],
                    PREPROCESS_HASH_TAG: config_hash(settings.preprocess),
                    "orthoseg.code_version": __version__,
                }
            )
        else:
            logger.info("Resuming MLflow run %s of Ray run %s", run_id, name)
        logged = {m.step for m in client.get_metric_history(run_id, "train_loss")}
        relays: list[_ProgressRelay] = []

        def make_relay(queue: Any) -> _ProgressRelay:
            relays.append(_ProgressRelay(queue, client, run_id, settings.train.epochs, logged, progress))
            return relays[-1]

        logger.info(
            "Training %s: %d train / %d val images, %d epochs, %d Ray workers",
            name,
            len(train),
            len(val),
            settings.train.epochs,
            settings.train.num_workers,
        )
        outcome, checkpoint = _fit(settings, name, network_config, train, val, make_relay)
        network = build_network_from_config(network_config)
        with checkpoint.as_directory() as directory:
            state = json.loads((Path(directory) / CKPT_STATE).read_text())
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
            _curves_png(history, curves)
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
