"""What test-time augmentation confidence costs: seconds per film with one pass and with N passes.

Simulates ``--count`` films, then times ``orthoseg.confidence.predict_with_confidence`` (the model's
preprocessing, the passes, the clean-up, native masks) for 1 pass and for ``--passes`` passes with two
freshly initialised networks (timing needs no training): the demo model (``orthoseg.demo``'s settings:
96 px canvas at 3 mm, channels 8-16-32) and the default network at the default preprocessing (256 px
canvas at 1 mm, extended for large films; channels 16-32-64-128). Each film is predicted once before
timing (warm-up), then ``--repeats`` times; the median counts. Torch runs on ``--threads`` CPU threads.
For scale, the measurements of each film from its ground-truth masks (``measure_image``, which inference
runs after the prediction, besides reading, SEG and overlay) are timed too, and the ratio of prediction
plus measurement with N passes to that with one pass is reported.

Prints one JSON object. Usage:
``python benchmarks/confidence.py [--count 4] [--passes 4] [--image-px 1024] [--threads 1]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import numpy as np


def _films(count: int, seed: int, image_px: int) -> list[tuple[np.ndarray, tuple[float, float] | None, Any]]:
    """(presentation pixels, spacing in mm, the simulated case) per film."""
    from orthoseg.radiograph import pixel_spacing_mm, to_presentation
    from orthoseg.synth.case import generate_case
    from orthoseg.synth.config import SynthConfig

    config = SynthConfig(count=count, seed=seed, image_px=image_px, batch="confidence-benchmark")
    films = []
    for index in range(count):
        case = generate_case(index, config)
        films.append(
            (to_presentation(case.dataset, case.dataset.pixel_array), pixel_spacing_mm(case.dataset), case)
        )
    return films


def _measure_seconds_per_film(films: list) -> float:
    """Mean seconds of ``measure_image`` on each film's ground-truth masks (one warm-up call first)."""
    from orthoseg.measure import measure_image

    times = []
    for pixels, spacing, case in films:
        view = str(getattr(case.dataset, "ViewPosition", ""))
        measure_image(case.masks, spacing, view_position=view, pixels=pixels)
        started = time.perf_counter()
        measure_image(case.masks, spacing, view_position=view, pixels=pixels)
        times.append(time.perf_counter() - started)
    return float(np.mean(times))


def _model(channels: tuple[int, ...], preprocess: dict[str, Any]) -> Any:
    import torch

    from orthoseg.model import NetworkConfig, build_network_from_config
    from orthoseg.model_package import ModelConfig, SegmentationModel
    from orthoseg.settings import PreprocessConfig

    torch.manual_seed(0)
    network = NetworkConfig(channels=channels)
    config = ModelConfig(network=network, preprocess=PreprocessConfig(**preprocess))
    return SegmentationModel(build_network_from_config(network), config, device="cpu")


def _seconds_per_film(model: Any, films: list, passes: int, repeats: int) -> float:
    from orthoseg.confidence import predict_with_confidence

    medians = []
    for pixels, spacing, _ in films:
        predict_with_confidence(model, pixels, spacing, passes)
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            predict_with_confidence(model, pixels, spacing, passes)
            times.append(time.perf_counter() - started)
        medians.append(statistics.median(times))
    return float(np.mean(medians))


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=4, help="simulated films")
    parser.add_argument("--seed", type=int, default=515151, help="simulator seed")
    parser.add_argument("--image-px", type=int, default=1024, help="longest film side in pixels")
    parser.add_argument("--passes", type=int, default=4, help="passes to compare with one")
    parser.add_argument("--repeats", type=int, default=3, help="timed predictions per film")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    films = _films(args.count, args.seed, args.image_px)
    models = {
        "demo": _model((8, 16, 32), {"canvas_px": 96, "spacing_mm": 3.0}),
        "default": _model((16, 32, 64, 128), {}),
    }
    result: dict[str, Any] = {
        "films": args.count,
        "film_shapes": sorted({tuple(int(s) for s in p.shape) for p, _, _ in films}),
        "threads": args.threads,
        "passes": args.passes,
    }
    measure = _measure_seconds_per_film(films)
    result["measure_seconds_per_film"] = round(measure, 4)
    for name, model in models.items():
        one = _seconds_per_film(model, films, 1, args.repeats)
        many = _seconds_per_film(model, films, args.passes, args.repeats)
        result[name] = {
            "seconds_per_film_1_pass": round(one, 4),
            f"seconds_per_film_{args.passes}_passes": round(many, 4),
            "ratio": round(many / one, 2),
            "seconds_per_extra_pass": round((many - one) / max(1, args.passes - 1), 4),
            "ratio_with_measurement": round((many + measure) / (one + measure), 2),
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
