"""The demo end to end on the tiny profile: both pipelines through kfp.local, outputs readable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import highdicom as hd
import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from orthoseg.demo import PROFILES

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    root = tmp_path_factory.mktemp("demo")
    env = {
        **os.environ,
        "ORTHOSEG_STORE": str(root / "store"),
        "ORTHOSEG_MLFLOW_URI": f"sqlite:///{root / 'mlflow.db'}",
        "ORTHOSEG_WORK_DIR": str(root / "work"),
    }
    result = subprocess.run(
        [sys.executable, "-m", "orthoseg.cli", "demo", "--profile", "tiny", "--json"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    (root / "stderr.txt").write_text(result.stderr)
    return json.loads(result.stdout), root


def test_the_terminal_gets_a_line_per_stage_and_the_log_file_the_rest(demo_run: tuple[dict, Path]) -> None:
    _, root = demo_run
    lines = (root / "stderr.txt").read_text().splitlines()
    assert len(lines) <= 8, lines
    stages = [line for line in lines if line.startswith("✓ [")]
    assert [line[3:6] for line in stages] == ["1/3", "2/3", "3/3"]
    named = next(line for line in lines if line.startswith("Logs of every stage: "))
    log = Path(named.removeprefix("Logs of every stage: ").split(" (")[0])
    assert log.parent == root / "work" / "logs" and log.name.startswith("demo-")
    # The pipelines' own output (kfp.local's executor lines, the stage markers) is all in the file.
    text = log.read_text()
    assert "Training pipeline" in text and "Inference pipeline" in text
    assert len(text.splitlines()) > 50


def test_every_file_is_accounted_for(demo_run: tuple[dict, Path]) -> None:
    summary, _ = demo_run
    profile = PROFILES["tiny"]
    assert summary["files_total"] == summary["files_accepted"] + summary["files_quarantined"]
    assert summary["files_quarantined"] >= profile.broken_files
    assert sum(summary["quarantine_reasons"].values()) >= profile.broken_files


def test_the_first_run_trains_because_every_labelled_film_is_new(demo_run: tuple[dict, Path]) -> None:
    summary, _ = demo_run
    # No champion yet: every accepted film counts, and the tiny profile's threshold is 6.
    assert summary["retrain"].startswith("trained: ")
    assert "(no champion) ≥ threshold 6; from scratch: there is no champion" in summary["retrain"]


def test_registry_has_a_champion_with_dice_tags(demo_run: tuple[dict, Path]) -> None:
    summary, root = demo_run
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    client = MlflowClient()
    champion = client.get_model_version_by_alias(summary["model_name"], "champion")
    assert str(champion.version) == summary["champion_version"] == summary["model_version"]
    assert "dataset_version" in champion.tags and "test_dice_mean" in champion.tags
    assert set(summary["test_dice"]) == {
        "femur",
        "tibia",
        "fibula",
        "patella",
        "femoral_component",
        "tibial_component",
        "cement",
    }


def test_predictions_are_readable(demo_run: tuple[dict, Path]) -> None:
    summary, _ = demo_run
    predictions = Path(summary["predictions"].removeprefix("file://"))
    measurements = pd.read_parquet(predictions / "measurements.parquet")
    assert len(measurements) == PROFILES["tiny"].inference_images == summary["images_inferred"]
    segs = sorted((predictions / "seg").glob("*.dcm"))
    assert len(segs) == summary["images_inferred"]
    seg = hd.seg.segread(segs[0])
    assert seg.SegmentationType == "BINARY"
    assert len(seg.SegmentSequence) == 7
    referenced = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID
    assert referenced in set(measurements["sop_instance_uid"])
    assert len(list((predictions / "overlays").glob("*.png"))) == summary["images_inferred"]
    assert (predictions / "report.html").read_text().count("<img") >= 1
