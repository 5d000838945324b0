"""Archive inference throughput and memory: the real Ray Data path against a plain sequential loop.

In one run, on the same simulated films and the same (freshly initialised) model, for each archive size
of ``--sizes``:

- ``real``: ``orthoseg.inference.run_inference`` end to end (Ray Data, ``--concurrency`` actors of one CPU
  each, SEG, overlay, thumbnail, row per film, then measurements.parquet, summary and report), with Ray
  already started (its start-up is reported once, apart); images/s = films / wall time of the call;
- ``sequential``: the same steps one film at a time in this process, no Ray: read, preprocess, predict,
  write (``InferenceWorker.__call__`` on a one-film batch: the very code an actor runs per film; torch
  on all the run's CPU threads), then the same run outputs (``write_run_outputs``);
- peak resident memory (RSS, sampled from /proc every 0.1 s during the real call) of the driver and of
  the Ray worker processes (``ray::*`` below this process; shared pages such as the object store's are
  counted in each process that touched them); the driver's also while results stream in and while it
  writes the run outputs (parquet, summary, report), apart.

Once: the bare forward pass of the network on in-memory canvases of the films' canvas shape (no I/O,
no preprocessing, no post-processing, all threads), per forward pass and per film with the run's
test-time augmentation passes; end-to-end / bare says what the rest of the path costs.

Prints one JSON object with the ratio the issue sets a target for (real / sequential >= 1.7 on 2 CPU
cores; the issue's real-machine sizes are e.g. ``--sizes 200,2000``)::

    .venv/bin/python benchmarks/infer.py [--sizes 20,80] [--image-px 512] [--cpus 2]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger("benchmarks.infer")
BATCH = "bench-infer"


# ----------------------------------------------------------------------------- memory (Linux /proc)


def _rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _ray_workers(root: int) -> list[int]:
    """Ray worker processes (command line ``ray::...``) anywhere below ``root``."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    below: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - below
        below |= frontier
    workers = []
    for pid in below:
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::"):
                workers.append(pid)
        except OSError:
            continue
    return workers


class MemorySampler:
    """Peak RSS of this process and of its Ray workers while the ``with`` block runs.

    The driver's peak is also kept apart for the time before and after ``mark_outputs`` (called when
    the last result has streamed in: what follows is writing the run's parquet, summary and report).
    """

    def __init__(self, interval_s: float = 0.1) -> None:
        self.interval_s = interval_s
        self.driver_peak = 0.0
        self.driver_peak_streaming = 0.0
        self.driver_peak_outputs = 0.0
        self.workers_total_peak = 0.0
        self.worker_peak = 0.0
        self._outputs = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def mark_outputs(self) -> None:
        """From now on the driver writes the run outputs."""
        self._sample()
        self._outputs.set()

    def _sample(self) -> None:
        driver = _rss_mib(os.getpid())
        self.driver_peak = max(self.driver_peak, driver)
        if self._outputs.is_set():
            self.driver_peak_outputs = max(self.driver_peak_outputs, driver)
        else:
            self.driver_peak_streaming = max(self.driver_peak_streaming, driver)
        sizes = [_rss_mib(pid) for pid in _ray_workers(os.getpid())]
        self.workers_total_peak = max(self.workers_total_peak, sum(sizes))
        self.worker_peak = max([self.worker_peak, *sizes])

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval_s)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


# ----------------------------------------------------------------------------- the measurements


def prepare_archive(settings: Any, count: int, image_px: int, seed: int) -> list[str]:
    """Simulate ``count`` AP films into incoming/<BATCH>/images; returns their keys, sorted."""
    from orthoseg.storage import store_from_settings
    from orthoseg.synth import SynthConfig, generate_dataset

    store = store_from_settings(settings)
    config = SynthConfig(count=count, seed=seed, batch=BATCH, image_px=image_px, views=("AP",), workers=2)
    generate_dataset(store, config)
    return sorted(store.list_keys(f"incoming/{BATCH}/images"))


def archive_of(settings: Any, keys: list[str], size: int) -> str:
    """A store prefix holding the first ``size`` films (its own source, so its own run)."""
    from orthoseg.storage import store_from_settings

    store = store_from_settings(settings)
    prefix = f"archives/{size}"
    for key in keys[:size]:
        store.put_bytes(f"{prefix}/images/{key.rsplit('/', 1)[1]}", store.get_bytes(key))
    return prefix


def real_rate(settings: Any, source: str, model_dir: Path, config: Any, size: int) -> dict[str, Any]:
    """``run_inference`` end to end; images/s, per-film seconds from its rows, peak memory."""
    from orthoseg.inference import run_inference
    from orthoseg.parquet import frame_from_parquet_bytes
    from orthoseg.storage import store_from_settings

    before = _rss_mib(os.getpid())
    with MemorySampler() as memory:

        def progress(done: int, total: int) -> None:
            if done >= total:
                memory.mark_outputs()

        started = time.perf_counter()
        summary = run_inference(
            settings, source, str(model_dir), run_id=f"real-{size}", config=config, progress=progress
        )
        wall = time.perf_counter() - started
    if summary.images_failed or summary.images_inferred != size:
        raise RuntimeError(f"real run: {summary.images_inferred} inferred, failures {summary.failures}")
    frame = frame_from_parquet_bytes(store_from_settings(settings).get_bytes(summary.measurements_key))
    frame = frame.drop_duplicates("image_key")
    return {
        "images": size,
        "seconds": round(wall, 2),
        "images_per_second": round(size / wall, 3),
        "image_seconds_median": round(float(frame["image_seconds"].median()), 3),
        "forward_share_seconds_median": round(float(frame["forward_share_seconds"].median()), 3),
        "image_seconds_sum_per_actor": round(float(frame["image_seconds"].sum()) / config.concurrency, 2),
        "driver_rss_before_mib": round(before, 1),
        "driver_rss_peak_mib": round(memory.driver_peak, 1),
        "driver_rss_peak_streaming_mib": round(memory.driver_peak_streaming, 1),
        "driver_rss_peak_writing_outputs_mib": round(memory.driver_peak_outputs, 1),
        "workers_rss_peak_total_mib": round(memory.workers_total_peak, 1),
        "worker_rss_peak_max_mib": round(memory.worker_peak, 1),
    }


def sequential_rate(
    settings: Any, source: str, model_dir: Path, config: Any, size: int, threads: int
) -> dict[str, Any]:
    """One film at a time in this process with the project's per-film code, then the run outputs."""
    import torch

    from orthoseg.inference import (
        InferenceSummary,
        InferenceWorker,
        load_model,
        model_files,
        resolve_source,
    )
    from orthoseg.inference_outputs import write_run_outputs
    from orthoseg.storage import join_key, store_from_settings

    started = time.perf_counter()
    resolved = resolve_source(settings, source)
    model, name, version = load_model(settings, str(model_dir))
    prefix = join_key("predictions", version, f"sequential-{size}")
    worker = InferenceWorker(
        settings, resolved.store_uri, None, model_files(model), name, version, "sequential", prefix, config
    )
    torch.set_num_threads(threads)  # the worker set its actor's share; a plain loop uses every core
    rows = []
    for key in resolved.keys:
        out = worker({"image_key": np.asarray([key], dtype=object)})
        rows.append(json.loads(str(out["row_json"][0])))
    failed = [r for r in rows if r.get("status") != "ok"]
    if failed:
        raise RuntimeError(f"sequential run: {len(failed)} failed, first: {failed[0].get('reason')}")
    summary = InferenceSummary(
        model_name=name,
        model_version=version,
        run_id="sequential",
        source=source,
        images_total=len(rows),
        images_inferred=len(rows),
        images_skipped=0,
        images_failed=0,
        output_prefix=prefix,
        measurements_key=join_key(prefix, "measurements.parquet"),
        report_key=join_key(prefix, "report.html"),
        seconds=0.0,
    )
    write_run_outputs(store_from_settings(settings), summary, rows)
    wall = time.perf_counter() - started
    return {"images": size, "seconds": round(wall, 2), "images_per_second": round(size / wall, 3)}


def bare_forward(model_dir: Path, canvas_shape: tuple[int, int], batch: int, threads: int) -> dict[str, Any]:
    """Forward passes/s of the bare network on in-memory canvases (two warm-up batches first)."""
    import torch

    from orthoseg.model_package import SegmentationModel

    torch.set_num_threads(threads)
    network = SegmentationModel.from_directory(model_dir, device="cpu").network.eval()
    images = torch.rand((batch, 1, *canvas_shape), generator=torch.Generator().manual_seed(0))
    times = []
    with torch.inference_mode():
        for step in range(12):
            started = time.perf_counter()
            network(images)
            if step >= 2:
                times.append(time.perf_counter() - started)
    return {
        "canvas": list(canvas_shape),
        "batch": batch,
        "passes_per_second": batch / statistics.median(times),
    }


def canvas_shape(settings: Any, model_dir: Path, key: str) -> tuple[int, int]:
    from orthoseg.model_package import SegmentationModel
    from orthoseg.preprocessing import preprocess_radiograph
    from orthoseg.radiograph import read_radiograph
    from orthoseg.storage import store_from_settings

    preprocess = SegmentationModel.from_directory(model_dir, device="cpu").preprocess
    radiograph = read_radiograph(store_from_settings(settings).get_bytes(key))
    canvas, _ = preprocess_radiograph(radiograph.pixels, radiograph.pixel_spacing_mm, preprocess)
    return int(canvas.shape[-2]), int(canvas.shape[-1])


def save_model(settings: Any, directory: Path) -> Path:
    """A freshly initialised network of the profile (timing needs no training) as a model folder."""
    import torch

    from orthoseg.model import build_network_from_config
    from orthoseg.model_package import save_model_artifacts

    torch.manual_seed(0)
    network_config = settings.train.network_config()
    save_model_artifacts(
        directory, build_network_from_config(network_config), network_config, settings.preprocess
    )
    return directory


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="20,80", help="archive sizes (films), comma separated")
    parser.add_argument(
        "--profile", default="demo", help="network and preprocessing profile (orthoseg.profiles)"
    )
    parser.add_argument(
        "--image-px", type=int, default=512, help="simulated film size (1536-2048 is clinical)"
    )
    parser.add_argument("--cpus", type=int, default=2, help="Ray CPUs, actors and the loop's torch threads")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--tta-passes", type=int, default=4)
    parser.add_argument("--seed", type=int, default=41)
    args = parser.parse_args(argv)
    sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    import ray

    from orthoseg.inference import InferenceConfig
    from orthoseg.settings import Settings

    config = InferenceConfig(
        batch_size=args.batch_size, concurrency=args.cpus, num_cpus_per_actor=1.0, tta_passes=args.tta_passes
    )
    with tempfile.TemporaryDirectory(prefix="orthoseg-infer-bench-") as folder:
        root = Path(folder)
        settings = Settings(
            profile=args.profile,
            store=str(root / "store"),
            work_dir=str(root / "work"),
            mlflow_uri=f"sqlite:///{root / 'mlflow.db'}",
        )
        model_dir = save_model(settings, root / "model")
        generate_started = time.perf_counter()
        keys = prepare_archive(settings, max(sizes), args.image_px, args.seed)
        generate_s = time.perf_counter() - generate_started
        shape = canvas_shape(settings, model_dir, keys[0])
        bare = bare_forward(model_dir, shape, args.batch_size, args.cpus)
        ray_started = time.perf_counter()
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
        ray_start_s = time.perf_counter() - ray_started
        runs = []
        for size in sizes:
            source = archive_of(settings, keys, size)
            real = real_rate(settings, source, model_dir, config, size)
            sequential = sequential_rate(settings, source, model_dir, config, size, args.cpus)
            runs.append(
                {
                    "images": size,
                    "real": real,
                    "sequential": sequential,
                    "ratio_real_to_sequential": round(
                        real["images_per_second"] / sequential["images_per_second"], 3
                    ),
                    "ratio_real_to_bare_forward_with_tta": round(
                        real["images_per_second"] / (bare["passes_per_second"] / args.tta_passes), 4
                    ),
                }
            )
        ray.shutdown()

    report: dict[str, Any] = {
        "benchmark": "infer",
        "command": " ".join(["benchmarks/infer.py", *(argv if argv is not None else sys.argv[1:])]),
        "profile": args.profile,
        "image_px": args.image_px,
        "canvas": list(shape),
        "network": settings.train.network_config().model_dump(mode="json"),
        "model": "freshly initialised (masks are noise; measurement cost may differ from a trained model's)",
        "cpus": args.cpus,
        "config": {"batch_size": args.batch_size, "concurrency": args.cpus, "tta_passes": args.tta_passes},
        "generate_seconds": round(generate_s, 1),
        "ray_start_seconds": round(ray_start_s, 1),
        "bare_forward": {
            **{k: v for k, v in bare.items() if k != "passes_per_second"},
            "passes_per_second": round(bare["passes_per_second"], 2),
            "images_per_second_with_tta": round(bare["passes_per_second"] / args.tta_passes, 2),
        },
        "runs": runs,
        "driver_max_rss_lifetime_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
