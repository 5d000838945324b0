"""Validating one incoming batch: read in parallel, decide with Great Expectations, write the results.

Accounting: every listed file of the batch ends up accepted (stored in, or already in, the dataset) or
quarantined (copied under ``quarantine/<batch>/`` with ``<name>.reasons.json``), exactly once. Label and
truth files share the verdict of the image they pair with; files that pair with no image are refused as
orphans. Every file outside ``labels/`` and ``truth/`` is an image candidate (a stray README is refused as
not DICOM); empty directories are not files and are not counted; links are refused and never followed.
Links and files over ``max_file_bytes`` are described in ``quarantine/`` (``.reasons.json``) but not
copied: the limit exists so that such a file is never read. Duplicate SOPInstanceUIDs in a batch: the best
readable copy is judged, the others are refused as duplicates naming it (``validation.duplicates``).

Re-running a batch rewrites nothing that is already right: the dataset version is a content hash and
every copy skips a destination that already holds the same bytes. Reports under
``reports/validation/<batch>/`` describe the latest run and are replaced by it.
"""

from __future__ import annotations

import io
import json
import logging
import re
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel

from orthoseg import dataset_version as ds
from orthoseg.batch_layout import not_radiograph_reason
from orthoseg.labels import LABEL_CONTRACT_VERSION
from orthoseg.progress import ProgressCallback
from orthoseg.settings import Settings
from orthoseg.storage import ObjectStore, batch_store, join_key, store_from_settings
from orthoseg.validation.batch_report import render_report
from orthoseg.validation.duplicates import mark_duplicates, refused_copies
from orthoseg.validation.executor import read_all
from orthoseg.validation.inventory import InputFile, Inventory, check_source, take_inventory
from orthoseg.validation.outputs import copy_object, put_file_if_changed, put_if_changed, run_threads
from orthoseg.validation.reader import (
    COLUMNS,
    ReaderContext,
    empty_row,
    store_environment,
    supported_transfer_syntaxes,
)
from orthoseg.validation.spacing import judge_all
from orthoseg.validation.suite import Check, SuiteOutcome, build_checks, run_suite
from orthoseg.validation_config import ValidationConfig

logger = logging.getLogger(__name__)

Purpose = Literal["training", "inference"]

BATCH_PATTERN = re.compile(r"^[A-Za-z0-9._-]+$")
REPORTS_PREFIX = "reports/validation"
QUARANTINE_PREFIX = "quarantine"
# Header-only reads are cheap: hand workers many files per task so inter-process calls do not dominate.
_HEADER_CHUNK = 64
# Below this many files a header-only pre-screen reads in this process (starting workers costs more).
_HEADER_POOL_MIN_FILES = 256


class ValidationSummary(BaseModel):
    """What ``validate_batch`` did.

    Attributes:
        batch: the batch name.
        purpose: training or inference.
        source: the source as given.
        files_total: files listed under the source (every one is accepted or quarantined).
        accepted: files accepted (images with their labels and truth).
        quarantined: files quarantined.
        dataset_version: the dataset version holding the accepted images; None when nothing was accepted.
        manifest_key: store key of that version's manifest.
        report_key: store key of the HTML report.
        quarantine_prefix: store prefix of this batch's quarantine.
        reasons_by_kind: quarantined files per reason kind (a file counts once per kind it failed).
        seconds: wall time.
        images_total: image candidates (files outside labels/ and truth/).
        images_accepted: images accepted.
        new_rows: rows this batch added to the dataset (accepted images not already in it).
        dataset_rows: rows of ``dataset_version``.
        warnings_by_kind: accepted images per warning kind.
        result_key: store key of the Great Expectations result JSON.
        data_docs_key: store key of the Data Docs index, or None when they could not be built.
        validated_by: Great Expectations version and suite name.
        phase_seconds: wall time per phase (list, read, decide, dataset, quarantine, reports).
    """

    batch: str
    purpose: Purpose
    source: str
    files_total: int
    accepted: int
    quarantined: int
    dataset_version: str | None
    manifest_key: str | None
    report_key: str
    quarantine_prefix: str
    reasons_by_kind: dict[str, int]
    seconds: float
    images_total: int = 0
    images_accepted: int = 0
    new_rows: int = 0
    dataset_rows: int = 0
    warnings_by_kind: dict[str, int] = {}
    result_key: str = ""
    data_docs_key: str | None = None
    validated_by: str = ""
    phase_seconds: dict[str, float] = {}


class _Clock:
    """Wall time per phase, for the summary and the benchmark."""

    def __init__(self) -> None:
        self.last = time.perf_counter()
        self.phases: dict[str, float] = {}

    def mark(self, phase: str) -> None:
        now = time.perf_counter()
        self.phases[phase] = round(self.phases.get(phase, 0.0) + now - self.last, 3)
        self.last = now


class PrescreenSummary(BaseModel):
    """What a header-only pre-screen found (nothing is copied, no dataset is written).

    Attributes:
        batch, purpose, source: as given.
        files_total: files listed.
        would_accept: files the header checks pass (pixels and label contents are not checked).
        would_quarantine: files the header checks refuse.
        reasons_by_kind: refused files per reason kind.
        warnings_by_kind: passing images per warning kind.
        report_key: store key of the pre-screen HTML report.
        seconds: wall time.
        files_per_second: files_total / seconds.
    """

    batch: str
    purpose: Purpose
    source: str
    files_total: int
    would_accept: int
    would_quarantine: int
    reasons_by_kind: dict[str, int]
    warnings_by_kind: dict[str, int]
    report_key: str
    seconds: float
    files_per_second: float


@dataclass
class _Decision:
    """Per-file verdicts derived from the suite (the accounting of the batch)."""

    accepted: dict[str, str] = field(default_factory=dict)  # file key -> image key it was accepted with
    quarantined: dict[str, dict[str, Any]] = field(default_factory=dict)  # file key -> reasons document
    companions: dict[str, list[InputFile]] = field(default_factory=dict)  # image key -> its label/truth files


@dataclass(frozen=True)
class _Run:
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


def _check_arguments(batch: str, purpose: str) -> None:
    if not BATCH_PATTERN.match(batch):
        raise ValueError(f"batch name must match {BATCH_PATTERN.pattern}, got {batch!r}")
    if purpose not in ("training", "inference"):
        raise ValueError(f"purpose must be 'training' or 'inference', got {purpose!r}")


def _pair(
    rows: list[dict[str, Any]],
    inventory: Inventory,
    previous: pd.DataFrame | None,
    config: ValidationConfig,
    checks: list[Check],
    batch: str,
) -> tuple[list[dict[str, Any]], dict[str, list[InputFile]]]:
    """Judge spacing, mark copies (best kept) and dataset conflicts, pair labels and truth, add orphans."""
    known: dict[str, str] = {}
    if previous is not None and len(previous):
        known = dict(zip(previous["sop_instance_uid"], previous["sha256"], strict=True))
    judge_all(rows, config)
    first_by_uid = mark_duplicates(rows, known, refused_copies(rows, checks, batch))
    companions: dict[str, list[InputFile]] = {}
    items = list(rows)
    paired = {uid: list(files) for uid, files in inventory.labels_by_uid.items()}
    for uid, files in inventory.truth_by_uid.items():
        paired.setdefault(uid, []).extend(files)
    for uid, files in sorted(paired.items()):
        owner = first_by_uid.get(uid)
        if owner is not None:
            companions.setdefault(owner, []).extend(files)
            continue
        for file in files:
            orphan = empty_row(file.key, item_kind=f"orphan_{file.role}")
            orphan["orphan_detail"] = f"no readable image with SOPInstanceUID {uid} in this batch"
            items.append(orphan)
    for file in inventory.unpaired:
        orphan = empty_row(file.key, item_kind=f"orphan_{file.role}")
        orphan["orphan_detail"] = (
            "the path names no image: expected labels/<SOPInstanceUID>.dcm, "
            "labels/<SOPInstanceUID>/<structure>.png or truth/<SOPInstanceUID>.json"
        )
        items.append(orphan)
    for file in inventory.others:
        other = empty_row(file.key, item_kind="not_radiograph")
        other["orphan_detail"] = not_radiograph_reason(file.key)
        items.append(other)
    return items, companions


def _table(items: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(items, columns=list(COLUMNS))


def _decide(
    items: list[dict[str, Any]],
    companions: dict[str, list[InputFile]],
    outcome: SuiteOutcome,
    batch: str,
    purpose: str,
) -> _Decision:
    decision = _Decision(companions=companions)
    validated_by = f"great_expectations {outcome.gx_version}, suite {outcome.suite_name}"
    for item in items:
        key = item["file_key"]
        refused = outcome.refused(key)
        members = [key] + [f.key for f in companions.get(key, [])]
        if not refused:
            for member in members:
                decision.accepted[member] = key
            continue
        reasons = [f.to_dict() for f in refused]
        for member in members:
            member_reasons = reasons
            if member != key:
                member_reasons = [
                    {
                        "kind": "image_quarantined",
                        "severity": "critical",
                        "message": f"quarantined with its image {key}",
                        "detail": "the image's reasons follow",
                    },
                    *reasons,
                ]
            decision.quarantined[member] = {
                "file": member,
                "batch": batch,
                "purpose": purpose,
                "verdict": "quarantined",
                "judged_with": key,
                "reasons": member_reasons,
                "warnings": [f.to_dict() for f in outcome.warnings(key)],
                "validated_by": validated_by,
            }
    return decision


def _check_accounting(inventory: Inventory, decision: _Decision) -> None:
    listed = {f.key for f in inventory.files}
    accepted, quarantined = set(decision.accepted), set(decision.quarantined)
    if accepted & quarantined or (accepted | quarantined) != listed:
        raise RuntimeError(
            f"accounting failed: {len(listed)} listed, {len(accepted)} accepted, {len(quarantined)} "
            f"quarantined, {len(accepted & quarantined)} both, {len(listed - accepted - quarantined)} neither"
        )


def _reasons_by_kind(decision: _Decision) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for document in decision.quarantined.values():
        kinds = {r["kind"] for r in document["reasons"]}
        if "image_quarantined" in kinds:
            kinds = {"image_quarantined"}
        counts.update(kinds)
    return dict(sorted(counts.items()))


def _warnings_by_kind(
    items: list[dict[str, Any]], decision: _Decision, outcome: SuiteOutcome
) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for item in items:
        if item["file_key"] in decision.accepted:
            counts.update({f.kind for f in outcome.warnings(item["file_key"])})
    return dict(sorted(counts.items()))


def _previous_dataset(
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
    decision: _Decision,
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
    run: _Run,
    version: str,
    manifest: pd.DataFrame,
    new_rows: list[dict[str, Any]],
    items_by_uid: dict[str, dict[str, Any]],
    decision: _Decision,
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


def _write_quarantine(run: _Run, decision: _Decision, inventory: Inventory) -> int:
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


def _file_entries(
    decision: _Decision, outcome: SuiteOutcome, stored_as: dict[str, str]
) -> list[dict[str, Any]]:
    entries = []
    for key, image_key in sorted(decision.accepted.items()):
        entries.append(
            {
                "file": key,
                "verdict": "accepted",
                "judged_with": image_key,
                "reasons": [],
                "warnings": [f.to_dict() for f in outcome.warnings(image_key)],
                "stored_as": stored_as.get(key, ""),
            }
        )
    for key, document in sorted(decision.quarantined.items()):
        entries.append(
            {
                "file": key,
                "verdict": "quarantined",
                "judged_with": document["judged_with"],
                "reasons": document["reasons"],
                "warnings": document["warnings"],
            }
        )
    return sorted(entries, key=lambda e: e["file"])


def _replace_folder(store: ObjectStore, prefix: str, folder: Path) -> None:
    """Make ``prefix`` hold exactly the files of ``folder`` (stale files of an earlier run are removed)."""
    uploaded = set()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        key = join_key(prefix, path.relative_to(folder).as_posix())
        store.put_file(key, path)
        uploaded.add(key)
    for key in store.list_keys(prefix):
        if key not in uploaded:
            store.delete(key)


def _stored_as(
    decision: _Decision,
    new_rows: list[dict[str, Any]],
    items_by_uid: dict[str, dict[str, Any]],
    version: str | None,
) -> dict[str, str]:
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


def _update_dataset(
    run: _Run,
    items: list[dict[str, Any]],
    decision: _Decision,
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


def validate_batch(
    settings: Settings,
    source: str,
    batch: str,
    purpose: Purpose = "training",
    progress: ProgressCallback | None = None,
    config: ValidationConfig | None = None,
) -> ValidationSummary:
    """Validate every file under ``source``; accept into a new dataset version or quarantine with reasons.

    Args:
        settings: store, S3 endpoint, the ``validation`` section and the pseudonym salt.
        source: a store URI (``s3://bucket/prefix``), a local folder, or a prefix in the configured store
            such as ``incoming/<batch>``; it holds ``images/`` (any layout), ``labels/`` and ``truth/``.
        batch: batch name (quarantine and report folders).
        purpose: 'training' (labels required, PHI refused, knees only) or 'inference'.
        progress: called with (images read, images total).
        config: validation knobs; default ``ValidationConfig.from_settings(settings)``.

    Raises:
        ValueError: for a bad batch name or purpose, a source with no files, or a pseudonym salt that differs
            from the one the existing dataset was built with.
    """
    started = time.perf_counter()
    clock = _Clock()
    _check_arguments(batch, purpose)
    config = config or ValidationConfig.from_settings(settings)
    store = store_from_settings(settings)
    source_store = batch_store(settings, source)
    check_source(source_store, store)
    inventory = take_inventory(source_store)
    if not inventory.files:
        raise ValueError(f"no files under {source} ({source_store.uri}); nothing to validate")
    previous_version, previous = _previous_dataset(store, purpose, config)
    salt = config.effective_salt()
    reports = join_key(REPORTS_PREFIX, batch)
    with tempfile.TemporaryDirectory(prefix="orthoseg-validation-") as scratch_name:
        scratch = Path(scratch_name)
        run = _Run(store, source_store, batch, purpose, config, scratch)
        context = ReaderContext(
            source_uri=source_store.uri,
            endpoint_url=getattr(source_store, "endpoint_url", settings.s3_endpoint_url),
            header_only=False,
            config=config,
            salt=salt,
            labels_by_uid=inventory.labels_by_uid,
            truth_by_uid=inventory.truth_by_uid,
            staging_dir=str(scratch / "staged-seg"),
            environment=store_environment(),
            s3_max_attempts=getattr(source_store, "max_attempts", settings.s3_max_attempts),
        )
        logger.info(
            "validating %d files of batch %s (%s) with %d workers",
            len(inventory.files),
            batch,
            purpose,
            config.workers,
        )
        clock.mark("list")
        rows = read_all(inventory.images, context, config.workers, progress=progress)
        clock.mark("read")
        checks = build_checks(purpose, config, supported_transfer_syntaxes())
        items, companions = _pair(rows, inventory, previous, config, checks, batch)
        docs_dir = scratch / "data_docs"
        outcome = run_suite(_table(items), checks, f"orthoseg-{purpose}", batch, docs_dir=docs_dir)
        decision = _decide(items, companions, outcome, batch, purpose)
        _check_accounting(inventory, decision)
        clock.mark("decide")

        version, manifest, new_rows, items_by_uid = _update_dataset(
            run, items, decision, outcome, previous_version, previous
        )
        clock.mark("dataset")
        _write_quarantine(run, decision, inventory)
        clock.mark("quarantine")

        stored_as = _stored_as(decision, new_rows, items_by_uid, version)
        data_docs_key = None
        if (docs_dir / "index.html").is_file():
            _replace_folder(store, join_key(reports, "data_docs"), docs_dir)
            data_docs_key = join_key(reports, "data_docs", "index.html")
        summary = ValidationSummary(
            batch=batch,
            purpose=purpose,
            source=source,
            files_total=len(inventory.files),
            accepted=len(decision.accepted),
            quarantined=len(decision.quarantined),
            dataset_version=version,
            manifest_key=ds.manifest_key(version) if version else None,
            report_key=join_key(reports, "report.html"),
            quarantine_prefix=join_key(QUARANTINE_PREFIX, batch) + "/",
            reasons_by_kind=_reasons_by_kind(decision),
            seconds=0.0,
            images_total=len(inventory.images),
            images_accepted=len(items_by_uid),
            new_rows=len(new_rows),
            dataset_rows=0 if manifest is None or version is None else len(manifest),
            warnings_by_kind=_warnings_by_kind(items, decision, outcome),
            result_key=join_key(reports, "result.json"),
            data_docs_key=data_docs_key,
            validated_by=f"great_expectations {outcome.gx_version}, suite {outcome.suite_name}",
        )
        summary.phase_seconds = dict(clock.phases)
        summary.seconds = round(time.perf_counter() - started, 3)
        _write_reports(store, reports, summary, outcome, _file_entries(decision, outcome, stored_as), items)
        clock.mark("reports")
        summary.phase_seconds = clock.phases
        summary.seconds = round(time.perf_counter() - started, 3)
    logger.info(
        "batch %s: %d files, %d accepted, %d quarantined, dataset %s (%d new rows) in %.1f s",
        batch,
        summary.files_total,
        summary.accepted,
        summary.quarantined,
        version,
        summary.new_rows,
        summary.seconds,
    )
    return summary


def _write_reports(
    store: ObjectStore,
    reports: str,
    summary: ValidationSummary,
    outcome: SuiteOutcome,
    files: list[dict[str, Any]],
    items: list[dict[str, Any]],
) -> None:
    payload = summary.model_dump(mode="json")
    payload["accounting"] = (
        f"{summary.files_total} files = {summary.accepted} accepted + {summary.quarantined} quarantined"
    )
    if summary.data_docs_key:
        payload["data_docs_index"] = "data_docs/index.html"
    store.put_bytes(
        join_key(reports, "result.json"), json.dumps(outcome.result, indent=1, default=str).encode()
    )
    store.put_bytes(
        join_key(reports, "summary.json"),
        json.dumps(
            {**payload, "expectations": outcome.expectations, "files": files}, indent=1, default=str
        ).encode(),
    )
    table = _table(items).drop(columns=["label_staged_path"])
    buffer = io.BytesIO()
    table.astype(str).to_parquet(buffer, index=False)
    store.put_bytes(join_key(reports, "files.parquet"), buffer.getvalue())
    store.put_bytes(
        join_key(reports, "report.html"), render_report(payload, outcome.expectations, files).encode()
    )


def prescreen_batch(
    settings: Settings,
    source: str,
    batch: str,
    purpose: Purpose = "training",
    progress: ProgressCallback | None = None,
    config: ValidationConfig | None = None,
) -> PrescreenSummary:
    """Header-only pre-screen: the suite without pixel, label-content and truth checks; writes only a report.

    Reads at most ``header_prefix_bytes`` of each file (more only when its header is longer), so a batch can
    be triaged at thousands of files per second before the full validation.
    """
    started = time.perf_counter()
    _check_arguments(batch, purpose)
    config = config or ValidationConfig.from_settings(settings)
    store = store_from_settings(settings)
    source_store = batch_store(settings, source)
    check_source(source_store, store)
    inventory = take_inventory(source_store)
    if not inventory.files:
        raise ValueError(f"no files under {source} ({source_store.uri}); nothing to pre-screen")
    context = ReaderContext(
        source_uri=source_store.uri,
        endpoint_url=getattr(source_store, "endpoint_url", settings.s3_endpoint_url),
        header_only=True,
        config=config,
        salt=config.effective_salt(),
        labels_by_uid=inventory.labels_by_uid,
        truth_by_uid=inventory.truth_by_uid,
        environment=store_environment(),
        s3_max_attempts=getattr(source_store, "max_attempts", settings.s3_max_attempts),
    )
    in_process = config.workers == 1 or len(inventory.images) < _HEADER_POOL_MIN_FILES
    rows = read_all(
        inventory.images,
        context,
        config.workers,
        in_process=in_process,
        progress=progress,
        chunk_size=_HEADER_CHUNK,
    )
    checks = build_checks(purpose, config, supported_transfer_syntaxes(), header_only=True)
    items, companions = _pair(rows, inventory, None, config, checks, batch)
    outcome = run_suite(_table(items), checks, f"orthoseg-{purpose}-prescreen", batch, keep_result=False)
    decision = _decide(items, companions, outcome, batch, purpose)
    _check_accounting(inventory, decision)
    seconds = time.perf_counter() - started
    report_key = join_key(REPORTS_PREFIX, batch, "prescreen.html")
    summary = PrescreenSummary(
        batch=batch,
        purpose=purpose,
        source=source,
        files_total=len(inventory.files),
        would_accept=len(decision.accepted),
        would_quarantine=len(decision.quarantined),
        reasons_by_kind=_reasons_by_kind(decision),
        warnings_by_kind=_warnings_by_kind(items, decision, outcome),
        report_key=report_key,
        seconds=round(seconds, 3),
        files_per_second=round(len(inventory.files) / max(seconds, 1e-9), 1),
    )
    files = _file_entries(decision, outcome, {})
    payload = summary.model_dump(mode="json")
    store.put_bytes(
        join_key(REPORTS_PREFIX, batch, "prescreen.json"),
        json.dumps(
            {**payload, "expectations": outcome.expectations, "files": files}, indent=1, default=str
        ).encode(),
    )
    store.put_bytes(report_key, render_report(payload, outcome.expectations, files).encode())
    return summary
