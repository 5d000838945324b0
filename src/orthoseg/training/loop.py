"""The code that runs on Ray Train workers: one epoch at a time, around a typed loop configuration.

``train_loop_per_worker`` is the only function Ray calls; it restores, then for each epoch trains,
validates, summarises across workers and checkpoints. Each Ray-specific step is marked ``# Ray:``.
Only this module calls ``ray.train``.

Data arrives through Ray Data (``ray.train.get_dataset_shard``): the training split is streamed from
the canvas cache and split between workers, augmented on the worker as each batch is collated; the
validation split reaches every worker whole and each worker scores the images whose UID hashes to its
rank, so each validation image counts exactly once.
"""

from __future__ import annotations

import math
import tempfile
import threading
import time
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from orthoseg.augment import AugmentConfig
from orthoseg.labels import STRUCTURE_NAMES
from orthoseg.model import NetworkConfig
from orthoseg.settings import TrainConfig
from orthoseg.training.checkpoint import TrainState, read_checkpoint, write_checkpoint
from orthoseg.training.schedule import learning_rate_at

# Mask channels on each side of the knee joint (shaft windows show one side only).
_FEMORAL_SIDE = tuple(STRUCTURE_NAMES.index(n) for n in ("femur", "patella", "femoral_component"))
_TIBIAL_SIDE = tuple(STRUCTURE_NAMES.index(n) for n in ("tibia", "fibula", "tibial_component"))

if TYPE_CHECKING:
    from collections.abc import Callable

    import torch

    from orthoseg.training.loss import SegmentationLoss


class LoopConfig(BaseModel):
    """Everything a worker needs besides its data (Ray's ``train_loop_config``, as JSON).

    Attributes:
        train: training hyper-parameters.
        network: the architecture.
        augment: the augmentation applied to every training batch.
        structures_present: per structure, whether any validation mask contains it (only those count
            in the validation Dice mean).
        train_images: images in the training split (for the per-step learning-rate schedule).
        val_images: images in the validation split (0: no validation, the last epoch is kept).
    """

    model_config = ConfigDict(extra="forbid")

    train: TrainConfig
    network: NetworkConfig
    augment: AugmentConfig
    structures_present: tuple[bool, ...]
    train_images: int
    val_images: int

    def steps_per_epoch(self, world_size: int) -> int:
        """Optimiser steps each worker takes per epoch (Ray Data gives every worker an equal share)."""
        per_worker = max(1, self.train_images // world_size)
        return max(1, math.ceil(per_worker / self.train.batch_size))


def _augmenting_collate(
    transforms: Callable[[dict], dict] | None, seed: int, shaft_window_probability: float = 0.0
) -> Any:
    """A Ray Data collate function that turns a numpy batch into augmented (images, masks) tensors on the
    worker, in Ray's batch-prefetching thread (so augmentation overlaps the previous step). With
    augmentation, each training strip's window is cut at a random height (``seed`` starts that stream),
    and with ``shaft_window_probability`` on one side of the knee joint only."""
    from ray.data.collate_fn import NumpyBatchCollateFn

    rng = np.random.default_rng(seed) if transforms is not None else None

    # Ray may collate several batches at once on prefetch threads, and a MONAI random transform keeps its
    # drawn parameters between ``randomize`` and its use: one transform chain, one batch at a time.
    lock = threading.Lock()

    class AugmentingCollate(NumpyBatchCollateFn):
        # Ray annotates the return with an unbound TypeVar (CollatedData), which no concrete type matches.
        def __call__(self, batch: dict[str, np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
            return _collate(batch, transforms, lock, rng, shaft_window_probability)

    return AugmentingCollate()


def _windows(
    batch: dict[str, np.ndarray], rng: np.random.Generator | None, shaft_window_probability: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """The square training windows of a batch of strips (``canvas_cache``): random heights with ``rng``
    (one side of the knee joint only with ``shaft_window_probability``), the anatomy-centred window
    without."""
    from orthoseg.preprocessing import cut_shaft_window, cut_training_window

    images, masks = batch["image"], batch["masks"]
    side = images.shape[-1]
    if images.shape[-2] == side:
        return images, masks
    valid_rows = batch.get("valid_rows")
    cut = []
    for row, (image, mask) in enumerate(zip(images, masks, strict=True)):
        film_rows = valid_rows[row] if valid_rows is not None else (0, image.shape[-2])
        window = None
        if rng is not None and shaft_window_probability > 0 and rng.random() < shaft_window_probability:
            window = cut_shaft_window(image, mask, film_rows, side, rng, _FEMORAL_SIDE, _TIBIAL_SIDE)
        cut.append(window or cut_training_window(image, mask, film_rows, side, rng))
    return np.stack([c[0] for c in cut]), np.stack([c[1] for c in cut])


def _collate(
    batch: dict[str, np.ndarray],
    transforms: Callable[[dict], dict] | None,
    lock: threading.Lock,
    rng: np.random.Generator | None = None,
    shaft_window_probability: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    from orthoseg.augment import augment_batch

    with lock:  # the window heights and the transforms draw from streams shared by prefetch threads
        image_windows, mask_windows = _windows(batch, rng, shaft_window_probability)
        images = torch.from_numpy(np.ascontiguousarray(image_windows, dtype=np.float32))
        masks = torch.from_numpy(np.ascontiguousarray(mask_windows))
        if transforms is None:
            return images, masks.float()
        return augment_batch(images, masks, transforms)


def _owned_by(uid: str, rank: int, world_size: int) -> bool:
    """Whether this worker scores the validation image ``uid`` (a stable hash, the same on every node)."""
    return zlib.crc32(uid.encode()) % world_size == rank


def _all_reduce_sum(values: torch.Tensor, world_size: int) -> torch.Tensor:
    import torch.distributed as dist

    if world_size > 1:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def restore_state(network: torch.nn.Module, init_weights: Any = None) -> TrainState:
    """The state of the latest checkpoint of this run (weights loaded into ``network``), or a fresh one.

    A fresh run starts from ``init_weights`` (safetensors bytes, or a Ray object reference to them: a warm
    start, ``orthoseg.training.warm_start``) when given; a resumed run ignores them and continues.
    """
    import ray
    import ray.train

    from orthoseg.training.warm_start import apply_initial_weights

    checkpoint = ray.train.get_checkpoint()  # Ray: latest checkpoint of this run name (None when fresh)
    if checkpoint is None:
        if isinstance(init_weights, ray.ObjectRef):
            init_weights = ray.get(init_weights)  # Ray: the driver's warm-start weights (object store)
        apply_initial_weights(network, init_weights)
        return TrainState(best_weights={k: v.detach().clone() for k, v in network.state_dict().items()})
    with checkpoint.as_directory() as directory:
        return read_checkpoint(Path(directory), network)


def train_one_epoch(
    model: torch.nn.Module,
    batches: Any,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    loss_function: SegmentationLoss,
    learning_rate: Callable[[int], float],
    device: torch.device,
    amp: torch.dtype | None,
    channels_last: bool,
) -> tuple[float, int, float]:
    """One pass over this worker's share of the training split.

    Returns:
        (sum of the loss over images, images seen, seconds spent waiting for batches).
    """
    import torch

    from orthoseg.model import forward_logits

    model.train()
    loss_sum, seen, waiting = 0.0, 0, 0.0
    iterator = iter(batches)
    step = 0
    while True:
        waited = time.perf_counter()
        try:
            images, masks = next(iterator)
        except StopIteration:
            break
        waiting += time.perf_counter() - waited
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step)
        images, targets = images.to(device, non_blocking=True), masks.to(device, non_blocking=True)
        if channels_last and device.type == "cuda":
            images = images.contiguous(memory_format=torch.channels_last)
        logits = forward_logits(model, images, amp)
        loss = loss_function(logits, targets)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        loss_sum += float(loss.detach()) * images.shape[0]
        seen += images.shape[0]
        step += 1
    return loss_sum, seen, waiting


def validate(
    network: torch.nn.Module,
    batches: Any,
    rank: int,
    world_size: int,
    device: torch.device,
    amp: torch.dtype | None,
) -> torch.Tensor:
    """Dice per structure summed over this worker's validation images, and their count, as (C + 1,).

    Per-image Dice as ``orthoseg.evaluation.dice_per_image`` (absent from both counts 1.0), on the canvas.
    """
    import torch

    from orthoseg.evaluation import dice_per_image
    from orthoseg.model import forward_logits

    network.eval()
    sums = torch.zeros(len(STRUCTURE_NAMES) + 1, dtype=torch.float64)
    with torch.inference_mode():
        for batch in batches:
            owned = np.array([_owned_by(str(uid), rank, world_size) for uid in batch["uid"]], dtype=bool)
            if not owned.any():
                continue
            image_windows, mask_windows = _windows(batch, None)
            images = torch.from_numpy(np.ascontiguousarray(image_windows[owned], dtype=np.float32))
            truth = torch.from_numpy(np.ascontiguousarray(mask_windows[owned])).to(device)
            logits = forward_logits(network, images.to(device), amp)
            scores = dice_per_image(torch.sigmoid(logits) >= 0.5, truth).double().cpu()
            sums[:-1] += scores.sum(dim=0)
            sums[-1] += scores.shape[0]
    return sums


def summarise_epoch(
    totals: torch.Tensor, present: np.ndarray, learning_rate: float, seconds: float
) -> dict[str, float]:
    """Metrics of one epoch from the all-reduced sums (loss sum, images, Dice sums, val images)."""
    loss_total, dice_total = totals[:2], totals[2:]
    metrics: dict[str, float] = {
        "train_loss": float(loss_total[0] / loss_total[1].clamp(min=1.0)),
        "lr": learning_rate,
        "epoch_seconds": seconds,
    }
    if dice_total[-1] > 0:
        per_structure = (dice_total[:-1] / dice_total[-1]).numpy()
        for c, name in enumerate(STRUCTURE_NAMES):
            metrics[f"val_dice_{name}"] = float(per_structure[c])
        if present.any():
            metrics["val_dice_mean"] = float(per_structure[present].mean())
    return metrics


def record_epoch(state: TrainState, network: torch.nn.Module, metrics: dict[str, float]) -> None:
    """Append the epoch to the history; keep its weights when its validation Dice is the best so far."""
    state.epoch += 1
    state.history.append({"epoch": state.epoch, **metrics})
    val_mean = metrics.get("val_dice_mean")
    best = state.best_val_dice_mean
    if val_mean is None or best is None or val_mean >= best:
        state.best_epoch, state.best_val_dice_mean = state.epoch, val_mean
        state.best_weights = {k: v.detach().to("cpu").clone() for k, v in network.state_dict().items()}


def report_epoch(
    state: TrainState,
    metrics: dict[str, float],
    checkpoint_due: bool,
    rank: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
) -> None:
    """Report the epoch to Ray Train, with a checkpoint from rank 0 when one is due (a barrier)."""
    import ray.train

    report = {"epoch": state.epoch, **metrics}
    if not checkpoint_due:
        ray.train.report(report)  # Ray: metrics only, same barrier
        return
    with tempfile.TemporaryDirectory(prefix="orthoseg-ckpt-") as tmp:
        saved = None
        if rank == 0:
            write_checkpoint(Path(tmp), model, state, optimizer, scaler)
            saved = ray.train.Checkpoint.from_directory(tmp)
        # Ray: persist rank 0's checkpoint under the run's storage path (a barrier for all ranks).
        ray.train.report(report, checkpoint=saved, checkpoint_dir_name=f"epoch_{state.epoch:04d}")


def train_loop_per_worker(config: dict[str, Any]) -> dict[str, Any]:
    """One Ray Train worker: restore, then train, validate, summarise and checkpoint each epoch.

    Args:
        config: ``loop`` (``LoopConfig`` as JSON), ``progress_queue`` (a ``ray.util.queue.Queue`` or
            None) that rank 0 feeds one message per finished epoch, and ``init_weights`` (None, or a
            Ray object reference to safetensors bytes that a fresh run starts from).

    Returns:
        From rank 0 (the value Ray hands back to the driver): the per-epoch ``history``, the epoch this
        attempt ``started_at``, ``best_epoch`` and ``best_val_dice_mean``.
    """
    import ray.train
    import ray.train.torch
    import torch

    from orthoseg.augment import build_train_transforms
    from orthoseg.model import autocast_dtype, build_network_from_config, prepare_for_device
    from orthoseg.model_package import unwrap_network
    from orthoseg.training.loss import SegmentationLoss

    loop = LoopConfig.model_validate(config["loop"])
    train_config = loop.train
    context = ray.train.get_context()  # Ray: this worker's place in the group
    rank, world_size = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()  # Ray: the GPU Ray assigned to this worker, or the CPU
    if device.type == "cpu":
        torch.set_num_threads(max(1, int(train_config.cpus_per_worker)))
    torch.manual_seed(train_config.seed)

    network = build_network_from_config(loop.network)
    state = restore_state(network, config.get("init_weights"))
    started_at = state.epoch
    network = prepare_for_device(network, device, train_config.channels_last)
    model = ray.train.torch.prepare_model(network, move_to_device=False)  # Ray: DDP when world_size > 1
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=train_config.learning_rate, weight_decay=train_config.weight_decay
    )
    amp = autocast_dtype(device, train_config.mixed_precision)
    scaler = torch.amp.GradScaler("cuda", enabled=amp == torch.float16)
    if state.optimizer is not None:
        optimizer.load_state_dict(state.optimizer["optimizer"])
        scaler.load_state_dict(state.optimizer["scaler"])

    train_shard = ray.train.get_dataset_shard("train")  # Ray: this worker's share of the stream
    # Ray: the whole validation split on every worker (not split; each scores the UIDs it owns).
    val_data = ray.train.get_dataset_shard("val") if loop.val_images else None
    transforms = build_train_transforms(loop.augment) if loop.augment.enabled else None
    collate = _augmenting_collate(
        transforms, train_config.seed + 7919 * rank, train_config.shaft_window_probability
    )
    loss_function = SegmentationLoss(train_config)
    steps = loop.steps_per_epoch(world_size)
    present = np.asarray(loop.structures_present, dtype=bool)

    for epoch in range(state.epoch, train_config.epochs):
        started = time.perf_counter()
        if transforms is not None:  # the previous epoch's batches are all collated by now
            transforms.set_random_state(seed=train_config.seed + 1009 * epoch + rank)

        def rate(step: int, epoch: int = epoch) -> float:
            return learning_rate_at(
                epoch + min(step, steps) / steps,
                train_config.learning_rate,
                train_config.epochs,
                train_config.warmup_epochs,
                train_config.min_learning_rate_ratio,
            )

        batches = train_shard.iter_torch_batches(
            batch_size=train_config.batch_size,
            collate_fn=collate,
            local_shuffle_buffer_size=train_config.shuffle_buffer_images,
            local_shuffle_seed=train_config.seed + epoch,
            prefetch_batches=2,
        )
        loss_sum, seen, waiting = train_one_epoch(
            model, batches, optimizer, scaler, loss_function, rate, device, amp, train_config.channels_last
        )
        training_seconds = time.perf_counter() - started
        dice_sums = torch.zeros(len(STRUCTURE_NAMES) + 1, dtype=torch.float64)
        if val_data is not None:
            val_batches = val_data.iter_batches(batch_size=train_config.batch_size, batch_format="numpy")
            dice_sums = validate(unwrap_network(model), val_batches, rank, world_size, device, amp)
        totals = _all_reduce_sum(
            torch.cat([torch.tensor([loss_sum, seen], dtype=torch.float64), dice_sums]), world_size
        )
        metrics = summarise_epoch(totals, present, rate(0), time.perf_counter() - started)
        # Rank 0's view of where the epoch went: images/s of the training pass, time waiting for data.
        metrics["train_images_per_second"] = float(totals[1]) / max(training_seconds, 1e-9)
        metrics["data_wait_seconds"] = waiting
        metrics["validation_seconds"] = time.perf_counter() - started - training_seconds
        record_epoch(state, unwrap_network(model), metrics)
        due = state.epoch % train_config.checkpoint_every_epochs == 0 or state.epoch == train_config.epochs
        report_epoch(state, metrics, due, rank, model, optimizer, scaler)
        if rank == 0 and config.get("progress_queue") is not None:
            config["progress_queue"].put({"epoch": state.epoch, "metrics": metrics})  # Ray: live progress
    return {
        "history": state.history,
        "started_at": started_at,
        "best_epoch": state.best_epoch,
        "best_val_dice_mean": state.best_val_dice_mean,
    }
