"""Judging one batch: pair labels and truth with their images, run the suite, turn it into verdicts.

Accounting: every listed file of the batch ends up accepted or quarantined, exactly once. Label and truth
files share the verdict of the image they pair with; files that pair with no image are refused as
orphans, and files that are no radiograph by their name (``batch_layout``) as ``not_radiograph``.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from orthoseg.batch_layout import not_radiograph_reason
from orthoseg.settings import Settings
from orthoseg.storage import ObjectStore, batch_store, store_from_settings
from orthoseg.validation.duplicates import mark_duplicates, refused_copies
from orthoseg.validation.inventory import InputFile, Inventory, check_source, take_inventory
from orthoseg.validation.reader import COLUMNS, ReaderContext, empty_row, store_environment
from orthoseg.validation.spacing import judge_all
from orthoseg.validation.suite import Check, SuiteOutcome, run_suite
from orthoseg.validation_config import ValidationConfig

BATCH_PATTERN = re.compile(r"^[A-Za-z0-9._-]+$")


@dataclass
class Decision:
    """Per-file verdicts derived from the suite (the accounting of the batch)."""

    accepted: dict[str, str] = field(default_factory=dict)  # file key -> image key it was accepted with
    quarantined: dict[str, dict[str, Any]] = field(default_factory=dict)  # file key -> reasons document
    companions: dict[str, list[InputFile]] = field(default_factory=dict)  # image key -> its label/truth files


def check_batch_arguments(batch: str, purpose: str) -> None:
    """Refuse a batch name that is no safe folder name, or an unknown purpose (ValueError)."""
    if not BATCH_PATTERN.match(batch):
        raise ValueError(f"batch name must match {BATCH_PATTERN.pattern}, got {batch!r}")
    if purpose not in ("training", "inference"):
        raise ValueError(f"purpose must be 'training' or 'inference', got {purpose!r}")


def pair_files(
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


def verdict_table(items: list[dict[str, Any]]) -> pd.DataFrame:
    """The suite's input: one row per item, the reader's columns."""
    return pd.DataFrame(items, columns=list(COLUMNS))


def decide(
    items: list[dict[str, Any]],
    companions: dict[str, list[InputFile]],
    outcome: SuiteOutcome,
    batch: str,
    purpose: str,
) -> Decision:
    """Verdicts from the suite's findings: an image and its label and truth files share one."""
    decision = Decision(companions=companions)
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


def check_accounting(inventory: Inventory, decision: Decision) -> None:
    """Every listed file accepted or quarantined, exactly once (RuntimeError otherwise)."""
    listed = {f.key for f in inventory.files}
    accepted, quarantined = set(decision.accepted), set(decision.quarantined)
    if accepted & quarantined or (accepted | quarantined) != listed:
        raise RuntimeError(
            f"accounting failed: {len(listed)} listed, {len(accepted)} accepted, {len(quarantined)} "
            f"quarantined, {len(accepted & quarantined)} both, {len(listed - accepted - quarantined)} neither"
        )


def reasons_by_kind(decision: Decision) -> dict[str, int]:
    """Quarantined files per reason kind (a file refused with its image counts as image_quarantined)."""
    counts: Counter[str] = Counter()
    for document in decision.quarantined.values():
        kinds = {r["kind"] for r in document["reasons"]}
        if "image_quarantined" in kinds:
            kinds = {"image_quarantined"}
        counts.update(kinds)
    return dict(sorted(counts.items()))


def warnings_by_kind(
    items: list[dict[str, Any]], decision: Decision, outcome: SuiteOutcome
) -> dict[str, int]:
    """Accepted images per warning kind."""
    counts: Counter[str] = Counter()
    for item in items:
        if item["file_key"] in decision.accepted:
            counts.update({f.kind for f in outcome.warnings(item["file_key"])})
    return dict(sorted(counts.items()))


def file_entries(
    decision: Decision, outcome: SuiteOutcome, stored_as: dict[str, str]
) -> list[dict[str, Any]]:
    """One entry per listed file for the reports: verdict, reasons, warnings, where it is stored."""
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


def open_batch(
    settings: Settings, source: str, batch: str, purpose: str
) -> tuple[ObjectStore, ObjectStore, Inventory]:
    """The project store, the batch's source store and its inventory, after checking the arguments.

    Raises:
        ValueError: for a bad batch name or purpose, a source that is the store itself, or no files.
    """
    check_batch_arguments(batch, purpose)
    store = store_from_settings(settings)
    source_store = batch_store(settings, source)
    check_source(source_store, store)
    inventory = take_inventory(source_store)
    if not inventory.files:
        raise ValueError(f"no files under {source} ({source_store.uri}); nothing to validate")
    return store, source_store, inventory


def reader_context(
    settings: Settings,
    source_store: ObjectStore,
    inventory: Inventory,
    config: ValidationConfig,
    *,
    header_only: bool,
    staging_dir: Path | None = None,
) -> ReaderContext:
    """What each reader process needs to read the batch's images (and their labels, unless header_only)."""
    return ReaderContext(
        source_uri=source_store.uri,
        endpoint_url=getattr(source_store, "endpoint_url", settings.s3_endpoint_url),
        header_only=header_only,
        config=config,
        salt=config.effective_salt(),
        labels_by_uid=inventory.labels_by_uid,
        truth_by_uid=inventory.truth_by_uid,
        staging_dir=str(staging_dir) if staging_dir is not None else None,
        environment=store_environment(),
        s3_max_attempts=getattr(source_store, "max_attempts", settings.s3_max_attempts),
    )


def judge(
    rows: list[dict[str, Any]],
    inventory: Inventory,
    previous: pd.DataFrame | None,
    config: ValidationConfig,
    checks: list[Check],
    batch: str,
    purpose: str,
    suite_name: str,
    docs_dir: Path | None = None,
) -> tuple[list[dict[str, Any]], SuiteOutcome, Decision]:
    """The batch's items (images, orphans, other files), the suite's outcome and the verdicts, accounted.

    Raises:
        RuntimeError: when a listed file got no verdict or two (never expected; nothing is written then).
    """
    items, companions = pair_files(rows, inventory, previous, config, checks, batch)
    outcome = run_suite(
        verdict_table(items), checks, suite_name, batch, docs_dir=docs_dir, keep_result=docs_dir is not None
    )
    verdicts = decide(items, companions, outcome, batch, purpose)
    check_accounting(inventory, verdicts)
    return items, outcome, verdicts
