"""Training throughput: the real Ray Train path against the bare model step, and 2 workers against 1.

In one run, on the same data and network (a training profile, ``demo`` by default):

- ``bare``: forward + backward + AdamW step on in-memory tensors in this process, no data loading, no
  augmentation, no Ray, with all the run's CPU threads (and with one thread, a single worker's share);
- ``real``: ``orthoseg.training.run_training`` end to end (Ray Data shards from the store, augmentation
  on the worker, DDP over gloo, validation, checkpoints, MLflow), with 1 and with 2 workers of one CPU
  each; images/s is the steady state (epochs after the first) of the training pass;
- ``real_no_augment``: the same with augmentation off, to separate the data path from augmentation.

Prints one JSON object with the ratios the issue sets targets for (real / bare >= 0.9, 2 workers / 1
worker >= 1.5 on CPU)::

    .venv/bin/python benchmarks/train.py [--profile demo] [--images 96] [--epochs 3]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger("benchmarks.train")


def bare_step_rate(settings: Any, threads: int, steps: int = 12) -> float:
    """Images/s of the bare training step on in-memory tensors (first two steps are warm-up)."""
    import torch

    from orthoseg.model import autocast_dtype, build_network_from_config, forward_logits
    from orthoseg.training.loss import SegmentationLoss

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        device = torch.device("cuda" if settings.train.use_gpu and torch.cuda.is_available() else "cpu")
        network = build_network_from_config(settings.train.network_config()).to(device).train()
        optimizer = torch.optim.AdamW(network.parameters(), lr=1e-3)
        loss_function = SegmentationLoss(settings.train)
        side, batch = settings.preprocess.canvas_px, settings.train.batch_size
        generator = torch.Generator().manual_seed(0)
        images = torch.rand((batch, 1, side, side), generator=generator).to(device)
        masks = (torch.rand((batch, 7, side, side), generator=generator) > 0.7).float().to(device)
        amp = autocast_dtype(device, settings.train.mixed_precision)
        for step in range(steps + 2):
            if step == 2:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                started = time.perf_counter()
            loss = loss_function(forward_logits(network, images, amp), masks)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return batch * steps / (time.perf_counter() - started)
    finally:
        torch.set_num_threads(previous)


def real_rate(settings: Any, version: str, workers: int, augment: bool, epochs: int) -> dict[str, Any]:
    """Run the real training path; images/s of the training pass after the first epoch."""
    from mlflow import MlflowClient

    from orthoseg.training import run_training

    train = settings.train.model_copy(
        update={"num_workers": workers, "cpus_per_worker": 1.0, "epochs": epochs, "seed": 100 + workers}
    )
    augment_config = settings.augment.model_copy(update={"enabled": augment})
    run_settings = settings.model_copy(update={"train": train, "augment": augment_config})
    started = time.perf_counter()
    result = run_training(run_settings, version)
    wall = time.perf_counter() - started
    client = MlflowClient(settings.mlflow_uri)

    def series(key: str) -> list[float]:
        history = sorted(client.get_metric_history(result.run_id, key), key=lambda m: m.step)
        return [m.value for m in history]

    rates = series("train_images_per_second")[1:] or series("train_images_per_second")
    epoch_seconds = series("epoch_seconds")[1:] or series("epoch_seconds")
    waits = series("data_wait_seconds")[1:] or series("data_wait_seconds")
    return {
        "workers": workers,
        "augment": augment,
        "images_per_second": round(statistics.median(rates), 3),
        "epoch_seconds": round(statistics.median(epoch_seconds), 2),
        "data_wait_seconds_rank0": round(statistics.median(waits), 2),
        "train_images": result.images["train"],
        "run_seconds": round(wall, 1),
    }


def prepare_dataset(settings: Any, images: int, image_px: int, seed: int) -> str:
    """Synthesise and validate a training batch; returns the dataset version."""
    from orthoseg.storage import store_from_settings
    from orthoseg.synth import SynthConfig, generate_dataset
    from orthoseg.validation import validate_batch

    store = store_from_settings(settings)
    config = SynthConfig(count=images, seed=seed, batch="bench-train", image_px=image_px, workers=2)
    generate_dataset(store, config)
    summary = validate_batch(settings, store.url("incoming/bench-train"), "bench-train", "training")
    if not summary.dataset_version:
        raise RuntimeError("validation accepted no image")
    return str(summary.dataset_version)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="demo", help="training profile (orthoseg.profiles)")
    parser.add_argument("--images", type=int, default=96, help="synthetic radiographs to train on")
    parser.add_argument("--image-px", type=int, default=1024)
    parser.add_argument("--epochs", type=int, default=3, help="epochs per real run (the first is skipped)")
    parser.add_argument("--seed", type=int, default=31)
    parser.add_argument("--skip-no-augment", action="store_true", help="skip the runs without augmentation")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    import ray

    from orthoseg.settings import Settings

    with tempfile.TemporaryDirectory(prefix="orthoseg-train-bench-") as folder:
        root = Path(folder)
        settings = Settings(
            profile=args.profile,
            store=str(root / "store"),
            work_dir=str(root / "work"),
            mlflow_uri=f"sqlite:///{root / 'mlflow.db'}",
            experiment_name="bench",
        )
        cpus = 2
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
        version = prepare_dataset(settings, args.images, args.image_px, args.seed)
        bare = {
            "images_per_second_all_threads": round(bare_step_rate(settings, threads=cpus), 3),
            "images_per_second_one_thread": round(bare_step_rate(settings, threads=1), 3),
            "threads": cpus,
        }
        real = [real_rate(settings, version, workers, True, args.epochs) for workers in (1, 2)]
        plain = []
        if not args.skip_no_augment:
            plain = [real_rate(settings, version, workers, False, args.epochs) for workers in (1, 2)]
        ray.shutdown()

    two = real[1]["images_per_second"]
    report: dict[str, Any] = {
        "benchmark": "train",
        "command": " ".join(["benchmarks/train.py", *(argv if argv is not None else sys.argv[1:])]),
        "profile": args.profile,
        "canvas_px": settings.preprocess.canvas_px,
        "network": settings.train.network_config().model_dump(mode="json"),
        "batch_size": settings.train.batch_size,
        "images": args.images,
        "bare": bare,
        "real": real,
        "real_no_augment": plain,
        "ratio_real_2_workers_to_bare_all_threads": round(two / bare["images_per_second_all_threads"], 3),
        "ratio_2_workers_to_1_worker": round(two / real[0]["images_per_second"], 3),
    }
    if plain:
        report["ratio_real_no_augment_2_workers_to_bare_all_threads"] = round(
            plain[1]["images_per_second"] / bare["images_per_second_all_threads"], 3
        )
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
