"""Sim-to-real check: a model on the real films in shared/realdata (evaluation only, never training).

Scores femur and tibia on the labelled real AP knee inside each label's row band (Dice, HD95 mm), reports
predicted areas and implant calls on the two real CR files (ankle, hip), writes overlays, and prints one
JSON object:

    .venv/bin/python benchmarks/real_check.py [--model-uri URI] [--mlflow-uri URI] [--realdata DIR]
        [--out DIR] [--device cpu]

The default model is the ``champion`` alias of the registered model named in Settings
(``ORTHOSEG_MODEL_NAME``); ``--model-uri`` takes any MLflow model URI (``models:/orthoseg-knee/3``,
``runs:/<run>/model``, ``models:/m-...``) or a local folder holding ``model.json`` and
``weights.safetensors``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
import time
from pathlib import Path

from orthoseg.real_check import run_real_check
from orthoseg.registry import load_model_from_uri
from orthoseg.settings import Settings

logger = logging.getLogger("benchmarks.real_check")

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_REALDATA = REPO_ROOT.parent / "shared" / "realdata"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model-uri", default=None, help="MLflow model URI or local folder (default: champion)"
    )
    parser.add_argument("--mlflow-uri", default=None, help="tracking/registry URI (default: from Settings)")
    parser.add_argument("--realdata", type=Path, default=DEFAULT_REALDATA, help="the shared/realdata folder")
    parser.add_argument("--out", type=Path, default=Path(".orthoseg/real_check"), help="overlay folder")
    parser.add_argument("--device", default=None, help="torch device (default: CUDA when available)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    command = shlex.join(["python", *(sys.argv if argv is None else [sys.argv[0], *argv])])
    settings = Settings(**({"mlflow_uri": args.mlflow_uri} if args.mlflow_uri else {}))
    if not args.realdata.is_dir():
        parser.error(f"real radiographs not found at {args.realdata} (pass --realdata)")
    started = time.perf_counter()
    model, source = load_model_from_uri(settings, args.model_uri, args.device)
    checked = run_real_check(model, args.realdata, args.out)
    result = {
        "benchmark": "orthoseg.real_check.run_real_check",
        "command": command,
        "model_source": source,
        "device": str(model.device),
        "cpu_count": os.cpu_count(),
        "seconds": round(time.perf_counter() - started, 2),
        **checked,
    }
    sys.stdout.write(json.dumps(result, indent=2, allow_nan=False) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
