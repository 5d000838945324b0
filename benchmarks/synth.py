"""Throughput of the knee radiograph simulator: images per second on 1 and 2 worker processes.

Writes complete cases (DICOM DX, DICOM SEG, truth JSON) to a temporary local store, as
``orthoseg.synth.generate_dataset`` does in production, and prints one JSON object:

    .venv/bin/python benchmarks/synth.py [--count 60] [--image-px N] [--workers 1 2] [--views AP LAT]

The issue's target is 1,000 default-size AP/lateral images in under 2 minutes on a 2-core machine
(~8.5 images/s with 2 workers).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time

from orthoseg.storage import LocalStore
from orthoseg.synth import SynthConfig, generate_dataset

logger = logging.getLogger("benchmarks.synth")


def measure(
    count: int, image_px: int | None, workers: int, seed: int, views: tuple[str, ...]
) -> dict[str, float]:
    """Generate ``count`` cases with ``workers`` processes into a fresh store; return timing figures."""
    overrides: dict[str, object] = {"views": views}
    if image_px:
        overrides["image_px"] = image_px
    config = SynthConfig(count=count, seed=seed, batch=f"bench-w{workers}", workers=workers, **overrides)
    with tempfile.TemporaryDirectory(prefix="orthoseg-synth-bench-") as folder:
        store = LocalStore(folder)
        started = time.perf_counter()
        summary = generate_dataset(store, config)
        seconds = time.perf_counter() - started
        size_bytes = sum(info.size_bytes for info in store.list_info("incoming"))
    return {
        "workers": workers,
        "images": summary.images,
        "seconds": round(seconds, 3),
        "images_per_second": round(summary.images / seconds, 3),
        "megabytes_written": round(size_bytes / 1e6, 1),
        "image_px": config.image_px,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=60, help="images per measurement")
    parser.add_argument(
        "--image-px", type=int, default=None, help="nominal longest side (default: config default)"
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--views", nargs="+", choices=["AP", "LAT"], default=["AP", "LAT"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    # Warm up (imports, texture tiles) so that the first measurement is not penalised.
    views = tuple(args.views)
    measure(4, args.image_px, 1, args.seed + 1, views)
    runs = {str(w): measure(args.count, args.image_px, w, args.seed, views) for w in args.workers}
    result: dict[str, object] = {
        "benchmark": "orthoseg.synth.generate_dataset",
        "cpu_count": os.cpu_count(),
        "image_px": next(iter(runs.values()))["image_px"],
        "count": args.count,
        "views": list(views),
        "images_per_second": {w: r["images_per_second"] for w, r in runs.items()},
        "runs": runs,
    }
    if "1" in runs and "2" in runs:
        result["speedup_2_vs_1"] = round(runs["2"]["images_per_second"] / runs["1"]["images_per_second"], 3)
    best = max(r["images_per_second"] for r in runs.values())
    result["seconds_per_1000_images"] = round(1000.0 / best, 1)
    result["target_images_per_second"] = round(1000.0 / 120.0, 2)
    sys.stdout.write(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
