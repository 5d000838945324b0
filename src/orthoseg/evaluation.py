"""Evaluate a trained run on the fixed test split: Dice per structure, logged back to the run.

Dice is computed at canvas resolution (the network's input grid), after thresholding probabilities at
the model's threshold. Native-resolution evaluation (restoring predictions to each film's own pixel
grid) is a later deepening.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel

from orthoseg.labels import STRUCTURE_NAMES

if TYPE_CHECKING:
    import torch

    from orthoseg.settings import Settings

logger = logging.getLogger(__name__)

TEST_SPLIT = "test"


class EvaluationResult(BaseModel):
    """Test-split Dice of one training run.

    Attributes:
        run_id: the evaluated MLflow run.
        dataset_version: dataset version whose test split was used.
        split: always ``test``.
        images: test images evaluated.
        dice: mean per-image Dice per structure, only for structures present in at least one test mask.
        dice_mean: mean of ``dice`` over those structures.
        resolution: where Dice was measured (``canvas``).
        per_image: optional rows ``{"sop_instance_uid": ..., "<structure>": dice, ...}``.
    """

    run_id: str
    dataset_version: str
    split: str = TEST_SPLIT
    images: int
    dice: dict[str, float]
    dice_mean: float
    resolution: str = "canvas"
    per_image: list[dict[str, Any]] | None = None


def dice_per_image(pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Dice of every image and structure.

    An image where a structure is absent from both prediction and ground truth scores 1.0 for that
    structure (the model correctly found nothing), so a model that invents cement on an uncemented
    knee is penalised and one that stays silent is not.

    Args:
        pred: (N, C, H, W) binary prediction (bool or 0/1).
        truth: (N, C, H, W) binary ground truth.

    Returns:
        (N, C) float32 Dice in [0, 1].
    """
    import torch

    pred_b = pred.bool().flatten(2)
    truth_b = truth.bool().flatten(2)
    intersection = (pred_b & truth_b).sum(dim=2).float()
    total = pred_b.sum(dim=2).float() + truth_b.sum(dim=2).float()
    return torch.where(total > 0, 2.0 * intersection / total.clamp(min=1.0), torch.ones_like(total))


def summarize_dice(per_image: np.ndarray, present: np.ndarray) -> tuple[dict[str, float], float]:
    """Per-structure mean Dice and their mean, over the structures present in the ground truth.

    A structure no ground-truth mask of the split contains (e.g. cement in an all-uncemented test set)
    would score 1.0 for a silent model and says nothing about it, so it is left out of both.

    Args:
        per_image: (N, C) Dice per image and structure (``dice_per_image``).
        present: (C,) bool, structures present in at least one ground-truth mask.

    Returns:
        ``{structure: mean Dice}`` for present structures, and their mean (NaN when none is present).
    """
    per_structure = per_image.mean(axis=0) if per_image.shape[0] else np.full(per_image.shape[1], np.nan)
    dice = {name: float(per_structure[c]) for c, name in enumerate(STRUCTURE_NAMES) if present[c]}
    mean = float(np.mean(list(dice.values()))) if dice else float("nan")
    return dice, mean


def meets_quality_floor(evaluation: dict[str, Any] | EvaluationResult, min_dice: float) -> bool:
    """True when the evaluation's mean test Dice reaches ``min_dice`` (the floor before any promotion)."""
    if isinstance(evaluation, EvaluationResult):
        evaluation = evaluation.model_dump()
    value = float(evaluation.get("dice_mean", float("nan")))
    return bool(np.isfinite(value) and value >= min_dice)


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


def predict_masks(model: Any, images: np.ndarray, batch_size: int = 8) -> np.ndarray:
    """Binary (N, C, S, S) masks of a ``SegmentationModel`` for canvases, at the model's threshold."""
    return model.predict_canvas(images, batch_size=batch_size) >= model.threshold


def evaluate_run(
    settings: Settings, run_id: str, dataset_version: str | None = None, per_image: bool = False
) -> EvaluationResult:
    """Compute test-split Dice of a run's logged model and log it to the run.

    Logs ``test_dice_<structure>`` and ``test_dice_mean`` metrics, a per-structure bar chart
    (``evaluation/test_dice.png``) and the tag ``orthoseg.evaluated_dataset_version``. The test split
    is preprocessed with the model's own ``PreprocessConfig``, not the current settings.

    Args:
        settings: store, MLflow URI and work_dir.
        run_id: the training run (it must carry a logged model).
        dataset_version: whose test split to use; default the run's training dataset version.
        per_image: also return the per-image Dice table.

    Raises:
        ValueError: when the run has no logged model or the test split is empty.
    """
    import torch

    from orthoseg.dataset import load_split
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
    test = load_split(settings, version, TEST_SPLIT, preprocess=model.preprocess)
    if len(test) == 0:
        raise ValueError(f"dataset {version!r} has no test images; Dice cannot be measured")
    pred = predict_masks(model, test.image)
    scores = dice_per_image(torch.from_numpy(pred), torch.from_numpy(test.masks)).numpy()
    dice, mean = summarize_dice(scores, test.structures_present)
    logger.info("Run %s: test Dice mean %.3f over %d images (%s)", run_id, mean, len(test), dice)

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [Metric(f"test_dice_{name}", value, now, 0) for name, value in dice.items()]
    metrics.append(Metric("test_dice_mean", mean, now, 0))
    metrics.append(Metric("test_images", float(len(test)), now, 0))
    client.log_batch(run_id, metrics=metrics)
    client.set_tag(run_id, "orthoseg.evaluated_dataset_version", str(version))
    with tempfile.TemporaryDirectory(prefix="orthoseg-eval-") as tmp:
        chart = Path(tmp) / "test_dice.png"
        _bar_chart_png(dice, f"Test Dice per structure (mean {mean:.3f}, {len(test)} images)", chart)
        client.log_artifact(run_id, str(chart), artifact_path="evaluation")
    table = None
    if per_image:
        table = [
            {"sop_instance_uid": uid, **{name: float(scores[i, c]) for c, name in enumerate(STRUCTURE_NAMES)}}
            for i, uid in enumerate(test.uids)
        ]
    return EvaluationResult(
        run_id=run_id,
        dataset_version=str(version),
        images=len(test),
        dice=dice,
        dice_mean=mean,
        per_image=table,
    )
