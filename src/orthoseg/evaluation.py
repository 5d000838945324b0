"""Evaluate a model on a dataset version's held-out test split, on each film's native pixel grid.

A figure only counts when it is measured where a reader measures: on the film's own pixels. Each test
image is read with its SEG, preprocessed with the model's own ``PreprocessConfig``, predicted on the
canvas, restored to the native grid (``orthoseg.preprocessing.restore_to_native``), thresholded at the
model's threshold and scored there: Dice and HD95 in millimetres per structure (``orthoseg.metrics``),
summarised per structure, per implant category and per view. Images are streamed one at a time, so
memory does not grow with the split.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import re
import tempfile
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, field_validator

from orthoseg.labels import STRUCTURE_NAMES
from orthoseg.metrics import (
    dice_per_image,
    group_dice,
    image_dice_mean,
    score_native,
    summarize_dice,
    summarize_hd95,
)

if TYPE_CHECKING:
    from PIL import Image

    from orthoseg.model_package import SegmentationModel
    from orthoseg.progress import ProgressCallback
    from orthoseg.settings import Settings
    from orthoseg.storage import ObjectStore

__all__ = [
    "EvaluationResult",
    "dice_per_image",
    "evaluate_model_on_split",
    "evaluate_run",
    "meets_quality_floor",
    "predict_native_masks",
    "summarize_dice",
]

logger = logging.getLogger(__name__)

TEST_SPLIT = "test"
UNKNOWN = "unknown"
GALLERY_SIZE = 4
GALLERY_PANEL_PX = 320


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _finite_dict(values: dict[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items() if _finite(v)}


class EvaluationResult(BaseModel):
    """Held-out scores of one model on one split, measured on the native image grid.

    Non-finite numbers never appear: a dictionary entry that is NaN or infinite is left out and a
    scalar becomes None, so ``model_dump(exclude_none=True)`` is valid JSON for KFP.

    Attributes:
        run_id: the evaluated MLflow run (empty when a model was evaluated without a run).
        dataset_version: dataset version whose split was used.
        split: the split (``test`` for every figure that counts).
        images: images evaluated.
        dice: mean per-image Dice per structure, only for structures present in at least one
            ground-truth mask of the split.
        dice_mean: mean of ``dice`` (None when no structure is present).
        hd95_mm: mean HD95 (mm) per structure over the images where both prediction and truth have it.
        hd95_mm_mean: mean of ``hd95_mm`` (None when nothing could be scored).
        hd95_missing: per structure, images where only one of prediction and truth had it (no HD95).
        by_category: ``{implant category: {structure: Dice, ..., "dice_mean", "images"}}`` from the
            ground-truth JSON's ``category`` (``unknown`` without one).
        by_view: the same, per view (manifest ``view_position``).
        resolution: where the scores were measured (``native``).
        per_image: optional rows: ``sop_instance_uid``, ``category``, ``view``, ``dice_mean``,
            ``dice_<structure>``, ``hd95_mm_<structure>`` (finite only), ``hd95_missed`` (structures),
            ``seconds``.
    """

    run_id: str = ""
    dataset_version: str
    split: str = TEST_SPLIT
    images: int
    dice: dict[str, float]
    dice_mean: float | None
    hd95_mm: dict[str, float] = {}
    hd95_mm_mean: float | None = None
    hd95_missing: dict[str, int] = {}
    by_category: dict[str, dict[str, float]] = {}
    by_view: dict[str, dict[str, float]] = {}
    resolution: str = "native"
    per_image: list[dict[str, Any]] | None = None

    @field_validator("dice", "hd95_mm", mode="before")
    @classmethod
    def _drop_non_finite(cls, values: dict[str, float]) -> dict[str, float]:
        return _finite_dict(values)

    @field_validator("dice_mean", "hd95_mm_mean", mode="before")
    @classmethod
    def _none_if_non_finite(cls, value: float | None) -> float | None:
        return float(value) if value is not None and _finite(float(value)) else None

    @field_validator("by_category", "by_view", mode="before")
    @classmethod
    def _drop_non_finite_nested(cls, groups: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        return {name: _finite_dict(values) for name, values in groups.items()}

    @field_validator("per_image", mode="before")
    @classmethod
    def _clean_rows(cls, rows: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        if rows is None:
            return None
        return [{k: v for k, v in row.items() if not isinstance(v, float) or _finite(v)} for row in rows]


def meets_quality_floor(evaluation: dict[str, Any] | EvaluationResult, min_dice: float) -> bool:
    """True when the evaluation's mean test Dice reaches ``min_dice`` (the floor before any promotion)."""
    if isinstance(evaluation, EvaluationResult):
        evaluation = evaluation.model_dump()
    value = evaluation.get("dice_mean")
    number = float(value) if value is not None else math.nan
    return bool(math.isfinite(number) and number >= min_dice)


def predict_native_masks(
    model: SegmentationModel, pixels: np.ndarray, spacing_mm: tuple[float, float] | None
) -> np.ndarray:
    """A model's (C, H, W) boolean masks for one radiograph, on the radiograph's own grid.

    The path inference takes: the model's own preprocessing, ``predict_canvas``, stray fragments removed
    (the model's post-processing, when it has one), probabilities restored to the native grid,
    thresholded at the model's threshold, and emptied in the collimator's shadow.

    Args:
        model: a ``SegmentationModel``, or any object with its ``preprocess``, ``predict_canvas`` and
            ``native_masks``.
        pixels: (H, W) presentation values (``Radiograph.pixels``).
        spacing_mm: (row, column) spacing; None uses the fallback spacing.
    """
    from orthoseg.preprocessing import preprocess_radiograph

    canvas, transform = preprocess_radiograph(pixels, spacing_mm, model.preprocess)
    return model.native_masks(model.predict_canvas(canvas[None, None], batch_size=1)[0], transform, pixels)


@dataclass
class _ImageScore:
    uid: str
    category: str
    view: str
    score: dict[str, dict[str, Any]]
    seconds: float

    def row(self) -> dict[str, Any]:
        """The per-image table row; HD95 stays NaN (not scored) or inf (miss) here."""
        row: dict[str, Any] = {
            "sop_instance_uid": self.uid,
            "category": self.category,
            "view": self.view,
            "dice_mean": image_dice_mean(self.score),
        }
        row.update({f"dice_{name}": self.score["dice"][name] for name in STRUCTURE_NAMES})
        row.update({f"hd95_mm_{name}": self.score["hd95_mm"][name] for name in STRUCTURE_NAMES})
        row["seconds"] = round(self.seconds, 3)
        return row


@dataclass
class _SplitEvaluation:
    """Everything one pass over a split produced: the result, table rows and the worst cases' panels."""

    result: EvaluationResult
    rows: list[dict[str, Any]]
    worst: list[tuple[float, str, Image.Image, Image.Image]] = field(default_factory=list)


def _text(value: Any) -> str:
    """A manifest cell as a group name: empty, None and NaN all mean ``unknown``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return UNKNOWN
    return str(value).strip() or UNKNOWN


def _read_category(store: ObjectStore, truth_key: Any) -> str:
    """Implant category from the ground-truth JSON (``category``), ``unknown`` when there is none."""
    key = _text(truth_key)
    if key == UNKNOWN:
        return UNKNOWN
    try:
        truth = json.loads(store.get_bytes(key))
    except Exception as error:  # a missing or broken truth file only loses the grouping
        logger.warning("Ground truth %s unreadable (%s); category unknown", key, error)
        return UNKNOWN
    return _text(truth.get("category", truth.get("implant_category")))


def _evaluate_split(
    model: SegmentationModel,
    settings: Settings,
    dataset_version: str | None,
    split: str,
    progress: ProgressCallback | None,
    gallery_size: int,
    sop_instance_uids: Collection[str] | None = None,
) -> _SplitEvaluation:
    from orthoseg.dataset import (
        SPLITS,
        DatasetError,
        read_manifest,
        read_native_example,
        resolve_dataset_version,
        rows_of_uids,
    )
    from orthoseg.overlay import render_overlay
    from orthoseg.preprocessing import FALLBACK_SPACING_MM
    from orthoseg.storage import store_from_settings

    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    version = resolve_dataset_version(settings, dataset_version)
    store = store_from_settings(settings)
    manifest = read_manifest(store, version)
    rows = manifest[manifest["split"] == split].sort_values("sop_instance_uid")
    if sop_instance_uids is not None:
        rows = rows_of_uids(rows, sop_instance_uids, f"split {split!r} of dataset {version!r}")
    if len(rows) == 0:
        raise ValueError(f"dataset {version!r} has no {split} images; nothing can be measured")
    if rows["label_key"].isna().any():
        raise DatasetError(
            f"dataset {version!r} split {split!r} has {int(rows['label_key'].isna().sum())} rows without "
            "labels; evaluation needs a labelled (purpose=training) dataset"
        )
    total = len(rows)
    logger.info("Evaluating %d %s images of dataset %s on the native grid", total, split, version)
    scores: list[_ImageScore] = []
    worst: list[tuple[float, str, Image.Image, Image.Image]] = []
    for index, record in enumerate(rows.to_dict("records")):
        started = time.perf_counter()
        radiograph, truth = read_native_example(store, str(record["image_key"]), str(record["label_key"]))
        spacing = radiograph.pixel_spacing_mm or (FALLBACK_SPACING_MM, FALLBACK_SPACING_MM)
        pred = predict_native_masks(model, radiograph.pixels, radiograph.pixel_spacing_mm)
        score = score_native(pred, truth, spacing)
        image = _ImageScore(
            uid=str(record["sop_instance_uid"]),
            category=_read_category(store, record.get("truth_key")),
            view=_text(record.get("view_position")),
            score=score,
            seconds=time.perf_counter() - started,
        )
        scores.append(image)
        ranking = image_dice_mean(image.score)
        if gallery_size > 0 and (len(worst) < gallery_size or ranking < worst[-1][0]):
            panels = [
                render_overlay(radiograph.pixels, m, max_side_px=GALLERY_PANEL_PX) for m in (truth, pred)
            ]
            worst = sorted([*worst, (ranking, image.uid, panels[0], panels[1])], key=lambda w: w[0])
            worst = worst[:gallery_size]
        logger.debug("%s scored in %.2f s (%s px)", image.uid, image.seconds, radiograph.pixels.shape)
        del radiograph, truth, pred
        if progress is not None:
            progress(index + 1, total)

    names = STRUCTURE_NAMES
    dice = np.array([[s.score["dice"][n] for n in names] for s in scores], dtype=np.float64)
    hd95 = np.array([[s.score["hd95_mm"][n] for n in names] for s in scores], dtype=np.float64)
    present = np.array([[s.score["truth_present"][n] for n in names] for s in scores], dtype=bool)
    # np.asarray: numpy's stubs say any(axis=0) may be a scalar; over the images it is always an array.
    present_in_any = np.asarray(present.any(axis=0))
    dice_summary, dice_mean = summarize_dice(dice, present_in_any)
    hd95_summary, hd95_mean, missing = summarize_hd95(hd95)
    table = [s.row() for s in scores]
    result = EvaluationResult(
        dataset_version=str(version),
        split=split,
        images=total,
        dice=dice_summary,
        dice_mean=dice_mean,
        hd95_mm=hd95_summary,
        hd95_mm_mean=hd95_mean,
        hd95_missing=missing,
        by_category=group_dice(dice, present, [s.category for s in scores]),
        by_view=group_dice(dice, present, [s.view for s in scores]),
        per_image=[_json_row(row) for row in table],
    )
    seconds = [s.seconds for s in scores]
    logger.info(
        "Dataset %s %s: Dice mean %s, HD95 mean %s mm over %d images (%.2f s/image)",
        version,
        split,
        _fmt(dice_mean),
        _fmt(hd95_mean),
        total,
        float(np.mean(seconds)),
    )
    return _SplitEvaluation(result=result, rows=table, worst=worst)


def _fmt(value: float) -> str:
    return f"{value:.3f}" if math.isfinite(value) else "n/a"


def _json_row(row: dict[str, Any]) -> dict[str, Any]:
    """A table row for JSON: HD95 misses listed by name, NaN and inf left out."""
    missed = [n for n in STRUCTURE_NAMES if math.isinf(row[f"hd95_mm_{n}"])]
    clean = {k: v for k, v in row.items() if not isinstance(v, float) or math.isfinite(v)}
    clean["hd95_missed"] = missed
    return clean


def evaluate_model_on_split(
    model: SegmentationModel,
    settings: Settings,
    dataset_version: str | None,
    split: str = TEST_SPLIT,
    progress: ProgressCallback | None = None,
    sop_instance_uids: Collection[str] | None = None,
) -> EvaluationResult:
    """Score a model on one split of a dataset version at native resolution, without MLflow.

    Args:
        model: a ``SegmentationModel``, or any object with its ``preprocess``, ``predict_canvas`` and
            ``native_masks``.
        settings: the store holding the dataset version.
        dataset_version: version written by validation; None means the newest.
        split: ``test`` for figures that count; ``val`` or ``train`` for diagnostics.
        progress: called as ``(images done, total)``.
        sop_instance_uids: only these images of the split (a frozen benchmark list); None for all.

    Returns:
        The scores, with the per-image table; ``run_id`` is empty.

    Raises:
        ValueError: when the split is empty; ``DatasetError`` when it has rows without labels or lacks
            one of ``sop_instance_uids``.
    """
    return _evaluate_split(
        model, settings, dataset_version, split, progress, gallery_size=0, sop_instance_uids=sop_instance_uids
    ).result


def evaluate_run(
    settings: Settings,
    run_id: str,
    dataset_version: str | None = None,
    per_image: bool = False,
    progress: ProgressCallback | None = None,
) -> EvaluationResult:
    """Score a run's logged model on the test split at native resolution and log it to the run.

    Logs the metrics ``test_dice_<structure>``, ``test_dice_mean``, ``test_images``,
    ``test_hd95_mm_<structure>``, ``test_hd95_mm_mean``, ``test_hd95_missing_<structure>``,
    ``test_dice_mean_category_<category>`` and ``test_dice_mean_view_<view>``; the artifacts
    ``evaluation/test_dice.png`` (bar chart), ``evaluation/per_image.csv`` and ``.json`` (no patient
    identifiers) and ``evaluation/worst_cases.png`` (the four lowest-Dice images, truth beside
    prediction); and the tags ``orthoseg.evaluated_dataset_version`` and ``orthoseg.evaluation_resolution``.

    Args:
        settings: store, MLflow URI and work_dir.
        run_id: the training run (it must carry a logged model).
        dataset_version: whose test split to use; default the run's training dataset version.
        per_image: also return the per-image table.
        progress: called as ``(images done, total)``.

    Raises:
        ValueError: when the run has no logged model or the test split is empty.
    """
    from orthoseg.model_package import MODEL_URI_TAG, connect_tracking, download_model

    client = connect_tracking(settings)
    run = client.get_run(run_id)
    model_uri = run.data.tags.get(MODEL_URI_TAG)
    if not model_uri:
        raise ValueError(f"run {run_id} has no logged model (tag {MODEL_URI_TAG}); train it first")
    version = (
        dataset_version
        or run.data.tags.get("orthoseg.dataset_version")
        or run.data.params.get("dataset_version")
    )
    cache = Path(settings.work_dir).expanduser().resolve() / "models" / "runs" / run_id
    model = download_model(model_uri, cache)
    evaluation = _evaluate_split(model, settings, version, TEST_SPLIT, progress, GALLERY_SIZE)
    result = evaluation.result.model_copy(update={"run_id": run_id})
    _log_to_run(client, run_id, evaluation)
    return result if per_image else result.model_copy(update={"per_image": None})


def _metric_name(text: str) -> str:
    """A group name as a metric-name suffix (MLflow allows letters, digits, ``_ - . /`` and spaces)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or UNKNOWN


def _metrics(result: EvaluationResult) -> dict[str, float]:
    values: dict[str, float] = {f"test_dice_{n}": v for n, v in result.dice.items()}
    values["test_dice_mean"] = result.dice_mean if result.dice_mean is not None else math.nan
    values["test_images"] = float(result.images)
    values.update({f"test_hd95_mm_{n}": v for n, v in result.hd95_mm.items()})
    if result.hd95_mm_mean is not None:
        values["test_hd95_mm_mean"] = result.hd95_mm_mean
    values.update({f"test_hd95_missing_{n}": float(v) for n, v in result.hd95_missing.items()})
    for prefix, groups in (("category", result.by_category), ("view", result.by_view)):
        for name, summary in groups.items():
            if "dice_mean" in summary:
                values[f"test_dice_mean_{prefix}_{_metric_name(name)}"] = summary["dice_mean"]
    return values


def _log_to_run(client: Any, run_id: str, evaluation: _SplitEvaluation) -> None:
    from mlflow.entities import Metric

    result = evaluation.result
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in _metrics(result).items()])
    client.set_tag(run_id, "orthoseg.evaluated_dataset_version", result.dataset_version)
    client.set_tag(run_id, "orthoseg.evaluation_resolution", result.resolution)
    mean = result.dice_mean if result.dice_mean is not None else math.nan
    with tempfile.TemporaryDirectory(prefix="orthoseg-eval-") as tmp:
        folder = Path(tmp)
        title = f"Test Dice per structure, native grid (mean {mean:.3f}, {result.images} images)"
        _bar_chart_png(result.dice, title, folder / "test_dice.png")
        (folder / "per_image.csv").write_text(per_image_csv(evaluation.rows))
        rows = [_json_row(row) for row in evaluation.rows]
        (folder / "per_image.json").write_text(json.dumps(rows, indent=1, sort_keys=True) + "\n")
        files = ["test_dice.png", "per_image.csv", "per_image.json"]
        if evaluation.worst:
            _gallery_png(evaluation.worst, folder / "worst_cases.png")
            files.append("worst_cases.png")
        for name in files:
            client.log_artifact(run_id, str(folder / name), artifact_path="evaluation")


def per_image_csv(rows: list[dict[str, Any]]) -> str:
    """The per-image table as CSV: HD95 is empty when not scored and ``inf`` for a miss."""
    if not rows:
        return ""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        cells = {}
        for key, value in row.items():
            if isinstance(value, float):
                value = "" if math.isnan(value) else ("inf" if math.isinf(value) else f"{value:.6g}")
            cells[key] = value
        writer.writerow(cells)
    return buffer.getvalue()


def _bar_chart_png(dice: dict[str, float], title: str, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 3.5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    names = list(dice)
    axes.bar(range(len(names)), [dice[n] for n in names], color="#4477aa")
    axes.set_xticks(range(len(names)), names, rotation=30, ha="right")
    axes.set_ylim(0, 1)
    axes.set_ylabel("Dice")
    axes.set_title(title)
    figure.tight_layout()
    figure.savefig(path)


def _gallery_png(worst: list[tuple[float, str, Image.Image, Image.Image]], path: Path) -> None:
    """Rows of (truth | prediction) overlays, worst image first, each under a one-line caption."""
    from PIL import Image, ImageDraw

    cell, pad, caption = GALLERY_PANEL_PX, 6, 14
    width = 2 * cell + 3 * pad
    height = caption + len(worst) * (caption + cell + pad) + pad
    sheet = Image.new("RGB", (width, height), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    draw.text((pad, 1), "ground truth", fill=(255, 255, 255))
    draw.text((2 * pad + cell, 1), "prediction (native grid)", fill=(255, 255, 255))
    top = caption
    for ranking, uid, truth_panel, pred_panel in worst:
        draw.text((pad, top + 1), f"...{uid[-16:]}  image Dice {ranking:.3f}", fill=(255, 220, 120))
        top += caption
        for column, panel in enumerate((truth_panel, pred_panel)):
            left = pad + column * (cell + pad)
            sheet.paste(panel, (left + (cell - panel.width) // 2, top + (cell - panel.height) // 2))
        top += cell + pad
    sheet.save(path, format="PNG", compress_level=1)
