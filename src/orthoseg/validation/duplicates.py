"""Copies of one image in a batch (same SOPInstanceUID): keep the best readable copy, refuse the others.

Archives re-send files: a transfer cut short leaves a truncated copy, and the complete one arrives later
under another name with the same SOPInstanceUID. Keeping whichever copy sorts first would let a broken copy
cost the good one, so copies are ranked on what was read, whatever the order they were listed in:

1. no other reason to refuse it (the suite is run on the copies alone first, without the duplicate check:
   a copy with implausible spacing or PHI must not cost a clean copy),
2. pixels that decode (then pixels not tried, as in a header-only pre-screen; then pixels that fail),
3. bytes that agree with the copy already in the dataset (a copy that differs is refused anyway),
4. the larger file (a truncated copy is shorter than the complete one),
5. the key, in sort order (a deterministic tiebreak between equal copies).

Unreadable files are not copies of anything (they have no trustworthy SOPInstanceUID) and are refused for
being unreadable. Nothing here decides: rows get ``duplicate_of`` (the kept copy's key, '' for the kept
copy) and ``duplicate_detail``, and the Great Expectations suite refuses the copies that were not kept.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import pandas as pd

from orthoseg.validation.reader import COLUMNS
from orthoseg.validation.suite import Check, run_suite

RULE = (
    "one copy per SOPInstanceUID is kept: a copy with no other reason to refuse it first, then decodable "
    "pixels, then agreement with the dataset, then the larger file, then the first key in sort order"
)
# Checks left out when copies are judged alone: being a copy, and differing from the dataset (ranked apart).
_NOT_FOR_COPIES = ("duplicate", "dataset_conflict")


def _pixels_rank(row: Mapping[str, Any]) -> int:
    decoded = row.get("pixel_decoded")
    return 0 if decoded is True else 1 if decoded is None else 2


def _copies(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Readable rows whose SOPInstanceUID another readable row shares."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if row["readable"] and row["sop_instance_uid"]:
            groups[row["sop_instance_uid"]].append(row)
    return [row for group in groups.values() if len(group) > 1 for row in group]


def refused_copies(rows: list[dict[str, Any]], checks: list[Check], run_name: str) -> dict[str, list[str]]:
    """Reason kinds for which the suite refuses each copy on its own (copies with none are left out).

    Runs the Great Expectations suite on the copies alone (none when the batch has no two files with one
    SOPInstanceUID), without the duplicate and dataset-conflict checks.
    """
    copies = _copies(rows)
    if not copies:
        return {}
    table = pd.DataFrame([{**row, "dataset_conflict": None} for row in copies], columns=list(COLUMNS))
    kept_checks = [check for check in checks if check.kind not in _NOT_FOR_COPIES]
    outcome = run_suite(table, kept_checks, "orthoseg-copies", run_name, keep_result=False)
    refused = {row["file_key"]: sorted({f.kind for f in outcome.refused(row["file_key"])}) for row in copies}
    return {key: kinds for key, kinds in refused.items() if kinds}


def rank(
    row: Mapping[str, Any], refused: Mapping[str, list[str]] | None = None
) -> tuple[int, int, int, int, str]:
    """Sort key of one readable copy: the smallest is the copy kept."""
    return (
        1 if refused and refused.get(str(row["file_key"])) else 0,
        _pixels_rank(row),
        1 if row.get("dataset_conflict") else 0,
        -int(row.get("size_bytes") or 0),
        str(row["file_key"]),
    )


def _describe(row: Mapping[str, Any], refused: Mapping[str, list[str]]) -> str:
    pixels = {
        0: "its pixels decode",
        1: "its pixels were not decoded",
        2: "its pixels do not decode",
    }[_pixels_rank(row)]
    if _pixels_rank(row) == 2 and row.get("pixel_error"):
        pixels += f" ({row['pixel_error']})"
    parts = [pixels, f"{int(row.get('size_bytes') or 0):,} bytes"]
    if row.get("dataset_conflict"):
        parts.append("it differs from the copy already in the dataset")
    kinds = refused.get(str(row["file_key"]))
    if kinds:
        parts.insert(0, f"refused on its own for {', '.join(kinds)}")
    return ", ".join(parts)


def mark_duplicates(
    rows: list[dict[str, Any]], known: Mapping[str, str], refused: Mapping[str, list[str]] | None = None
) -> dict[str, str]:
    """Mark dataset conflicts and duplicate copies in ``rows`` (in place); returns the kept key per UID.

    Args:
        rows: reader rows of the batch's images, in any order.
        known: SHA-256 by SOPInstanceUID of the images already in the dataset.
        refused: reason kinds of the copies the suite refuses on their own (``refused_copies``).

    Returns:
        For every SOPInstanceUID of a readable row, the key of the copy kept (labels and truth pair with it).
    """
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if not row["readable"]:
            continue
        uid = row["sop_instance_uid"]
        row["dataset_conflict"] = bool(
            uid in known and row["sha256"] is not None and known[uid] != row["sha256"]
        )
        row["duplicate_of"], row["duplicate_detail"] = "", ""
        if uid:
            groups[uid].append(row)
    refused = refused or {}
    kept: dict[str, str] = {}
    for uid, copies in groups.items():
        copies.sort(key=lambda row: rank(row, refused))
        best = copies[0]
        kept[uid] = best["file_key"]
        for other in copies[1:]:
            other["duplicate_of"] = best["file_key"]
            other["duplicate_detail"] = (
                f"SOPInstanceUID {uid} is also in {best['file_key']}, which is kept "
                f"({_describe(best, refused)}); this copy: {_describe(other, refused)}. Rule: {RULE}"
            )
    return kept
