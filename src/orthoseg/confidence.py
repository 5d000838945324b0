"""How sure the network is of one film: agreement of its masks under a few test-time augmentations.

A measurement is only as good as the masks it is taken from, and a network's probabilities alone say
little about how stable its masks are. Each film is therefore predicted ``passes`` times on its canvas,
each pass under one augmentation that keeps the label contract (identity, left-right mirror — channels
are structures, not sides, ``orthoseg.labels`` and training's ``flip_probability`` — a small intensity
gamma, a small zoom-out about the canvas centre; all inside what training randomises,
``orthoseg.augment.AugmentConfig``). Every pass's probabilities are mapped back onto the original canvas
(mirror undone, zoom undone), and:

- the reported masks come from the mean probability over the passes, cleaned and thresholded as the
  model does (``SegmentationModel.native_masks``), so the native grid is reached once per film;
- a structure's confidence is the mean Dice, on the canvas, of each pass's mask (cleaned and
  thresholded the same way) against the consensus mask; it is scored only for structures the consensus
  holds (1.0: every pass drew the same mask; 0.0 for a pass that lost the structure);
- the image's confidence is the minimum over ``ConfidenceConfig.image_structures`` (femur, tibia and the
  implant components) that the consensus holds: every measurement hangs on one of them (axes, component
  angles, zones), so one doubtful structure makes the film's measurements doubtful, and a mean would let
  a large, easy femur hide a doubtful component.

``passes=1`` is exactly today's prediction and carries no confidence (None).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from orthoseg.labels import STRUCTURE_NAMES

if TYPE_CHECKING:
    import torch

    from orthoseg.model_package import SegmentationModel

__all__ = [
    "CanvasAugmentation",
    "ConfidenceConfig",
    "ConfidentPrediction",
    "ModelConfidence",
    "predict_canvas_with_confidence",
    "predict_with_confidence",
    "rank_annotate_next",
]


class CanvasAugmentation(BaseModel):
    """One test-time augmentation of a canvas, applied as gamma, then zoom, then mirror.

    Attributes:
        flip_columns: mirror left-right.
        gamma: intensity exponent on the [0, 1] canvas (< 1 brightens; 1 leaves it unchanged).
        scale: magnification of the canvas about its centre (< 1 shrinks the film, which then stays whole
            on the canvas; values above 1 would push film edges — the femoral shaft — off it).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    flip_columns: bool = False
    gamma: float = Field(default=1.0, ge=0.5, le=2.0)
    scale: float = Field(default=1.0, ge=0.5, le=1.0)

    @property
    def is_identity(self) -> bool:
        return not self.flip_columns and self.gamma == 1.0 and self.scale == 1.0


_DEFAULT_AUGMENTATIONS: tuple[CanvasAugmentation, ...] = (
    CanvasAugmentation(),
    CanvasAugmentation(flip_columns=True),
    CanvasAugmentation(gamma=0.8),
    CanvasAugmentation(scale=0.9),
    CanvasAugmentation(flip_columns=True, gamma=1.25),
    CanvasAugmentation(flip_columns=True, scale=0.9),
    CanvasAugmentation(gamma=1.25, scale=0.9),
    CanvasAugmentation(flip_columns=True, gamma=0.8, scale=0.9),
)


class ConfidenceConfig(BaseModel):
    """Which augmentations the passes use and which structures decide an image's confidence.

    Attributes:
        augmentations: pass ``i`` uses ``augmentations[i]``; the first must be the identity, so one pass
            is today's prediction. The default orders one of each kind first (identity, mirror, gamma,
            zoom), then combinations.
        image_structures: structures whose confidence (when present in the consensus) bounds the
            image's.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    augmentations: tuple[CanvasAugmentation, ...] = _DEFAULT_AUGMENTATIONS
    image_structures: tuple[str, ...] = ("femur", "tibia", "femoral_component", "tibial_component")

    @field_validator("augmentations")
    @classmethod
    def _identity_first(cls, value: tuple[CanvasAugmentation, ...]) -> tuple[CanvasAugmentation, ...]:
        if not value or not value[0].is_identity:
            raise ValueError(f"the first augmentation must be the identity, got {value[:1]}")
        return value

    @field_validator("image_structures")
    @classmethod
    def _known_structures(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [name for name in value if name not in STRUCTURE_NAMES]
        if unknown:
            raise ValueError(f"unknown structures {unknown}; known: {', '.join(STRUCTURE_NAMES)}")
        return value


@dataclass(frozen=True)
class ModelConfidence:
    """Agreement of the passes on one film.

    Attributes:
        structures: structure -> mean Dice in [0, 1] of the passes' masks against the consensus, for
            the structures the consensus holds (in label-contract order).
        image: minimum of ``structures`` over ``ConfidenceConfig.image_structures``; None when the
            consensus holds none of them (nothing to be confident about: the measurements flag that).
        passes: predictions that were combined.
    """

    structures: dict[str, float]
    image: float | None
    passes: int


@dataclass(frozen=True)
class ConfidentPrediction:
    """A film's masks and how much the network agreed with itself on them.

    Attributes:
        masks: (C, H, W) boolean masks on the film's own grid, label-contract order.
        confidence: None for a single pass.
    """

    masks: np.ndarray
    confidence: ModelConfidence | None

    @property
    def structure_confidence(self) -> dict[str, float] | None:
        return None if self.confidence is None else self.confidence.structures

    @property
    def image_confidence(self) -> float | None:
        return None if self.confidence is None else self.confidence.image


def _zoom(maps: torch.Tensor, scale: float) -> torch.Tensor:
    """(N, C, H, W) maps magnified by ``scale`` about the canvas centre (zeros where nothing maps)."""
    import torch
    import torch.nn.functional as F

    theta = torch.tensor([[1.0 / scale, 0.0, 0.0], [0.0, 1.0 / scale, 0.0]], dtype=maps.dtype)
    grid = F.affine_grid(theta.expand(maps.shape[0], 2, 3), list(maps.shape), align_corners=False)
    return F.grid_sample(maps, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _augment(canvases: np.ndarray, augmentation: CanvasAugmentation) -> np.ndarray:
    """(N, 1, H, W) canvases as the network sees them under ``augmentation``."""
    import torch

    out = np.asarray(canvases, dtype=np.float32)
    if augmentation.gamma != 1.0:
        out = np.power(np.clip(out, 0.0, 1.0), augmentation.gamma, dtype=np.float32)
    if augmentation.scale != 1.0:
        out = _zoom(torch.from_numpy(np.ascontiguousarray(out)), augmentation.scale).numpy()
    if augmentation.flip_columns:
        out = out[..., ::-1]
    return np.ascontiguousarray(out)


def _restore(probabilities: np.ndarray, augmentation: CanvasAugmentation) -> np.ndarray:
    """Undo ``augmentation``'s geometry on (N, C, H, W) probabilities: back on the original canvas."""
    import torch

    out = probabilities
    if augmentation.flip_columns:
        out = np.ascontiguousarray(out[..., ::-1])
    if augmentation.scale != 1.0:
        out = _zoom(torch.from_numpy(out), 1.0 / augmentation.scale).clamp_(0.0, 1.0).numpy()
    return out


def _dice(masks: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per-channel Dice of (C, H, W) masks against a (C, H, W) reference; NaN where both are empty."""
    overlap = np.logical_and(masks, reference).sum(axis=(-2, -1)).astype(np.float64)
    total = masks.sum(axis=(-2, -1)).astype(np.float64) + reference.sum(axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, 2.0 * overlap / total, np.nan)


def _image_confidence(structures: Mapping[str, float], config: ConfidenceConfig) -> float | None:
    scored = [structures[name] for name in config.image_structures if name in structures]
    return min(scored) if scored else None


def predict_canvas_with_confidence(
    model: SegmentationModel,
    canvases: np.ndarray,
    canvas_spacings_mm: Sequence[float],
    passes: int,
    config: ConfidenceConfig | None = None,
    batch_size: int = 8,
) -> tuple[np.ndarray, list[ModelConfidence] | None]:
    """Mean probabilities over ``passes`` augmented predictions of a batch of canvases, and each
    canvas's confidence.

    Args:
        model: the model (its ``predict_canvas``, ``threshold`` and post-processing are used).
        canvases: (N, 1, H, W) canvases as ``SegmentationModel.predict_canvas`` takes them.
        canvas_spacings_mm: mm per canvas pixel of each canvas (``CanvasTransform.canvas_spacing_mm``),
            for the model's post-processing distances.
        passes: predictions per canvas, using the first ``passes`` of ``config.augmentations``.
        config: augmentations and image structures.
        batch_size: canvases per forward pass.

    Returns:
        (N, C, H, W) float32 mean probabilities on the original canvases (for one pass, exactly
        ``predict_canvas``'s), and one ``ModelConfidence`` per canvas (None for one pass).

    Raises:
        ValueError: when ``passes`` is not between 1 and the number of augmentations, or the spacings do
            not match the canvases.
    """
    from orthoseg.postprocess import clean_probabilities

    config = config or ConfidenceConfig()
    if not 1 <= passes <= len(config.augmentations):
        raise ValueError(f"passes must be between 1 and {len(config.augmentations)}, got {passes}")
    if len(canvas_spacings_mm) != len(canvases):
        raise ValueError(f"{len(canvas_spacings_mm)} spacings for {len(canvases)} canvases")
    first = model.predict_canvas(canvases, batch_size=batch_size)
    if passes == 1:
        return first, None
    threshold = model.threshold
    postprocess = model.config.postprocess

    def cleaned_masks(probabilities: np.ndarray) -> np.ndarray:
        return np.stack(
            [
                clean_probabilities(p, threshold, float(s), postprocess) >= threshold
                for p, s in zip(probabilities, canvas_spacings_mm, strict=True)
            ]
        )

    total = first.astype(np.float64)
    pass_masks = [cleaned_masks(first)]
    for augmentation in config.augmentations[1:passes]:
        predicted = model.predict_canvas(_augment(canvases, augmentation), batch_size=batch_size)
        restored = _restore(predicted, augmentation)
        total += restored
        pass_masks.append(cleaned_masks(restored))
    mean = (total / passes).astype(np.float32)
    consensus = cleaned_masks(mean)
    confidences = []
    for index in range(len(canvases)):
        present = consensus[index].any(axis=(-2, -1))
        dice = np.mean([_dice(masks[index], consensus[index]) for masks in pass_masks], axis=0)
        structures = {
            name: float(np.clip(dice[channel], 0.0, 1.0))
            for channel, name in enumerate(model.structure_names)
            if present[channel]
        }
        confidences.append(ModelConfidence(structures, _image_confidence(structures, config), passes))
    return mean, confidences


def predict_with_confidence(
    model: SegmentationModel,
    pixels: np.ndarray,
    spacing_mm: tuple[float, float] | None,
    passes: int,
    config: ConfidenceConfig | None = None,
) -> ConfidentPrediction:
    """A film's native masks from ``passes`` test-time augmented predictions, with the network's
    confidence in them.

    The path of ``orthoseg.evaluation.predict_native_masks`` (the model's own preprocessing, its
    post-processing, native grid, its threshold), applied to the mean probability of the passes.

    Args:
        model: the model to run.
        pixels: (H, W) presentation values (``Radiograph.pixels``).
        spacing_mm: (row, column) spacing; None uses the fallback spacing.
        passes: predictions to combine (1: today's masks, no confidence).
        config: augmentations and image structures.

    Raises:
        ValueError: when ``passes`` is out of range.
    """
    from orthoseg.preprocessing import preprocess_radiograph

    canvas, transform = preprocess_radiograph(pixels, spacing_mm, model.preprocess)
    probabilities, confidences = predict_canvas_with_confidence(
        model, canvas[None, None], [transform.canvas_spacing_mm], passes, config, batch_size=1
    )
    masks = model.native_masks(probabilities[0], transform, pixels)
    return ConfidentPrediction(masks, None if confidences is None else confidences[0])


def rank_annotate_next(rows: Iterable[Mapping[str, Any]], count: int) -> list[str]:
    """The SOPInstanceUIDs of the ``count`` least confident images: the ones whose labels would teach the
    model most.

    Least confident first, ties broken by UID. Rows that failed (``status`` not ``ok``), have no UID or
    have no finite ``model_confidence`` (one pass, or nothing found) are left out.
    """
    ranked: list[tuple[float, str]] = []
    for row in rows:
        uid, value = row.get("sop_instance_uid"), row.get("model_confidence")
        if row.get("status") != "ok" or not uid or value is None:
            continue
        confidence = float(value)
        if math.isfinite(confidence):
            ranked.append((confidence, str(uid)))
    return [uid for _, uid in sorted(ranked)[: max(0, count)]]
