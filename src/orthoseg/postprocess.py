"""Clean a network's per-structure probabilities before they become masks: drop stray fragments.

A segmentation network occasionally paints a small blob of "femur" in the soft tissue or "cement" far
from any implant. Such blobs cost little Dice but wreck distances (HD95) and the measurements built on
the masks (axes, zones). The rules are anatomical and cheap, applied on the canvas before masks are
restored to the native grid, and saved with every model (``model.json``), so inference and evaluation
clean masks the same way:

- per structure, connected components smaller than ``min_component_fraction`` of that structure's
  largest component are dropped (a standing film of both knees keeps both femurs: they are alike);
- implant component pieces smaller than ``min_implant_piece_mm2`` are dropped: the smallest real
  component (a UKA tray seen edge-on) covers a few hundred square millimetres, while a network unsure of
  a native knee scatters specks of "component" over dense bone;
- cement farther than ``cement_max_distance_mm`` from any predicted implant component is dropped
  (cement only exists against an implant);
- a piece of a structure on the wrong side of the knee joint is dropped: tibia, fibula or tibial
  component lying wholly above the joint, femur, patella or femoral component wholly below it (a long
  revision stem far from the joint is easily taken for its opposite number);
- a piece of femoral or tibial component is kept only when it comes within ``component_joint_reach_mm``
  of the joint, or lies within ``component_gap_mm`` of a kept piece: a knee component bears on the
  joint and a stem or keel hangs from it (even where the mask breaks between them), while dense bone
  that a network takes for metal (the patella over a native femur, a shaft far up) lies well away;
- on the native grid, nothing is kept in the collimator's shadow along the film's edges
  (``orthoseg.measure.field``): no anatomy shows through a shutter, and a network that has not seen a
  shutter's bar may call it bone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from orthoseg.labels import STRUCTURE_NAMES

if TYPE_CHECKING:
    from orthoseg.measure.field import FieldEstimate
    from orthoseg.preprocessing import CanvasTransform

_CEMENT = STRUCTURE_NAMES.index("cement")
_COMPONENTS = (STRUCTURE_NAMES.index("femoral_component"), STRUCTURE_NAMES.index("tibial_component"))
_FEMORAL_SIDE = tuple(STRUCTURE_NAMES.index(n) for n in ("femur", "patella", "femoral_component"))
_TIBIAL_SIDE = tuple(STRUCTURE_NAMES.index(n) for n in ("tibia", "fibula", "tibial_component"))
_FEMORAL_BODY = (STRUCTURE_NAMES.index("femur"), STRUCTURE_NAMES.index("femoral_component"))
_TIBIAL_BODY = (STRUCTURE_NAMES.index("tibia"), STRUCTURE_NAMES.index("tibial_component"))


class PostprocessConfig(BaseModel):
    """How probabilities are cleaned before thresholding.

    Attributes:
        enabled: False keeps the network's output as it is.
        min_component_fraction: components smaller than this fraction of the structure's largest
            component are removed (every structure but cement).
        cement_max_distance_mm: cement pixels farther than this from a predicted implant component are
            removed.
        clear_collimated_borders: masks are emptied in the collimator's shadow found along each edge of
            the film (needs the film's pixels).
        min_implant_piece_mm2: femoral or tibial component pieces smaller than this area (mm²) are
            removed (0 keeps them).
        joint_side_margin_mm: a connected piece of a tibial-side structure whose lowest point lies more
            than this above the knee joint is removed, and a femoral-side piece whose highest point lies
            more than this below it (mm along the femur-tibia direction; 0 disables the rule).
        component_joint_reach_mm: a piece of femoral (tibial) component is kept when its lowest
            (highest) point lies within this of the knee joint (mm along the femur-tibia direction; 0
            disables the rule). The joint lies halfway across the gap between the femoral and the
            tibial bodies, so a real component comes within about half an insert's thickness.
        component_gap_mm: a component piece that does not reach the joint is still kept when it lies
            within this of a kept piece (a stem the mask broke off its tray), step by step along a
            chain of pieces; the other pieces are removed.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    min_component_fraction: float = Field(default=0.1, ge=0.0, le=1.0)
    cement_max_distance_mm: float = Field(default=5.0, gt=0.0)
    clear_collimated_borders: bool = True
    min_implant_piece_mm2: float = Field(default=30.0, ge=0.0)
    joint_side_margin_mm: float = Field(default=20.0, ge=0.0)
    component_joint_reach_mm: float = Field(default=25.0, ge=0.0)
    component_gap_mm: float = Field(default=10.0, ge=0.0)


def clean_probabilities(
    probabilities: np.ndarray, threshold: float, spacing_mm: float, config: PostprocessConfig
) -> np.ndarray:
    """Probabilities with stray fragments set to zero; the rest unchanged.

    Args:
        probabilities: (C, H, W) per-structure probabilities in label-contract order (a canvas).
        threshold: probability at or above which a pixel belongs to a structure.
        spacing_mm: size of one pixel of ``probabilities`` (isotropic), for the cement distance.
        config: the cleaning rules.

    Returns:
        A cleaned copy (float32).
    """
    from scipy import ndimage

    cleaned = np.array(probabilities, dtype=np.float32, copy=True)
    if not config.enabled:
        return cleaned
    masks = cleaned >= threshold
    for channel in range(cleaned.shape[0]):
        if channel == _CEMENT or not masks[channel].any():
            continue
        labels, count = ndimage.label(masks[channel], structure=np.ones((3, 3), dtype=bool))
        if count <= 1 and channel not in _COMPONENTS:
            continue
        sizes = np.bincount(labels.ravel())[1:]
        small = np.flatnonzero(sizes < config.min_component_fraction * sizes.max()) + 1
        if channel in _COMPONENTS:
            small = np.union1d(
                small, np.flatnonzero(sizes * spacing_mm**2 < config.min_implant_piece_mm2) + 1
            )
        if small.size:
            drop = np.isin(labels, small)
            cleaned[channel][drop] = 0.0
            masks[channel][drop] = False
    if config.joint_side_margin_mm > 0 or config.component_joint_reach_mm > 0:
        drop_wrong_side_of_joint(
            cleaned,
            masks,
            config.joint_side_margin_mm / spacing_mm,
            config.component_joint_reach_mm / spacing_mm,
            config.component_gap_mm / spacing_mm,
        )
    if masks[_CEMENT].any():
        # np.asarray: numpy's stubs say any(axis=0) may be a scalar; over the channels it is always an array.
        implant = np.asarray(masks[list(_COMPONENTS)].any(axis=0))
        if not implant.any():
            cleaned[_CEMENT][masks[_CEMENT]] = 0.0
        else:
            distance_mm = ndimage.distance_transform_edt(~implant) * spacing_mm
            cleaned[_CEMENT][masks[_CEMENT] & (distance_mm > config.cement_max_distance_mm)] = 0.0
    return cleaned


def _largest_piece(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    labels, count = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    if count <= 1:
        return mask
    return labels == 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))


def _nearest_large_piece(mask: np.ndarray, point: np.ndarray, min_fraction: float = 0.3) -> np.ndarray:
    """The piece of ``mask`` whose centroid lies nearest ``point`` (row, column), among the pieces of at
    least ``min_fraction`` of the largest one's area."""
    from scipy import ndimage

    labels, count = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    if count <= 1:
        return mask
    index = np.arange(1, count + 1)
    sizes = np.bincount(labels.ravel())[1:]
    centroids = np.asarray(ndimage.center_of_mass(mask, labels, index), dtype=np.float64).reshape(-1, 2)
    distance = np.hypot(*(centroids - point).T)
    distance[sizes < min_fraction * sizes.max()] = np.inf
    return labels == 1 + int(np.argmin(distance))


def knee_joint_frame(masks: np.ndarray) -> tuple[np.ndarray, float] | None:
    """The femur-ward unit direction (row, column) and the joint's level along it (pixels), from the
    largest piece of femur-or-femoral-component and the piece of tibia-or-tibial-component nearest it
    (of the large ones: on a film of both knees, the same knee's, not the other knee's larger tibia);
    None without both.

    The level is halfway between the femoral body's lowest 1 % and the tibial body's highest 1 %.
    """
    # np.asarray: numpy's stubs say any(axis=0) may be a scalar; over the channels it is always an array.
    femoral = _largest_piece(np.asarray(masks[list(_FEMORAL_BODY)].any(axis=0)))
    if not femoral.any():
        return None
    femoral_points = np.argwhere(femoral).astype(np.float64)
    tibial_body = np.asarray(masks[list(_TIBIAL_BODY)].any(axis=0))
    tibial = _nearest_large_piece(tibial_body, femoral_points.mean(axis=0))
    if not tibial.any():
        return None
    tibial_points = np.argwhere(tibial).astype(np.float64)
    up = femoral_points.mean(axis=0) - tibial_points.mean(axis=0)
    length = float(np.hypot(*up))
    if length < 1.0:
        return None
    up /= length
    level = 0.5 * (np.percentile(femoral_points @ up, 1) + np.percentile(tibial_points @ up, 99))
    return up, float(level)


def drop_wrong_side_of_joint(
    cleaned: np.ndarray,
    masks: np.ndarray,
    margin_px: float,
    component_reach_px: float = 0.0,
    component_gap_px: float = 0.0,
) -> None:
    """Zero (in ``cleaned`` and ``masks``, in place) every connected piece of a tibial-side structure
    whose lowest point lies more than ``margin_px`` above the joint, every femoral-side piece whose
    highest point lies more than ``margin_px`` below it, and every piece of femoral (tibial) component
    that neither has its lowest (highest) point within ``component_reach_px`` above (below) it nor is
    chained to such a piece by pieces each within ``component_gap_px`` of the next
    (``knee_joint_frame``; 0 disables either rule)."""
    from scipy import ndimage

    frame = knee_joint_frame(masks)
    if frame is None:
        return
    up, level = frame
    rows, cols = np.indices(masks.shape[-2:], dtype=np.float64)
    above_joint = rows * up[0] + cols * up[1] - level
    for channels, wrong in ((_TIBIAL_SIDE, 1.0), (_FEMORAL_SIDE, -1.0)):
        for channel in channels:
            if not masks[channel].any():
                continue
            labels, count = ndimage.label(masks[channel], structure=np.ones((3, 3), dtype=bool))
            # How far past the joint, toward the wrong side, each piece's nearest point lies.
            nearest = np.asarray(ndimage.minimum(wrong * above_joint, labels, np.arange(1, count + 1)))
            wrong_pieces = np.flatnonzero(nearest > margin_px) + 1 if margin_px > 0 else np.array([], int)
            if channel in _COMPONENTS and component_reach_px > 0:
                # How far from the joint, on the component's own side, each piece comes closest to it.
                closest = np.asarray(ndimage.minimum(-wrong * above_joint, labels, np.arange(1, count + 1)))
                away = _pieces_off_the_chain(labels, count, closest <= component_reach_px, component_gap_px)
                wrong_pieces = np.union1d(wrong_pieces, away).astype(int)
            if wrong_pieces.size:
                drop = np.isin(labels, wrong_pieces)
                cleaned[channel][drop] = 0.0
                masks[channel][drop] = False


def _pieces_off_the_chain(labels: np.ndarray, count: int, anchored: np.ndarray, gap_px: float) -> np.ndarray:
    """Labels (1-based) of the pieces neither ``anchored`` nor linked to an anchored piece by a chain of
    pieces each within ``gap_px`` of the next."""
    from scipy import ndimage

    kept = np.asarray(anchored, dtype=bool).copy()
    while kept.any() and not kept.all():
        distance = ndimage.distance_transform_edt(~np.isin(labels, np.flatnonzero(kept) + 1))
        near = np.asarray(ndimage.minimum(distance, labels, np.arange(1, count + 1))) <= gap_px
        if not (near & ~kept).any():
            break
        kept |= near
    return np.flatnonzero(~kept) + 1


def clear_collimated_borders(
    masks: np.ndarray, pixels: np.ndarray, field: FieldEstimate | None = None
) -> np.ndarray:
    """``masks`` (C, H, W) with every structure emptied in the collimator's shadow of ``pixels`` (H, W):
    the shutters' straight edges, tilted or not, and any oblique corner cut (``orthoseg.measure.field``;
    ``field``: that detection when the caller made it already)."""
    from orthoseg.measure.field import detect_field

    field = field if field is not None else detect_field(pixels)
    if field.collimated and field.shape == tuple(masks.shape[-2:]):
        masks[..., field.shadow()] = False
    return masks


def native_masks(
    probabilities: np.ndarray,
    transform: CanvasTransform,
    threshold: float,
    config: PostprocessConfig,
    pixels: np.ndarray | None = None,
    field: FieldEstimate | None = None,
) -> np.ndarray:
    """(C, H, W) boolean masks on the film's own grid from one canvas's (C, S, S) probabilities: cleaned on
    the canvas, restored to the native grid, thresholded, and (given the film's ``pixels``) emptied in
    the collimator's shadow (``field``: ``detect_field(pixels)`` when the caller has it, so that a film's
    field is found once for its masks and its measurements). Inference and evaluation both call this."""
    from orthoseg.preprocessing import restore_to_native

    cleaned = clean_probabilities(probabilities, threshold, transform.canvas_spacing_mm, config)
    masks = restore_to_native(cleaned, transform) >= threshold
    if config.enabled and config.clear_collimated_borders and pixels is not None:
        masks = clear_collimated_borders(masks, pixels, field)
    return masks
