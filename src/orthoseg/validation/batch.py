"""Validating one incoming batch: read in parallel, decide with Great Expectations, write the results.

The steps live in their own modules: ``inventory`` lists the batch and gives each file its role,
``executor`` and ``reader`` read the images in worker processes, ``decision`` runs the suite and turns it
into verdicts (every listed file accepted or quarantined, exactly once), ``accept`` writes the dataset
version and the quarantine. Duplicate SOPInstanceUIDs in a batch: the best readable copy is judged, the
others are refused as duplicates naming it (``validation.duplicates``). Reports under
``reports/validation/<batch>/`` describe the latest run and are replaced by it.
"""

from __future__ import annotations

import io
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from orthoseg import dataset_version as ds
from orthoseg.progress import ProgressCallback
from orthoseg.settings import Settings
from orthoseg.storage import ObjectStore, join_key
from orthoseg.validation.accept import (
    QUARANTINE_PREFIX,
    WriteRun,
    previous_dataset,
    replace_folder,
    stored_as,
    update_dataset,
    write_quarantine,
)
from orthoseg.validation.batch_report import render_report
from orthoseg.validation.decision import (
    file_entries,
    judge,
    open_batch,
    reader_context,
    reasons_by_kind,
    verdict_table,
    warnings_by_kind,
)
from orthoseg.validation.executor import read_all
from orthoseg.validation.reader import supported_transfer_syntaxes
from orthoseg.validation.suite import SuiteOutcome, build_checks
from orthoseg.validation_config import ValidationConfig

logger = logging.getLogger(__name__)

Purpose = Literal["training", "inference"]

REPORTS_PREFIX = "reports/validation"
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
    config = config or ValidationConfig.from_settings(settings)
    store, source_store, inventory = open_batch(settings, source, batch, purpose)
    previous_version, previous = previous_dataset(store, purpose, config)
    reports = join_key(REPORTS_PREFIX, batch)
    with tempfile.TemporaryDirectory(prefix="orthoseg-validation-") as scratch_name:
        scratch = Path(scratch_name)
        run = WriteRun(store, source_store, batch, purpose, config, scratch)
        context = reader_context(
            settings, source_store, inventory, config, header_only=False, staging_dir=scratch / "staged-seg"
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
        docs_dir = scratch / "data_docs"
        items, outcome, decision = judge(
            rows, inventory, previous, config, checks, batch, purpose, f"orthoseg-{purpose}", docs_dir
        )
        clock.mark("decide")

        version, manifest, new_rows, items_by_uid = update_dataset(
            run, items, decision, outcome, previous_version, previous
        )
        clock.mark("dataset")
        write_quarantine(run, decision, inventory)
        clock.mark("quarantine")

        stored_keys = stored_as(decision, new_rows, items_by_uid, version)
        data_docs_key = None
        if (docs_dir / "index.html").is_file():
            replace_folder(store, join_key(reports, "data_docs"), docs_dir)
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
            reasons_by_kind=reasons_by_kind(decision),
            seconds=0.0,
            images_total=len(inventory.images),
            images_accepted=len(items_by_uid),
            new_rows=len(new_rows),
            dataset_rows=0 if manifest is None or version is None else len(manifest),
            warnings_by_kind=warnings_by_kind(items, decision, outcome),
            result_key=join_key(reports, "result.json"),
            data_docs_key=data_docs_key,
            validated_by=f"great_expectations {outcome.gx_version}, suite {outcome.suite_name}",
        )
        summary.phase_seconds = dict(clock.phases)
        summary.seconds = round(time.perf_counter() - started, 3)
        _write_reports(store, reports, summary, outcome, file_entries(decision, outcome, stored_keys), items)
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
    table = verdict_table(items).drop(columns=["label_staged_path"])
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
    config = config or ValidationConfig.from_settings(settings)
    store, source_store, inventory = open_batch(settings, source, batch, purpose)
    context = reader_context(settings, source_store, inventory, config, header_only=True)
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
    items, outcome, decision = judge(
        rows, inventory, None, config, checks, batch, purpose, f"orthoseg-{purpose}-prescreen"
    )
    seconds = time.perf_counter() - started
    report_key = join_key(REPORTS_PREFIX, batch, "prescreen.html")
    summary = PrescreenSummary(
        batch=batch,
        purpose=purpose,
        source=source,
        files_total=len(inventory.files),
        would_accept=len(decision.accepted),
        would_quarantine=len(decision.quarantined),
        reasons_by_kind=reasons_by_kind(decision),
        warnings_by_kind=warnings_by_kind(items, decision, outcome),
        report_key=report_key,
        seconds=round(seconds, 3),
        files_per_second=round(len(inventory.files) / max(seconds, 1e-9), 1),
    )
    files = file_entries(decision, outcome, {})
    payload = summary.model_dump(mode="json")
    store.put_bytes(
        join_key(REPORTS_PREFIX, batch, "prescreen.json"),
        json.dumps(
            {**payload, "expectations": outcome.expectations, "files": files}, indent=1, default=str
        ).encode(),
    )
    store.put_bytes(report_key, render_report(payload, outcome.expectations, files).encode())
    return summary
