"""What a batch holds: every listed file, its role (image, label, truth) and the image it pairs with."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from orthoseg.batch_layout import FileRole, file_role
from orthoseg.storage import ObjectInfo, ObjectStore

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class InputFile:
    """One listed object of the batch, as the store reports it (nothing read yet).

    Attributes:
        key: key relative to the batch source ('/'-separated); also its path under ``quarantine/<batch>/``.
        size_bytes: listed size (0 for links, which are never followed).
        is_link: a symbolic link in a local folder.
        role: ``batch_layout.file_role``: 'image' (a radiograph candidate), 'label', 'truth' or 'other'.
        uid: for labels and truth, the SOPInstanceUID their path names ('' when the path names none).
        label_format: 'seg' for ``labels/<uid>.dcm``, 'png' for ``labels/<uid>/<structure>.png``, else ''.
    """

    key: str
    size_bytes: int
    is_link: bool
    role: FileRole
    uid: str = ""
    label_format: str = ""


@dataclass
class Inventory:
    """The batch's files grouped for pairing.

    Attributes:
        files: every listed file, in key order (the accounting reference).
        images: image candidates.
        labels_by_uid: label files by the SOPInstanceUID in their path.
        truth_by_uid: truth JSON files by the SOPInstanceUID in their path.
        unpaired: label or truth files whose path names no image (orphans whatever the images say).
        others: files that are no radiograph by their name (hidden files, reports, pictures, notes).
    """

    files: list[InputFile]
    images: list[InputFile] = field(default_factory=list)
    labels_by_uid: dict[str, list[InputFile]] = field(default_factory=dict)
    truth_by_uid: dict[str, list[InputFile]] = field(default_factory=dict)
    unpaired: list[InputFile] = field(default_factory=list)
    others: list[InputFile] = field(default_factory=list)


def check_source(source: ObjectStore, store: ObjectStore) -> None:
    """Refuse a source that is the store itself (its datasets, quarantine and reports are no batch).

    Raises:
        ValueError: when the source is the store root.
    """
    if source.uri.rstrip("/") == store.uri.rstrip("/"):
        raise ValueError(
            f"source {source.uri} is the whole store; give the batch folder, e.g. incoming/<batch>"
        )


def classify(key: str, size_bytes: int, is_link: bool) -> InputFile:
    """Give a listed key its role and the SOPInstanceUID its path names."""
    parts = key.split("/")
    role = file_role(key)
    if role == "label":
        if len(parts) == 2 and parts[1].lower().endswith(".dcm"):
            return InputFile(key, size_bytes, is_link, "label", parts[1][: -len(".dcm")], "seg")
        if len(parts) >= 3:
            return InputFile(key, size_bytes, is_link, "label", parts[1], "png")
        return InputFile(key, size_bytes, is_link, "label")
    if role == "truth":
        if len(parts) == 2 and parts[1].lower().endswith(".json"):
            return InputFile(key, size_bytes, is_link, "truth", parts[1][: -len(".json")])
        return InputFile(key, size_bytes, is_link, "truth")
    return InputFile(key, size_bytes, is_link, role)


def take_inventory(store: ObjectStore) -> Inventory:
    """List the batch once and group its files.

    Empty directories are not objects (S3 has no directories), so they are not inputs and are not counted;
    links (files or directories) are inputs and are refused without being followed.
    """
    infos: Iterable[ObjectInfo] = store.list_info("")  # (the Protocol's `list` method confuses mypy)
    listed = [classify(info.key, info.size_bytes, info.is_link) for info in infos]
    inventory = Inventory(files=listed)
    labels: dict[str, list[InputFile]] = defaultdict(list)
    truth: dict[str, list[InputFile]] = defaultdict(list)
    for item in listed:
        if item.role == "image":
            inventory.images.append(item)
        elif item.role == "other":
            inventory.others.append(item)
        elif not item.uid:
            inventory.unpaired.append(item)
        elif item.role == "label":
            labels[item.uid].append(item)
        else:
            truth[item.uid].append(item)
    inventory.labels_by_uid = dict(labels)
    inventory.truth_by_uid = dict(truth)
    logger.info(
        "batch lists %d files: %d image candidates, %d label files, %d truth files",
        len(listed),
        len(inventory.images),
        sum(len(v) for v in labels.values()) + sum(1 for f in inventory.unpaired if f.role == "label"),
        sum(len(v) for v in truth.values()) + sum(1 for f in inventory.unpaired if f.role == "truth"),
    )
    return inventory
