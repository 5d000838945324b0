"""The layout of a batch folder, and the one rule for which of its files are radiographs.

A batch holds radiographs (DICOM), their labels under ``labels/`` (``<SOPInstanceUID>.dcm`` SEG or
``<SOPInstanceUID>/<structure>.png``) and their ground truth under ``truth/<SOPInstanceUID>.json``;
radiographs may sit in ``images/`` or anywhere else outside those two folders. Validation judges each
radiograph and quarantines every other file with its reason; inference reads the radiographs (and, given
a whole archive folder, ignores the rest).
"""

from __future__ import annotations

import posixpath
from typing import Literal

FileRole = Literal["image", "label", "truth", "other"]
IMAGES_DIR = "images"
LABELS_DIR = "labels"
TRUTH_DIR = "truth"
# Names that are never radiographs: reports, ground truth, masks or snapshots exported as pictures, notes.
NOT_RADIOGRAPH_SUFFIXES = (
    ".json",
    ".png",
    ".jpg",
    ".jpeg",
    ".parquet",
    ".html",
    ".txt",
    ".md",
    ".csv",
    ".npz",
)


def file_role(relative_key: str) -> FileRole:
    """What a file of a batch is, from its key relative to the batch folder ('/'-separated).

    ``label`` and ``truth`` for files under ``labels/`` and ``truth/``; ``other`` for hidden files and
    names that are never radiographs (``NOT_RADIOGRAPH_SUFFIXES``); ``image`` (a radiograph candidate,
    whatever its suffix: archives hold DICOM files without one) for the rest.
    """
    parts = relative_key.split("/")
    if len(parts) >= 2 and parts[0] == LABELS_DIR:
        return "label"
    if len(parts) >= 2 and parts[0] == TRUTH_DIR:
        return "truth"
    name = parts[-1]
    if name.startswith(".") or name.lower().endswith(NOT_RADIOGRAPH_SUFFIXES):
        return "other"
    return "image"


def radiograph_keys(keys: list[str], prefix: str = "") -> list[str]:
    """The radiograph candidates among ``keys`` (relative to ``prefix``), sorted: those in the batch's
    ``images/`` folder when it has one, else every key whose role is ``image``."""
    base = prefix.strip("/")

    def relative(key: str) -> str:
        return key[len(base) + 1 :] if base and key.startswith(base + "/") else key

    candidates = [k for k in keys if file_role(relative(k)) == "image"]
    in_images = [k for k in candidates if relative(k).startswith(IMAGES_DIR + "/")]
    return sorted(in_images or candidates)


def not_radiograph_reason(relative_key: str) -> str:
    """Why a file of role ``other`` is not taken for a radiograph (a sentence for its quarantine reason)."""
    name = posixpath.basename(relative_key)
    if name.startswith("."):
        return f"{name} is a hidden file"
    suffix = posixpath.splitext(name)[1]
    return f"a {suffix} file is a report, a picture or notes, not a radiograph (DICOM)"
