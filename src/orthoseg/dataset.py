"""Dataset versions written by validation: the manifest, its splits, and one example decoded.

Training reads whole splits through the sharded canvas cache in the store (``orthoseg.canvas_cache``);
``load_split`` decodes a small split straight into memory (tests, notebooks, quick checks).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from orthoseg.dataset_version import latest_dataset_version, latest_key, load_manifest, manifest_key
from orthoseg.labels import NUM_STRUCTURES
from orthoseg.settings import PreprocessConfig
from orthoseg.storage import ObjectStore, store_from_settings

if TYPE_CHECKING:
    import pandas as pd

    from orthoseg.radiograph import Radiograph
    from orthoseg.settings import Settings

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


class DatasetError(ValueError):
    """A dataset version that cannot be used for training or evaluation; the message says why."""


@dataclass(frozen=True)
class CanvasDataset:
    """One split of a dataset version on the network's canvas.

    Attributes:
        image: (N, 1, S, S) float32 canvases in [0, 1].
        masks: (N, C, S, S) uint8 masks (0/1) in label-contract channel order; channels overlap.
        uids: SOPInstanceUIDs, one per row.
    """

    image: np.ndarray
    masks: np.ndarray
    uids: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.uids)

    @property
    def structures_present(self) -> np.ndarray:
        """(C,) bool: which structures appear in at least one ground-truth mask of the split."""
        if len(self) == 0:
            return np.zeros(self.masks.shape[1] if self.masks.ndim == 4 else NUM_STRUCTURES, dtype=bool)
        return np.asarray(self.masks.reshape(self.masks.shape[0], self.masks.shape[1], -1).any(axis=(0, 2)))


def resolve_dataset_version(settings: Settings, dataset_version: str | None) -> str:
    """``dataset_version`` itself, or the newest version (``datasets/LATEST``) when it is None.

    Raises:
        DatasetError: when no version is given and the store has no ``datasets/LATEST``.
    """
    if dataset_version:
        return dataset_version
    store = store_from_settings(settings)
    latest = latest_dataset_version(store)
    if latest is None:
        raise DatasetError(
            f"no dataset version given and no {latest_key()} in {store.uri}; validate a batch first"
        )
    return latest


def read_manifest(store: ObjectStore, dataset_version: str) -> pd.DataFrame:
    """The manifest of a dataset version (columns as in docs/contracts.md).

    Raises:
        DatasetError: when the version has no manifest.
    """
    key = manifest_key(dataset_version)
    if not store.exists(key):
        raise DatasetError(f"dataset version {dataset_version!r} has no {key} in {store.uri}")
    return load_manifest(store, dataset_version)


def labelled_split_rows(manifest: pd.DataFrame, split: str, dataset_version: str) -> pd.DataFrame:
    """The manifest rows of one split, sorted by SOPInstanceUID, all of them labelled.

    Raises:
        DatasetError: for an unknown split or rows without labels.
    """
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    rows = manifest[manifest["split"] == split].sort_values("sop_instance_uid")
    unlabelled = rows["label_key"].isna()
    if unlabelled.any():
        raise DatasetError(
            f"dataset {dataset_version!r} split {split!r} has {int(unlabelled.sum())} rows without labels; "
            "training and evaluation need a labelled (purpose=training) dataset"
        )
    return rows


def rows_of_uids(rows: pd.DataFrame, sop_instance_uids: Iterable[str], where: str) -> pd.DataFrame:
    """The ``rows`` whose SOPInstanceUID is listed (a frozen benchmark list), in their order.

    Raises:
        DatasetError: when a listed UID is not among ``rows``; ``where`` names them in the message.
    """
    wanted = {str(uid) for uid in sop_instance_uids}
    present = rows["sop_instance_uid"].astype(str)
    missing = wanted - set(present)
    if missing:
        raise DatasetError(
            f"{len(missing)} of the {len(wanted)} listed images are not in {where} "
            f"(first: {sorted(missing)[0]})"
        )
    return rows[present.isin(wanted)]


def read_native_example(store: ObjectStore, image_key: str, label_key: str) -> tuple[Radiograph, np.ndarray]:
    """One radiograph and its SEG masks on the radiograph's own grid: (radiograph, (C, H, W) bool).

    Raises:
        DatasetError: when the SEG does not reference the radiograph or its size differs.
    """
    from orthoseg.radiograph import read_radiograph
    from orthoseg.seg_io import read_seg_masks

    radiograph = read_radiograph(store.get_bytes(image_key))
    masks, referenced_uid = read_seg_masks(store.get_bytes(label_key))
    if referenced_uid != radiograph.sop_instance_uid:
        raise DatasetError(f"{label_key} references {referenced_uid}, not the image {image_key}")
    if masks.shape[1:] != radiograph.pixels.shape:
        raise DatasetError(f"{label_key} is {masks.shape[1:]} but {image_key} is {radiograph.pixels.shape}")
    return radiograph, masks


def decode_example(
    store: ObjectStore, image_key: str, label_key: str, preprocess: PreprocessConfig
) -> tuple[np.ndarray, np.ndarray]:
    """One radiograph and its SEG on the training canvas: ((S, S) float32 image, (C, S, S) bool masks).

    A film larger than the canvas at the configured spacing is placed on an extended canvas (as
    inference does) and cut to the ``S`` square around its labelled anatomy, so bones keep the scale
    the network sees at inference.

    Raises:
        DatasetError: when the SEG does not reference the radiograph or its size differs.
    """
    image, masks, _ = decode_training_strip(store, image_key, label_key, preprocess, context_rows=0)
    return image, masks


def decode_training_strip(
    store: ObjectStore, image_key: str, label_key: str, preprocess: PreprocessConfig, context_rows: int
) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """One radiograph and its SEG as a training strip (``orthoseg.preprocessing.training_strip``): the
    anatomy-centred ``S`` window plus ``context_rows`` of film above and below it, and the strip's rows
    that hold canvas.

    Raises:
        DatasetError: when the SEG does not reference the radiograph or its size differs.
    """
    from orthoseg.preprocessing import masks_to_canvas, preprocess_radiograph, training_strip

    radiograph, masks = read_native_example(store, image_key, label_key)
    canvas, transform = preprocess_radiograph(radiograph.pixels, radiograph.pixel_spacing_mm, preprocess)
    canvas_masks = masks_to_canvas(masks, transform)
    image, strip_masks, valid_rows = training_strip(canvas, canvas_masks, preprocess.canvas_px, context_rows)
    return np.ascontiguousarray(image), np.ascontiguousarray(strip_masks), valid_rows


def load_split(
    settings: Settings,
    dataset_version: str | None,
    split: str,
    preprocess: PreprocessConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> CanvasDataset:
    """A split of a dataset version as canvas arrays in memory (small splits; training streams the
    canvas cache instead).

    Args:
        settings: store and the default preprocessing.
        dataset_version: version written by validation; None means the newest (``datasets/LATEST``).
        split: ``train``, ``val`` or ``test``.
        preprocess: canvas settings; default ``settings.preprocess``. Evaluation passes the model's own.
        progress: called as ``(done, total)`` while images are decoded.

    Returns:
        The split, rows sorted by SOPInstanceUID (possibly empty).

    Raises:
        DatasetError: for an unknown split, a missing manifest, or rows without labels.
    """
    preprocess = preprocess or settings.preprocess
    version = resolve_dataset_version(settings, dataset_version)
    store = store_from_settings(settings)
    rows = labelled_split_rows(read_manifest(store, version), split, version)
    uids = tuple(str(u) for u in rows["sop_instance_uid"])
    side = preprocess.canvas_px
    images = np.zeros((len(uids), 1, side, side), dtype=np.float32)
    masks = np.zeros((len(uids), NUM_STRUCTURES, side, side), dtype=np.uint8)
    logger.info("Decoding %d %s images of dataset %s onto a %d px canvas", len(uids), split, version, side)
    for index, (image_key, label_key) in enumerate(zip(rows["image_key"], rows["label_key"], strict=True)):
        canvas, canvas_masks = decode_example(store, str(image_key), str(label_key), preprocess)
        images[index, 0] = canvas
        masks[index] = canvas_masks
        if progress is not None:
            progress(index + 1, len(uids))
    return CanvasDataset(image=images, masks=masks, uids=uids)
