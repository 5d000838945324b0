"""Measurement accuracy against the simulator's exact ground truth, on held-out simulated films.

Simulates ``--count`` films (AP and lateral, every implant category equally likely, a seed no training
set uses), measures each with ``orthoseg.measure.measure_image`` from the ground-truth masks (the
algorithms alone) or, with ``--model-uri``, from a model's masks (end to end), always with the native
pixels for the radiolucent lines, and compares with the truth JSON:

- MAE (degrees) of alpha, beta, gamma, delta and the tibiofemoral angle, with how many were refused
  (truth has a value, the measurement gave None) or flagged, and the MAE of the values reported without a
  flag (what a reader takes as fact);
- radiolucent-line width per zone MAE (mm) and the sensitivity/specificity of "line >= 1 mm";
- medial/lateral joint space MAE (mm), AP films of one knee;
- implant category accuracy (exact; and compatible, where ``uka`` on a lateral film matches either UKA
  side) and fixation accuracy; also after the study-level step inference runs
  (``orthoseg.measure.study.reconcile_study_rows``: a lateral ``uka`` takes the side of its study's AP,
  where the study has one — half the simulated patients have an AP and a lateral of the same knee).

Prints one JSON object. Usage:
``python benchmarks/measure.py --json [--count 40] [--seed 424242] [--model-uri PATH|URI|champion]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import numpy as np

ANGLES = (
    "femoral_component_angle_deg",
    "tibial_component_angle_deg",
    "femoral_flexion_angle_deg",
    "tibial_slope_angle_deg",
    "tibiofemoral_angle_deg",
)
CATEGORIES = ("native", "uka_medial", "uka_lateral", "tka", "revision_tka")


def _config(count: int, seed: int) -> Any:
    from orthoseg.synth.config import SynthConfig

    return SynthConfig(
        count=count,
        seed=seed,
        batch="measure-holdout",
        lateral_fraction=0.5,
        category_weights={c: 1.0 for c in CATEGORIES},
        # The truth measured here is the knee's: lower-leg films (some without a knee) are left out.
        leg_film_fraction=0.0,
    )


def _mae(errors: list[float]) -> float | None:
    return round(float(np.mean(np.abs(errors))), 3) if errors else None


def _measure_case(case: Any, model: Any) -> list[tuple[Any, dict[str, Any]]]:
    """(measurements, truth) of every knee on the film: two for a standing bilateral AP."""
    from orthoseg.evaluation import predict_native_masks
    from orthoseg.inference import _columns_toward_patient_left
    from orthoseg.measure.knees import measure_knees
    from orthoseg.radiograph import pixel_spacing_mm, to_presentation

    ds = case.dataset
    pixels = to_presentation(ds, ds.pixel_array)
    spacing = pixel_spacing_mm(ds)
    masks = case.masks if model is None else predict_native_masks(model, pixels, spacing)
    knees = measure_knees(
        masks,
        spacing,
        laterality=str(getattr(ds, "ImageLaterality", "") or ""),
        view_position=str(getattr(ds, "ViewPosition", "") or ""),
        columns_toward_patient_left=_columns_toward_patient_left(ds),
        pixels=pixels,
    )
    truth = case.truth
    if not truth.get("bilateral"):
        return [(knees[0][1], truth)]
    by_side = {k["laterality"]: k for k in truth["knees"]}
    if len(knees) == 1:  # the knees were not separated: one refused record for the film
        return [(knees[0][1], truth)]
    return [
        (result, {**truth, **by_side[side], "bilateral": False, "bilateral_film": True})
        for side, result in knees
    ]


def _with_study_decisions(pairs: list[tuple[Any, dict[str, Any]]]) -> list[tuple[Any, dict[str, Any]]]:
    """The records after inference's study-level step (lateral UKA side from the study's AP)."""
    from orthoseg.measure import ImageMeasurements
    from orthoseg.measure.study import reconcile_study_rows

    rows = [
        {
            **result.model_dump(),
            "study_instance_uid": truth["study_instance_uid"],
            "sop_instance_uid": truth["sop_instance_uid"],
            "laterality": truth["laterality"],
        }
        for result, truth in pairs
    ]
    reconcile_study_rows(rows)
    fields = ImageMeasurements.model_fields
    return [
        (ImageMeasurements(**{k: v for k, v in row.items() if k in fields}), truth)
        for row, (_, truth) in zip(rows, pairs, strict=True)
    ]


def compare(pairs: list[tuple[Any, dict[str, Any]]]) -> dict[str, Any]:
    """Accuracy figures of measurement records against their truth dictionaries."""
    from orthoseg.measure import zone_values

    angle_err: dict[str, list[float]] = {k: [] for k in ANGLES}
    refused: dict[str, int] = dict.fromkeys(ANGLES, 0)
    flagged: dict[str, int] = dict.fromkeys(ANGLES, 0)
    unflagged_err: dict[str, list[float]] = {k: [] for k in ANGLES}
    zone_err: dict[str, list[float]] = {}
    zones_refused = 0
    tp = fn = tn = fp = 0
    js_err: list[float] = []
    js_refused = 0
    cat_exact = cat_compatible = cat_n = 0
    fix_ok = fix_n = 0
    confusion: dict[str, int] = {}
    images_flagged: dict[str, int] = {}
    for result, truth in pairs:
        images_flagged[result.quality_flag] = images_flagged.get(result.quality_flag, 0) + 1
        if truth.get("bilateral"):
            continue  # a bilateral film whose knees were not separated (flag bilateral_film)
        for key in ANGLES:
            want = truth.get(key)
            if want is None:
                continue
            got = getattr(result, key)
            if got is None:
                refused[key] += 1
                continue
            if key in result.measurement_flags:
                flagged[key] += 1
            else:
                unflagged_err[key].append(got - want)
            angle_err[key].append(got - want)
        got_zones = zone_values(result, truth["view"])
        for zone, want in truth.get("radiolucent_line_mm", {}).items():
            got = got_zones.get(zone)
            if got is None:
                zones_refused += 1
                continue
            zone_err.setdefault(zone, []).append(got - want)
            present, called = want >= 1.0, got >= 1.0
            tp += present and called
            fn += present and not called
            tn += (not present) and (not called)
            fp += (not present) and called
        if truth["view"] == "AP":
            for key in ("joint_space_medial_mm", "joint_space_lateral_mm"):
                got = getattr(result, key)
                if got is None:
                    js_refused += 1
                else:
                    js_err.append(got - truth[key])
        want_cat = truth["category"]
        got_cat = result.implant_type
        cat_n += 1
        cat_exact += got_cat == want_cat
        cat_compatible += got_cat == want_cat or (got_cat == "uka" and want_cat.startswith("uka"))
        if got_cat != want_cat:
            name = f"{want_cat}->{got_cat}"
            confusion[name] = confusion.get(name, 0) + 1
        want_fix = None if truth["fixation"] == "none" else truth["fixation"]
        fix_n += 1
        fix_ok += result.fixation == want_fix
    all_zone = [e for v in zone_err.values() for e in v]
    return {
        "angles_mae_deg": {k: _mae(v) for k, v in angle_err.items()},
        "angles_n": {k: len(v) for k, v in angle_err.items()},
        "angles_refused": refused,
        "angles_flagged": flagged,
        "angles_mae_deg_unflagged": {k: _mae(v) for k, v in unflagged_err.items()},
        "line_width_mae_mm": _mae(all_zone),
        "line_width_mae_mm_by_zone": {k: _mae(v) for k, v in sorted(zone_err.items())},
        "line_zones_n": len(all_zone),
        "line_zones_refused": zones_refused,
        "line_presence_sensitivity": round(tp / (tp + fn), 3) if tp + fn else None,
        "line_presence_specificity": round(tn / (tn + fp), 3) if tn + fp else None,
        "line_presence_counts": {"tp": tp, "fn": fn, "tn": tn, "fp": fp},
        "joint_space_mae_mm": _mae(js_err),
        "joint_space_bias_mm": round(float(np.mean(js_err)), 3) if js_err else None,
        "joint_space_n": len(js_err),
        "joint_space_refused": js_refused,
        "category_accuracy": round(cat_exact / cat_n, 3) if cat_n else None,
        "category_accuracy_compatible": round(cat_compatible / cat_n, 3) if cat_n else None,
        "category_confusions": confusion,
        "fixation_accuracy": round(fix_ok / fix_n, 3) if fix_n else None,
        "images_by_quality_flag": images_flagged,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object (the only output form)")
    parser.add_argument("--count", type=int, default=40)
    parser.add_argument("--seed", type=int, default=424242, help="held out: no training set uses it")
    parser.add_argument(
        "--model-uri",
        default=None,
        help="measure from a model's masks: local model folder, MLflow model URI, or 'champion'",
    )
    args = parser.parse_args(argv)
    from orthoseg.synth.case import generate_case

    model = None
    if args.model_uri:
        from orthoseg.registry import load_model_from_uri
        from orthoseg.settings import Settings

        uri = None if args.model_uri == "champion" else args.model_uri
        model, args.model_uri = load_model_from_uri(Settings(), uri)
    config = _config(args.count, args.seed)
    started = time.perf_counter()
    pairs = [pair for i in range(args.count) for pair in _measure_case(generate_case(i, config), model)]
    studied = _with_study_decisions(pairs)
    out = {
        "masks": "model" if model is not None else "ground_truth",
        "model_uri": args.model_uri,
        "count": args.count,
        "seed": args.seed,
        "views": {v: sum(t["view"] == v for _, t in pairs) for v in ("AP", "LAT")},
        "knees_from_bilateral_films": sum(bool(t.get("bilateral_film")) for _, t in pairs),
        "categories": {c: sum(t["category"] == c for _, t in pairs) for c in CATEGORIES},
        **compare(pairs),
        "category_accuracy_with_study": compare(studied)["category_accuracy"],
        "seconds": round(time.perf_counter() - started, 1),
    }
    json.dump(out, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
