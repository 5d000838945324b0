"""The Dice a perfect network could reach at a canvas spacing: the resolution ceiling of each structure.

Takes the exact ground-truth masks of held-out simulated films to the network's canvas (the training
path: ``masks_to_canvas``), brings them back to the native grid as inference does (``restore_to_native``,
bilinear, threshold 0.5), and scores them against the originals on the native grid. A structure whose
model Dice is far below its ceiling is limited by learning, not by the canvas; one near its ceiling needs
a finer canvas.

Prints one JSON object: per spacing, the mean Dice per structure (over films that have it) and the
mean over structures. Usage:
``python benchmarks/canvas_ceiling.py --json [--count 30] [--seed 424242] [--spacings 0.8,0.6,0.4]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

CATEGORIES = ("native", "uka_medial", "uka_lateral", "tka", "revision_tka")


def dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two boolean masks (1.0 when both are empty)."""
    total = int(prediction.sum()) + int(truth.sum())
    return 1.0 if total == 0 else 2.0 * float((prediction & truth).sum()) / total


def ceilings(count: int, seed: int, spacings: list[float]) -> dict[str, dict[str, float]]:
    """Mean round-trip Dice per structure at each canvas spacing (mm), over ``count`` simulated films."""
    from orthoseg.console import progress_bar
    from orthoseg.labels import STRUCTURE_NAMES
    from orthoseg.preprocessing import masks_to_canvas, plan_canvas, restore_to_native
    from orthoseg.radiograph import pixel_spacing_mm
    from orthoseg.settings import PreprocessConfig
    from orthoseg.synth.case import generate_case
    from orthoseg.synth.config import SynthConfig

    config = SynthConfig(
        count=count,
        seed=seed,
        batch="ceiling",
        lateral_fraction=0.5,
        category_weights=dict.fromkeys(CATEGORIES, 1.0),
    )
    scores: dict[float, dict[str, list[float]]] = {s: {n: [] for n in STRUCTURE_NAMES} for s in spacings}
    canvases = {s: PreprocessConfig(spacing_mm=s, canvas_px=320, max_canvas_px=8192) for s in spacings}
    with progress_bar("films") as advance:
        for index in range(count):
            case = generate_case(index, config)
            truth = case.masks.astype(bool)
            for spacing, canvas in canvases.items():
                transform = plan_canvas(truth.shape[1:], pixel_spacing_mm(case.dataset), canvas)
                back = (
                    restore_to_native(masks_to_canvas(truth.astype(np.float32), transform), transform) > 0.5
                )
                for channel, name in enumerate(STRUCTURE_NAMES):
                    if truth[channel].any():
                        scores[spacing][name].append(dice(back[channel], truth[channel]))
            advance(index + 1, count)
    out: dict[str, dict[str, float]] = {}
    for spacing, per_structure in scores.items():
        means = {name: round(float(np.mean(v)), 4) for name, v in per_structure.items() if v}
        out[f"{spacing:g}"] = {**means, "mean": round(float(np.mean(list(means.values()))), 4)}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object (the only output form)")
    parser.add_argument("--count", type=int, default=30)
    parser.add_argument("--seed", type=int, default=424242, help="held out: no training set uses it")
    parser.add_argument("--spacings", default="0.8,0.6,0.4", help="canvas spacings in mm, comma-separated")
    args = parser.parse_args(argv)
    spacings = [float(s) for s in args.spacings.split(",") if s.strip()]
    started = time.perf_counter()
    result = {
        "count": args.count,
        "seed": args.seed,
        "dice_ceiling_by_spacing_mm": ceilings(args.count, args.seed, spacings),
        "seconds": round(time.perf_counter() - started, 1),
    }
    json.dump(result, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
