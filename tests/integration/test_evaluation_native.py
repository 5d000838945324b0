"""Evaluation on the native grid against a real MLflow run (sqlite), and the real-film check.

The networks here are untrained: they prove the plumbing (metrics, artifacts, JSON-safety). The numbers
are proven by an oracle model that returns the true masks on the canvas: restored to the native grid
it must score near-perfect Dice, which holds only if the canvas-to-native mapping is right.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

from orthoseg.dataset import read_manifest
from orthoseg.evaluation import evaluate_model_on_split, evaluate_run
from orthoseg.labels import STRUCTURE_NAMES
from orthoseg.metrics import score_native
from orthoseg.model import NetworkConfig, build_network_from_config
from orthoseg.model_package import ModelConfig, SegmentationModel, connect_tracking, log_segmentation_model
from orthoseg.postprocess import PostprocessConfig, native_masks
from orthoseg.preprocessing import CanvasTransform, masks_to_canvas, preprocess_radiograph, restore_to_native
from orthoseg.radiograph import read_radiograph
from orthoseg.real_check import run_real_check
from orthoseg.seg_io import read_seg_masks
from orthoseg.settings import PreprocessConfig, Settings
from orthoseg.storage import join_key, store_from_settings
from tests.integration._dataset_helpers import write_dataset_version

CATEGORIES = ("tka", "native")
VIEWS = ("AP", "LL")


def _write_version(settings: Settings) -> str:
    """A dataset version whose test rows carry a truth JSON (category) and alternate views."""
    store = store_from_settings(settings)
    version = write_dataset_version(store, count=8, seed=3, test_fraction=0.4)
    manifest = read_manifest(store, version)
    test_rows = np.flatnonzero(manifest["split"].to_numpy() == "test")
    for position, row in enumerate(test_rows):
        uid = manifest.at[row, "sop_instance_uid"]
        manifest.at[row, "view_position"] = VIEWS[position % 2]
        if position == len(test_rows) - 1:
            continue  # one image without truth: category "unknown"
        key = join_key("datasets", version, "truth", f"{uid}.json")
        store.put_bytes(key, json.dumps({"category": CATEGORIES[position % 2]}).encode())
        manifest.at[row, "truth_key"] = key
    buffer = io.BytesIO()
    manifest.to_parquet(buffer, index=False)
    store.put_bytes(join_key("datasets", version, "manifest.parquet"), buffer.getvalue())
    return version


class _OracleModel:
    """Answers each canvas with its true canvas masks (looked up by the canvas bytes)."""

    def __init__(self, settings: Settings, version: str, preprocess: PreprocessConfig) -> None:
        self.preprocess = preprocess
        self.threshold = 0.5
        store = store_from_settings(settings)
        manifest = read_manifest(store, version)
        self._masks: dict[str, np.ndarray] = {}
        for image_key, label_key in zip(manifest["image_key"], manifest["label_key"], strict=True):
            radiograph = read_radiograph(store.get_bytes(image_key))
            masks, _ = read_seg_masks(store.get_bytes(label_key))
            canvas, transform = preprocess_radiograph(
                radiograph.pixels, radiograph.pixel_spacing_mm, preprocess
            )
            self._masks[self._key(canvas)] = masks_to_canvas(masks, transform).astype(np.float32)

    @staticmethod
    def _key(canvas: np.ndarray) -> str:
        return hashlib.sha256(np.ascontiguousarray(canvas, dtype=np.float32).tobytes()).hexdigest()

    def predict_canvas(self, batch: np.ndarray, batch_size: int = 8) -> np.ndarray:
        return np.stack([self._masks[self._key(canvas[0])] for canvas in batch])

    def native_masks(
        self, probabilities: np.ndarray, transform: CanvasTransform, pixels: np.ndarray | None = None
    ) -> np.ndarray:
        # The truth has no stray fragments and nothing in a shutter's shadow: nothing to clean.
        return native_masks(probabilities, transform, self.threshold, PostprocessConfig(enabled=False))


def _untrained_model(preprocess: PreprocessConfig, seed: int = 0) -> tuple[torch.nn.Module, NetworkConfig]:
    torch.manual_seed(seed)
    config = NetworkConfig(channels=(8, 16, 32))
    return build_network_from_config(config), config


def test_true_masks_survive_the_canvas_round_trip_on_the_native_grid(settings: Settings) -> None:
    version = _write_version(settings)
    store = store_from_settings(settings)
    row = read_manifest(store, version).iloc[0]
    radiograph = read_radiograph(store.get_bytes(row["image_key"]))
    truth, _ = read_seg_masks(store.get_bytes(row["label_key"]))
    _, transform = preprocess_radiograph(radiograph.pixels, radiograph.pixel_spacing_mm, settings.preprocess)
    restored = restore_to_native(masks_to_canvas(truth, transform), transform) >= 0.5
    assert restored.shape == truth.shape  # scored on the native grid, not the canvas
    score = score_native(restored, truth, radiograph.pixel_spacing_mm)
    assert score["dice"]["femur"] > 0.9 and score["dice"]["tibia"] > 0.9
    # Boundaries move by at most about one canvas pixel (2 mm here).
    assert score["hd95_mm"]["femur"] <= settings.preprocess.spacing_mm * 1.5


def test_oracle_model_scores_near_perfect_at_native_resolution(settings: Settings) -> None:
    version = _write_version(settings)
    oracle = _OracleModel(settings, version, settings.preprocess)
    calls: list[tuple[int, int]] = []
    result = evaluate_model_on_split(oracle, settings, version, progress=lambda d, t: calls.append((d, t)))
    assert result.resolution == "native" and result.split == "test" and result.run_id == ""
    assert calls == [(i + 1, result.images) for i in range(result.images)]
    assert result.dice["femur"] > 0.9 and result.dice["tibia"] > 0.9
    assert result.dice_mean is not None and result.dice_mean > 0.8
    assert 0.0 <= result.hd95_mm["femur"] <= 1.5 * settings.preprocess.spacing_mm
    assert result.hd95_missing["femur"] == 0 and result.hd95_missing["tibia"] == 0
    assert set(result.by_category) == {"tka", "native", "unknown"}
    assert set(result.by_view) == {"AP", "LL"}
    assert sum(group["images"] for group in result.by_view.values()) == result.images
    assert result.per_image is not None and len(result.per_image) == result.images
    row = result.per_image[0]
    assert {"sop_instance_uid", "category", "view", "dice_femur", "hd95_mm_femur", "hd95_missed"} <= set(row)


def test_evaluate_run_logs_native_metrics_and_artifacts(settings: Settings, tmp_path: Path) -> None:
    version = _write_version(settings)
    connect_tracking(settings)
    # Artifacts under tmp_path (a sqlite tracking URI would otherwise put them in ./mlruns).
    mlflow.create_experiment(settings.experiment_name, artifact_location=(tmp_path / "artifacts").as_uri())
    mlflow.set_experiment(settings.experiment_name)
    network, config = _untrained_model(settings.preprocess)
    with mlflow.start_run() as run:
        mlflow.set_tag("orthoseg.dataset_version", version)
        log_segmentation_model(network, config, settings.preprocess)
    run_id = run.info.run_id

    calls: list[tuple[int, int]] = []
    result = evaluate_run(settings, run_id, None, True, progress=lambda d, t: calls.append((d, t)))
    assert result.run_id == run_id and result.dataset_version == version
    assert result.resolution == "native"
    assert calls[-1] == (result.images, result.images)
    assert result.per_image is not None and len(result.per_image) == result.images
    assert evaluate_run(settings, run_id, version).per_image is None  # positional form, no table
    dumped = result.model_dump(mode="json", exclude_none=True)
    json.dumps(dumped, allow_nan=False)
    assert all(math.isfinite(v) for v in dumped["dice"].values())

    client = connect_tracking(settings)
    logged = client.get_run(run_id)
    metrics = logged.data.metrics
    assert 0.0 <= metrics["test_dice_mean"] <= 1.0
    assert metrics["test_images"] == result.images
    for name in result.dice:
        assert metrics[f"test_dice_{name}"] == pytest.approx(result.dice[name])
    for name in result.hd95_mm:
        assert metrics[f"test_hd95_mm_{name}"] == pytest.approx(result.hd95_mm[name])
    assert all(f"test_hd95_missing_{name}" in metrics for name in STRUCTURE_NAMES)
    assert any(key.startswith("test_dice_mean_category_") for key in metrics)
    assert {"test_dice_mean_view_AP", "test_dice_mean_view_LL"} <= set(metrics)
    assert logged.data.tags["orthoseg.evaluation_resolution"] == "native"
    assert logged.data.tags["orthoseg.evaluated_dataset_version"] == version
    artifacts = {a.path for a in client.list_artifacts(run_id, "evaluation")}
    assert {
        "evaluation/test_dice.png",
        "evaluation/per_image.csv",
        "evaluation/per_image.json",
        "evaluation/worst_cases.png",
    } <= artifacts

    local = Path(
        mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="evaluation", dst_path=str(tmp_path))
    )
    table = list(csv.DictReader((local / "per_image.csv").open()))
    assert len(table) == result.images
    assert {"sop_instance_uid", "category", "view", "dice_femur", "hd95_mm_femur"} <= set(table[0])
    text = (local / "per_image.csv").read_text() + (local / "per_image.json").read_text()
    assert "PAT-" not in text and "Patient" not in text  # no patient identifiers
    from PIL import Image

    with Image.open(local / "worst_cases.png") as gallery:
        assert gallery.width > 300 and gallery.height > 300


def test_real_check_runs_on_the_real_films(settings: Settings, realdata_dir: Path, tmp_path: Path) -> None:
    network, config = _untrained_model(settings.preprocess, seed=1)
    model = SegmentationModel(
        network, ModelConfig(network=config, preprocess=settings.preprocess), device="cpu"
    )
    out = tmp_path / "real_check"
    result = run_real_check(model, realdata_dir, out)
    json.dumps(result, allow_nan=False)

    knee = result["knee"]
    assert knee["shape"] == [2680, 1088]
    assert knee["spacing_mm"] == pytest.approx([0.14, 0.14])
    assert knee["band_scores"]["femur"]["band_rows"] == [958, 1373]
    assert knee["band_scores"]["tibia"]["band_rows"] == [1347, 1711]
    for name in ("femur", "tibia"):
        assert 0.0 <= knee["dice"][name] <= 1.0
        assert knee["hd95_mm"][name] is None or knee["hd95_mm"][name] >= 0.0
    assert set(knee["predicted_area_mm2"]) == set(STRUCTURE_NAMES)
    assert Path(knee["overlay"]).is_file() and Path(knee["side_by_side"]).is_file()
    for stem in ("RG3_J2KR", "RG2_JLSL"):
        entry = result[stem]
        if entry.get("missing"):
            continue
        assert Path(entry["overlay"]).is_file() and Path(entry["overlay"]).parent == out
        assert isinstance(entry["implant_called"], bool)
        assert all(area >= 0.0 for area in entry["predicted_area_mm2"].values())
    assert result["RG3_J2KR"]["spacing_source"] == "fallback"  # the file records no spacing
    assert result["RG2_JLSL"]["spacing_mm"] == pytest.approx([0.2, 0.2])
