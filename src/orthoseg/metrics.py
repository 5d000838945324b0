"""Segmentation scores on the native image grid: Dice, HD95 in millimetres, and their summaries.

Pure functions (arrays in, numbers out), usable without MLflow or a store, so evaluation, the real-film
check and benchmarks score the same way.

Conventions, per image and structure:

- Dice: a structure absent from both prediction and ground truth scores 1.0 (the model correctly found
  nothing); present in only one scores 0.0.
- HD95: the symmetric 95th-percentile Hausdorff distance between the two mask boundaries in mm (MONAI's
  ``compute_hausdorff_distance``: the larger of the two directed 95th percentiles). Absent from both:
  not scored (NaN). Present in only one: a miss (``inf``), which summaries count instead of averaging.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from orthoseg.labels import STRUCTURE_NAMES

if TYPE_CHECKING:
    import torch

HD_PERCENTILE = 95.0


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


def summarize_dice(
    per_image: np.ndarray, present: np.ndarray, names: Sequence[str] = STRUCTURE_NAMES
) -> tuple[dict[str, float], float]:
    """Per-structure mean Dice and their mean, over the structures present in the ground truth.

    A structure no ground-truth mask of the split contains (e.g. cement in an all-uncemented test set)
    would score 1.0 for a silent model and says nothing about it, so it is left out of both.

    Args:
        per_image: (N, C) Dice per image and structure (``dice_per_image``).
        present: (C,) bool, structures present in at least one ground-truth mask.
        names: structure name of each channel.

    Returns:
        ``{structure: mean Dice}`` for present structures, and their mean (NaN when none is present).
    """
    per_image = np.asarray(per_image, dtype=np.float64)
    per_structure = per_image.mean(axis=0) if per_image.shape[0] else np.full(per_image.shape[1], np.nan)
    dice = {name: float(per_structure[c]) for c, name in enumerate(names) if present[c]}
    mean = float(np.mean(list(dice.values()))) if dice else float("nan")
    return dice, mean


def hd95_mm(pred: np.ndarray, truth: np.ndarray, spacing_mm: tuple[float, float]) -> float:
    """Symmetric 95th-percentile Hausdorff distance of two 2-D masks' boundaries, in mm.

    Args:
        pred: (H, W) binary prediction.
        truth: (H, W) binary ground truth.
        spacing_mm: (row, column) pixel spacing.

    Returns:
        The distance in mm; NaN when both masks are empty (not scored), ``inf`` when exactly one is
        (a miss).

    Raises:
        ValueError: when the shapes differ or a spacing is not positive.
    """
    pred_b, truth_b = np.asarray(pred, dtype=bool), np.asarray(truth, dtype=bool)
    if pred_b.shape != truth_b.shape or pred_b.ndim != 2:
        raise ValueError(f"need two 2-D masks of the same shape; got {pred_b.shape} and {truth_b.shape}")
    if not (spacing_mm[0] > 0 and spacing_mm[1] > 0):
        raise ValueError(f"pixel spacing must be positive; got {spacing_mm}")
    has_pred, has_truth = bool(pred_b.any()), bool(truth_b.any())
    if not has_pred and not has_truth:
        return math.nan
    if has_pred != has_truth:
        return math.inf
    from monai.metrics import compute_hausdorff_distance

    with warnings.catch_warnings():
        # MONAI 1.5+ warns about its own internal use of a deprecated argument of get_mask_edges.
        warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*", category=FutureWarning)
        # MONAI crops to the union's bounding box and queries a KD-tree over boundary pixels only.
        distance = compute_hausdorff_distance(
            pred_b[None, None],
            truth_b[None, None],
            include_background=True,
            percentile=HD_PERCENTILE,
            spacing=(float(spacing_mm[0]), float(spacing_mm[1])),
        )
    return float(distance.reshape(-1)[0])


def score_native(
    pred_masks: np.ndarray,
    true_masks: np.ndarray,
    spacing_mm: tuple[float, float],
    names: Sequence[str] = STRUCTURE_NAMES,
) -> dict[str, dict[str, Any]]:
    """Dice and HD95 of one image's predicted masks against its ground truth, on the same grid.

    Args:
        pred_masks: (C, H, W) binary prediction, one channel per name in ``names``.
        true_masks: (C, H, W) binary ground truth.
        spacing_mm: (row, column) pixel spacing of the grid.
        names: structure name of each channel (default: the label contract).

    Returns:
        ``{"dice": {name: float}, "hd95_mm": {name: float}, "truth_present": {name: bool},
        "pred_present": {name: bool}}``; HD95 is NaN when not scored and ``inf`` for a miss.

    Raises:
        ValueError: when the shapes differ or do not match ``names``.
    """
    import torch

    pred = np.asarray(pred_masks, dtype=bool)
    truth = np.asarray(true_masks, dtype=bool)
    if pred.shape != truth.shape or pred.ndim != 3 or pred.shape[0] != len(names):
        raise ValueError(
            f"need (C, H, W) masks with C={len(names)} of equal shape; got {pred.shape} and {truth.shape}"
        )
    dice = dice_per_image(torch.from_numpy(pred[None]), torch.from_numpy(truth[None]))[0].numpy()
    return {
        "dice": {name: float(dice[c]) for c, name in enumerate(names)},
        "hd95_mm": {name: hd95_mm(pred[c], truth[c], spacing_mm) for c, name in enumerate(names)},
        "truth_present": {name: bool(truth[c].any()) for c, name in enumerate(names)},
        "pred_present": {name: bool(pred[c].any()) for c, name in enumerate(names)},
    }


def image_dice_mean(score: dict[str, dict[str, Any]]) -> float:
    """Mean Dice of one image over the structures in its ground truth or its prediction (1.0 if none).

    Used to rank images (worst cases first): a structure invented on an image counts against it.
    """
    values = [
        score["dice"][name]
        for name in score["dice"]
        if score["truth_present"][name] or score["pred_present"][name]
    ]
    return float(np.mean(values)) if values else 1.0


def summarize_hd95(
    per_image: np.ndarray, names: Sequence[str] = STRUCTURE_NAMES
) -> tuple[dict[str, float], float, dict[str, int]]:
    """Mean HD95 per structure over the images where it is finite, their mean, and misses per structure.

    Args:
        per_image: (N, C) HD95 in mm per image and structure (NaN not scored, ``inf`` a miss).
        names: structure name of each channel.

    Returns:
        ``{structure: mean HD95 mm}`` for structures with at least one finite value, the mean of those
        (NaN when there is none), and ``{structure: images where only one of prediction and truth had
        it}`` for every structure.
    """
    per_image = np.asarray(per_image, dtype=np.float64).reshape(-1, len(names))
    finite = np.isfinite(per_image)
    hd95: dict[str, float] = {}
    for c, name in enumerate(names):
        if finite[:, c].any():
            hd95[name] = float(per_image[finite[:, c], c].mean())
    mean = float(np.mean(list(hd95.values()))) if hd95 else float("nan")
    missing = {name: int(np.isinf(per_image[:, c]).sum()) for c, name in enumerate(names)}
    return hd95, mean, missing


def group_dice(
    per_image: np.ndarray,
    truth_present: np.ndarray,
    groups: Sequence[str],
    names: Sequence[str] = STRUCTURE_NAMES,
) -> dict[str, dict[str, float]]:
    """``summarize_dice`` within each group of images (implant category, view, ...).

    Each group is summarised over the structures present in its own ground truth, so a group of native
    knees is not credited 1.0 for the implant it does not have.

    Args:
        per_image: (N, C) Dice per image and structure.
        truth_present: (N, C) bool, structure present in the image's ground truth.
        groups: the group name of each image (N names).
        names: structure name of each channel.

    Returns:
        ``{group: {structure: mean Dice, ..., "dice_mean": mean, "images": count}}``, groups sorted by
        name; ``dice_mean`` is left out when the group's ground truth holds no structure.
    """
    per_image = np.asarray(per_image, dtype=np.float64).reshape(-1, len(names))
    truth_present = np.asarray(truth_present, dtype=bool).reshape(-1, len(names))
    labels = np.asarray(list(groups), dtype=object)
    if labels.shape[0] != per_image.shape[0]:
        raise ValueError(f"{labels.shape[0]} group names for {per_image.shape[0]} images")
    summary: dict[str, dict[str, float]] = {}
    for group in sorted({str(g) for g in labels}):
        rows = labels == group
        dice, mean = summarize_dice(per_image[rows], truth_present[rows].any(axis=0), names)
        entry: dict[str, float] = dict(dice)
        if math.isfinite(mean):
            entry["dice_mean"] = mean
        entry["images"] = float(rows.sum())
        summary[group] = entry
    return summary
