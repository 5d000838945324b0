"""Writing one batch's verdicts: the accepted files into a new dataset version, the refused ones into
``quarantine/<batch>/`` with their reasons.

Re-running a batch rewrites nothing that is already right: the dataset version is a content hash and
every copy skips a destination that already holds the same bytes. Links and files over
``max_file_bytes`` are described in ``quarantine/`` (``.reasons.json``) but not copied: the limit exists
so that such a file is never read.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd

from orthoseg import dataset_version as ds
from orthoseg.labels import LABEL_CONTRACT_VERSION
from orthoseg.storage import ObjectStore, join_key
from orthoseg.validation.decision import Decision
from orthoseg.validation.inventory import Inventory
from orthoseg.validation.outputs import copy_object, put_file_if_changed, put_if_changed, run_threads
from orthoseg.validation.suite import SuiteOutcome
from orthoseg.validation_config import ValidationConfig

logger = logging.getLogger(__name__)

QUARANTINE_PREFIX = "quarantine"


@dataclass(frozen=True)
class WriteRun:
    """What every write of one validation run needs."""

    store: ObjectStore
    source: ObjectStore
    batch: str
    purpose: str
    config: ValidationConfig
    scratch: Path

    @property
    def threads(self) -> int:
        """Threads for store writes (I/O bound)."""
        return max(4, self.config.workers * 4)


def previous_dataset(
    store: ObjectStore, purpose: str, config: ValidationConfig
) -> tuple[str | None, pd.DataFrame | None]:
    """The latest dataset of this purpose, after checking it was made with the same pseudonym salt."""
    version = ds.latest_dataset_version(store, purpose)
    if version is None:
        return None, None
    info = ds.load_dataset_info(store, version)
    fingerprint = info.get("salt_fingerprint")
    if fingerprint is not None and fingerprint != config.salt_fingerprint():
        raise ValueError(
            f"dataset {version} was built with another pseudonym salt (fingerprint {fingerprint}, now "
            f"{config.salt_fingerprint()}); set ORTHOSEG_PSEUDONYM_SALT to the original salt, or patients "
            "would change pseudonym and split"
        )
    return version, ds.load_manifest(store, version)


def _new_rows(
    items: list[dict[str, Any]],
    decision: Decision,
    previous: pd.DataFrame | None,
    batch: str,
    config: ValidationConfig,
    outcome: SuiteOutcome,
) -> list[dict[str, Any]]:
    """Manifest rows for accepted images not yet in the dataset, keyed under ``datasets/{version}/``."""
    present = set(previous["sop_instance_uid"]) if previous is not None and len(previous) else set()
    rows = []
    folder = join_key(ds.DATASETS_PREFIX, ds.VERSION_PLACEHOLDER)
    for item in items:
        key = item["file_key"]
        if (
            item["item_kind"] != "image"
            or key not in decision.accepted
            or item["sop_instance_uid"] in present
        ):
            continue
        uid = item["sop_instance_uid"]
        files = decision.companions.get(key, [])
        has_label = any(f.role == "label" for f in files)
        has_truth = any(f.role == "truth" for f in files)
        pseudonym = item["patient_pseudonym"] or None
        rows.append(
            {
                "sop_instance_uid": uid,
                "image_key": f"{folder}/images/{uid}.dcm",
                "label_key": f"{folder}/labels/{uid}.dcm" if has_label else None,
                "truth_key": f"{folder}/truth/{uid}.json" if has_truth else None,
                "sha256": item["sha256"],
                "patient_pseudonym": pseudonym,
                # Inference images without a PatientID have no patient: they are split by image.
                "split": ds.split_for(pseudonym or uid, config.split_fractions),
                "batch": batch,
                "rows": int(item["rows"]),
                "columns": int(item["columns"]),
                "pixel_spacing_row_mm": item["pixel_spacing_row_mm"],
                "pixel_spacing_col_mm": item["pixel_spacing_col_mm"],
                "photometric_interpretation": item["photometric_interpretation"],
                "view_position": item["view_position"],
                "laterality": item["laterality"],
                "modality": item["modality"],
                "transfer_syntax": item["transfer_syntax"],
                "label_sha256": item["label_source_sha256"] if has_label else None,
                "truth_sha256": item["truth_sha256"] if has_truth else None,
                "body_part": item["body_part"],
                "warnings": ",".join(sorted({f.kind for f in outcome.warnings(key)})),
            }
        )
        present.add(uid)
    return rows


def _write_dataset(
    run: WriteRun,
    version: str,
    manifest: pd.DataFrame,
    new_rows: list[dict[str, Any]],
    items_by_uid: dict[str, dict[str, Any]],
    decision: Decision,
    info: dict[str, Any],
) -> int:
    """Copy the new rows' files, then dataset.json, then the manifest (whose presence marks it done)."""
    store, source, scratch = run.store, run.source, run.scratch
    if store.exists(ds.manifest_key(version)):
        logger.info("dataset %s already complete; nothing to write", version)
        return 0
    jobs: list[Callable[[], bool]] = []
    for row in new_rows:
        uid = row["sop_instance_uid"]
        item = items_by_uid[uid]
        image_key = row["image_key"].replace(ds.VERSION_PLACEHOLDER, version)
        jobs.append(partial(copy_object, source, item["file_key"], store, image_key, scratch))
        for file in decision.companions.get(item["file_key"], []):
            if file.role == "truth":
                dest = row["truth_key"].replace(ds.VERSION_PLACEHOLDER, version)
                jobs.append(partial(copy_object, source, file.key, store, dest, scratch))
        label_dest = (row["label_key"] or "").replace(ds.VERSION_PLACEHOLDER, version)
        if label_dest and item["label_staged_path"]:
            staged = Path(item["label_staged_path"])
            jobs.append(partial(put_file_if_changed, store, label_dest, staged, scratch))
        elif label_dest:
            seg = next(f for f in decision.companions[item["file_key"]] if f.label_format == "seg")
            jobs.append(partial(copy_object, source, seg.key, store, label_dest, scratch))
    written = run_threads(lambda job: job(), jobs, run.threads)
    put_if_changed(store, ds.info_key(version), (json.dumps(info, indent=2, sort_keys=True) + "\n").encode())
    store.put_bytes(ds.manifest_key(version), ds.manifest_bytes(manifest))
    return written


def write_quarantine(run: WriteRun, decision: Decision, inventory: Inventory) -> int:
    """Copy refused files byte for byte (links and over-limit files are described, not copied)."""
    files = {f.key: f for f in inventory.files}

    def write(key: str) -> bool:
        document = dict(decision.quarantined[key])
        file = files[key]
        target = join_key(QUARANTINE_PREFIX, run.batch, key)
        if file.is_link:
            document["copied"] = False
            document["note"] = "a symbolic link: not followed, not copied; the link stays in the source"
            wrote = False
        elif file.size_bytes > run.config.max_file_bytes:
            document["copied"] = False
            document["note"] = (
                f"{file.size_bytes} bytes, over the limit: not copied; the file stays in the source"
            )
            wrote = False
        else:
            document["copied"] = True
            wrote = copy_object(run.source, key, run.store, target, run.scratch)
        text = json.dumps(document, indent=2, sort_keys=True, default=str) + "\n"
        return put_if_changed(run.store, f"{target}.reasons.json", text.encode()) or wrote

    return run_threads(write, sorted(decision.quarantined), run.threads)


def replace_folder(store: ObjectStore, prefix: str, folder: Path) -> None:
    """Make ``prefix`` hold exactly the files of ``folder`` (stale files of an earlier run are removed)."""
    uploaded = set()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        key = join_key(prefix, path.relative_to(folder).as_posix())
        store.put_file(key, path)
        uploaded.add(key)
    for key in store.list_keys(prefix):
        if key not in uploaded:
            store.delete(key)


def stored_as(
    decision: Decision,
    new_rows: list[dict[str, Any]],
    items_by_uid: dict[str, dict[str, Any]],
    version: str | None,
) -> dict[str, str]:
    """Where each accepted file now lives in the store (or that it was in the dataset already)."""
    stored: dict[str, str] = {}
    for row in new_rows:
        item = items_by_uid[row["sop_instance_uid"]]
        stored[item["file_key"]] = row["image_key"].replace(ds.VERSION_PLACEHOLDER, version or "")
        for file in decision.companions.get(item["file_key"], []):
            column = "truth_key" if file.role == "truth" else "label_key"
            stored[file.key] = (row[column] or "").replace(ds.VERSION_PLACEHOLDER, version or "")
    for key in decision.accepted:
        stored.setdefault(key, "already in the dataset")
    return stored


def update_dataset(
    run: WriteRun,
    items: list[dict[str, Any]],
    decision: Decision,
    outcome: SuiteOutcome,
    previous_version: str | None,
    previous: pd.DataFrame | None,
) -> tuple[str | None, pd.DataFrame | None, list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """Add the batch's new rows to the latest dataset of the purpose and point LATEST at the result.

    Returns:
        The version (None when no image was accepted), its manifest, the new rows, and the accepted
        images' rows by SOPInstanceUID.
    """
    new_rows = _new_rows(items, decision, previous, run.batch, run.config, outcome)
    items_by_uid = {
        i["sop_instance_uid"]: i
        for i in items
        if i["item_kind"] == "image" and i["file_key"] in decision.accepted
    }
    version: str | None = previous_version if items_by_uid else None
    manifest = previous
    if new_rows:
        pending = pd.DataFrame(new_rows)
        if previous is not None and len(previous):
            pending = pd.concat([previous, pending], ignore_index=True)
        version = ds.compute_version(pending)
        manifest = ds.normalise_manifest(ds.resolve_keys(pending, version))
        info = {
            "version": version,
            "purpose": run.purpose,
            "parent": previous_version,
            "batch": run.batch,
            "rows": len(manifest),
            "new_rows": len(new_rows),
            "salt_fingerprint": run.config.salt_fingerprint(),
            "label_contract_version": LABEL_CONTRACT_VERSION,
            "split_fractions": list(run.config.split_fractions),
        }
        _write_dataset(run, version, manifest, new_rows, items_by_uid, decision, info)
    if version is not None:
        put_if_changed(run.store, ds.latest_key(run.purpose), f"{version}\n".encode())
    return version, manifest, new_rows, items_by_uid
