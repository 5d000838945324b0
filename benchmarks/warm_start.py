"""Warm start against from scratch: how fast retraining reaches the champion's validation Dice.

In one run, on synthetic films (``orthoseg.synth``, validated as the pipeline validates them):

- ``champion``: trained for ``--epochs`` on the first batch (``--count`` films);
- a second batch (``--new-count`` films) arrives; the new dataset version holds both batches;
- ``warm``: retrained on it from the champion's weights (``train.init_weights_uri``), for ``--max-epochs``;
- ``scratch``: retrained on it from random initialisation, same seed, schedule and epochs.

The target is the champion's validation Dice mean on the new dataset's validation split (the split both
retraining curves are measured on), computed as the training loop computes it. For each retraining the
report gives the first epoch whose validation Dice mean reaches the target and the training seconds
spent until then (the sum of ``epoch_seconds``; Ray start-up is in ``run_seconds``), and the ratios
scratch / warm. A run that never reaches the target within ``--max-epochs`` reports null.

Prints one JSON object::

    .venv/bin/python benchmarks/warm_start.py [--count 32] [--new-count 16] [--epochs 6] [--image-px 256]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger("benchmarks.warm_start")


def add_batch(settings: Any, batch: str, count: int, image_px: int, seed: int) -> str:
    """Synthesise and validate a training batch; returns the dataset version (it accumulates)."""
    from orthoseg.storage import store_from_settings
    from orthoseg.synth import SynthConfig, generate_dataset
    from orthoseg.validation import validate_batch

    store = store_from_settings(settings)
    generate_dataset(store, SynthConfig(count=count, seed=seed, batch=batch, image_px=image_px, workers=2))
    summary = validate_batch(settings, store.url(f"incoming/{batch}"), batch, "training")
    if not summary.dataset_version:
        raise RuntimeError(f"validation accepted no image of {batch}")
    return str(summary.dataset_version)


def model_val_dice(settings: Any, version: str, model_uri: str) -> float:
    """A logged model's validation Dice mean on ``version``'s val split, as the training loop scores it
    (threshold 0.5 on the canvas, per-image Dice, mean over the structures present in the split)."""
    import torch

    from orthoseg.dataset import load_split
    from orthoseg.metrics import dice_per_image
    from orthoseg.training.warm_start import load_init_model

    model = load_init_model(settings, model_uri)
    val = load_split(settings, version, "val")
    if not len(val.image):
        raise RuntimeError(f"{version} has no validation images")
    probabilities = model.predict_canvas(val.image)
    truth = torch.from_numpy(val.masks.astype(bool))
    scores = dice_per_image(torch.from_numpy(probabilities) >= 0.5, truth).double().numpy()
    present = val.masks.reshape(val.masks.shape[0], val.masks.shape[1], -1).any(axis=(0, 2))
    return float(scores.mean(axis=0)[present].mean()) if present.any() else float("nan")


def retrain_curve(settings: Any, version: str, init_uri: str | None, epochs: int, target: float) -> dict:
    """Train on ``version`` (from ``init_uri``'s weights, or from scratch); when it reaches ``target``."""
    from mlflow import MlflowClient

    from orthoseg.training import run_training

    train = settings.train.model_copy(update={"epochs": epochs, "init_weights_uri": init_uri})
    started = time.perf_counter()
    result = run_training(settings.model_copy(update={"train": train}), version)
    wall = time.perf_counter() - started
    client = MlflowClient(settings.mlflow_uri)

    def series(key: str) -> list[float]:
        return [m.value for m in sorted(client.get_metric_history(result.run_id, key), key=lambda m: m.step)]

    dice, seconds = series("val_dice_mean"), series("epoch_seconds")
    reached = next((epoch for epoch, value in enumerate(dice, start=1) if value >= target), None)
    return {
        "warm_start": result.warm_start,
        "images": result.images,
        "epochs_to_target": reached,
        "seconds_to_target": None if reached is None else round(sum(seconds[:reached]), 2),
        "val_dice_mean_per_epoch": [round(value, 4) for value in dice],
        "best_val_dice_mean": result.best_val_dice_mean,
        "epoch_seconds_median": round(sorted(seconds)[len(seconds) // 2], 2) if seconds else None,
        "run_seconds": round(wall, 1),
    }


def _ratio(scratch: float | None, warm: float | None) -> float | None:
    return None if scratch is None or not warm else round(scratch / warm, 3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=32, help="films the champion is trained on")
    parser.add_argument("--new-count", type=int, default=16, help="films that arrive before retraining")
    parser.add_argument("--epochs", type=int, default=6, help="epochs of the champion")
    parser.add_argument("--max-epochs", type=int, default=None, help="epochs of each retraining (--epochs)")
    parser.add_argument("--image-px", type=int, default=256, help="synthetic film size")
    parser.add_argument("--canvas-px", type=int, default=96, help="training canvas (multiple of 32)")
    parser.add_argument("--channels", default="8,16,32,64", help="network channels per level")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--workers", type=int, default=1, help="Ray Train workers (one CPU each)")
    parser.add_argument("--seed", type=int, default=41)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    max_epochs = args.max_epochs or args.epochs

    import ray

    from orthoseg.settings import Settings

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="orthoseg-warm-bench-") as folder:
        root = Path(folder)
        settings = Settings(
            store=str(root / "store"),
            work_dir=str(root / "work"),
            mlflow_uri=f"sqlite:///{root / 'mlflow.db'}",
            experiment_name="bench-warm-start",
            # The simulator's default field is ~205 mm: keep it whole on the canvas.
            preprocess={"canvas_px": args.canvas_px, "spacing_mm": round(204.8 / args.canvas_px, 4)},
            train={
                "epochs": args.epochs,
                "batch_size": args.batch_size,
                "network_channels": tuple(int(c) for c in args.channels.split(",")),
                "num_workers": args.workers,
                "cpus_per_worker": 1.0,
                "window_context_rows": 0,
                "seed": args.seed,
            },
        )
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        first = add_batch(settings, "bench-first", args.count, args.image_px, args.seed)
        from orthoseg.training import run_training

        champion = run_training(settings, first)
        grown = add_batch(settings, "bench-new", args.new_count, args.image_px, args.seed + 1)
        target = model_val_dice(settings, grown, champion.model_uri)
        warm = retrain_curve(settings, grown, champion.model_uri, max_epochs, target)
        scratch = retrain_curve(settings, grown, None, max_epochs, target)
        ray.shutdown()

    retrain_images = warm.pop("images")  # the same dataset version for both
    scratch.pop("images")
    report: dict[str, Any] = {
        "benchmark": "warm_start",
        "command": " ".join(["benchmarks/warm_start.py", *(argv if argv is not None else sys.argv[1:])]),
        "canvas_px": settings.preprocess.canvas_px,
        "network": settings.train.network_config().model_dump(mode="json"),
        "images": {"champion": champion.images, "retrain": retrain_images},
        "champion": {
            "epochs": args.epochs,
            "best_val_dice_mean_own_split": champion.best_val_dice_mean,
            "seconds": champion.seconds,
        },
        "target_val_dice_mean": round(target, 4),
        "retrain_epochs": max_epochs,
        "warm": warm,
        "scratch": scratch,
        "ratio_epochs_scratch_to_warm": _ratio(scratch["epochs_to_target"], warm["epochs_to_target"]),
        "ratio_seconds_scratch_to_warm": _ratio(scratch["seconds_to_target"], warm["seconds_to_target"]),
        # Scratch never got there: it would need more than max_epochs, so the epoch ratio exceeds this.
        "ratio_epochs_lower_bound": _ratio(max_epochs + 1, warm["epochs_to_target"])
        if scratch["epochs_to_target"] is None
        else None,
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
