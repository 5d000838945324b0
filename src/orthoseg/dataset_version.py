"""Dataset versions: the manifest, its content hash, the patient split and the LATEST pointers.

A version is the first 12 hex digits of the SHA-256 of the canonical manifest: rows sorted by
SOPInstanceUID, each row as JSON with sorted keys, where the keys of files this version itself adds are
written as ``datasets/{version}/...`` (the version cannot be part of its own hash). Same rows, same
version; so re-validating a batch whose files are all in the dataset already yields the same version.

Datasets accumulate per purpose: a new version holds every row of the previous latest version of the
same purpose (rows keep their keys) plus the batch's new rows. ``datasets/LATEST`` names the newest
training dataset (what training uses by default); ``datasets/LATEST-inference`` the newest inference one.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from typing import Any

import pandas as pd

from orthoseg.json_values import json_scalar
from orthoseg.parquet import frame_from_parquet_bytes
from orthoseg.storage import ObjectStore, StoreError, join_key

logger = logging.getLogger(__name__)

DATASETS_PREFIX = "datasets"
VERSION_PLACEHOLDER = "{version}"
VERSION_HEX_DIGITS = 12

# The contract's columns (docs/contracts.md), then this module's additions.
MANIFEST_COLUMNS: tuple[str, ...] = (
    "sop_instance_uid",
    "image_key",
    "label_key",
    "truth_key",
    "sha256",
    "patient_pseudonym",
    "split",
    "batch",
    "rows",
    "columns",
    "pixel_spacing_row_mm",
    "pixel_spacing_col_mm",
    "photometric_interpretation",
    "view_position",
    "laterality",
    "modality",
    "transfer_syntax",
    # additions: label and truth content hashes (as received), body part, accepted-with warnings.
    "label_sha256",
    "truth_sha256",
    "body_part",
    "warnings",
)
_INT_COLUMNS = ("rows", "columns")
_FLOAT_COLUMNS = ("pixel_spacing_row_mm", "pixel_spacing_col_mm")


def latest_key(purpose: str = "training") -> str:
    """Key of the pointer to the newest dataset of ``purpose``."""
    return join_key(DATASETS_PREFIX, "LATEST" if purpose == "training" else f"LATEST-{purpose}")


def manifest_key(version: str) -> str:
    """Key of a version's manifest."""
    return join_key(DATASETS_PREFIX, version, "manifest.parquet")


def info_key(version: str) -> str:
    """Key of a version's ``dataset.json`` (purpose, parent, batches, salt fingerprint)."""
    return join_key(DATASETS_PREFIX, version, "dataset.json")


def latest_dataset_version(store: ObjectStore, purpose: str = "training") -> str | None:
    """The newest dataset version of ``purpose`` (``datasets/LATEST`` for training), or None if none."""
    try:
        text = store.get_bytes(latest_key(purpose), max_bytes=256).decode("ascii").strip()
    except StoreError:
        return None
    return text or None


def load_manifest(store: ObjectStore, version: str) -> pd.DataFrame:
    """Every row of a dataset version (columns ``MANIFEST_COLUMNS``).

    Raises:
        StoreError: when the version does not exist (no manifest).
    """
    return frame_from_parquet_bytes(store.get_bytes(manifest_key(version)))


def load_dataset_info(store: ObjectStore, version: str) -> dict[str, Any]:
    """A version's ``dataset.json``, or {} when absent."""
    try:
        return dict(json.loads(store.get_bytes(info_key(version))))
    except StoreError:
        return {}


def split_for(pseudonym: str, fractions: tuple[float, float, float]) -> str:
    """'train', 'val' or 'test' from the patient pseudonym alone: a patient never changes split."""
    position = int(hashlib.sha256(f"orthoseg-split:{pseudonym}".encode()).hexdigest()[:8], 16) / 2**32
    if position < fractions[0]:
        return "train"
    if position < fractions[0] + fractions[1]:
        return "val"
    return "test"


def normalise_manifest(frame: pd.DataFrame) -> pd.DataFrame:
    """Contract column order and dtypes, rows sorted by SOPInstanceUID (so equal content is equal bytes)."""
    frame = frame.copy()
    for column in MANIFEST_COLUMNS:
        if column not in frame.columns:
            frame[column] = None
    frame = (
        frame[list(MANIFEST_COLUMNS)].sort_values("sop_instance_uid", kind="stable").reset_index(drop=True)
    )
    for column in _INT_COLUMNS:
        frame[column] = frame[column].astype("int64")
    for column in _FLOAT_COLUMNS:
        frame[column] = frame[column].astype("float64")
    for column in MANIFEST_COLUMNS:
        if column not in _INT_COLUMNS and column not in _FLOAT_COLUMNS:
            frame[column] = frame[column].astype(object).where(frame[column].notna(), None)
    return frame


def compute_version(frame: pd.DataFrame) -> str:
    """Content hash of a manifest whose new keys still carry ``{version}``."""
    records = [
        {column: json_scalar(value) for column, value in zip(MANIFEST_COLUMNS, row, strict=True)}
        for row in normalise_manifest(frame).itertuples(index=False, name=None)
    ]
    canonical = json.dumps(records, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:VERSION_HEX_DIGITS]


def resolve_keys(frame: pd.DataFrame, version: str) -> pd.DataFrame:
    """Replace ``{version}`` in the key columns with the computed version."""
    frame = frame.copy()
    for column in ("image_key", "label_key", "truth_key"):
        if column not in frame.columns:
            continue
        frame[column] = [
            value.replace(VERSION_PLACEHOLDER, version) if isinstance(value, str) else value
            for value in frame[column]
        ]
    return frame


def manifest_bytes(frame: pd.DataFrame) -> bytes:
    """The manifest as Parquet bytes."""
    buffer = io.BytesIO()
    normalise_manifest(frame).to_parquet(buffer, index=False)
    return buffer.getvalue()
