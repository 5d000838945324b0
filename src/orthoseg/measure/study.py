"""Decisions that need more than one film of a study: the side of a unicompartmental knee on a lateral.

On a lateral film the medial and lateral compartments lie one behind the other, so a unicompartmental
knee is called ``uka`` (side undecidable) there. The study's AP film of the same knee shows the side;
a follow-up study almost always holds both. ``reconcile_study_rows`` copies the AP's decision onto the
lateral and says so in the row's evidence, only when the study's AP films of that knee agree.
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping
from typing import Any

UKA_SIDES = ("uka_medial", "uka_lateral")


def _knee_key(row: MutableMapping[str, Any]) -> tuple[str, str] | None:
    study = str(row.get("study_instance_uid") or "")
    if not study:
        return None
    return study, str(row.get("laterality") or "").strip().upper()


def reconcile_study_rows(rows: Iterable[MutableMapping[str, Any]]) -> int:
    """Give lateral ``uka`` rows the side their study's AP films of the same knee agree on (in place).

    Rows need ``study_instance_uid``, ``laterality``, ``implant_type`` and ``sop_instance_uid``; rows
    without a study UID, failed rows and bilateral films are left alone. A knee with an empty laterality
    matches only AP films whose laterality is empty too. Returns how many rows changed.
    """
    rows = list(rows)
    sides: dict[tuple[str, str], set[str]] = {}
    sources: dict[tuple[str, str], list[str]] = {}
    for row in rows:
        key = _knee_key(row)
        if key is None or row.get("status", "ok") != "ok" or row.get("implant_type") not in UKA_SIDES:
            continue
        sides.setdefault(key, set()).add(str(row["implant_type"]))
        sources.setdefault(key, []).append(str(row.get("sop_instance_uid") or ""))
    changed = 0
    for row in rows:
        key = _knee_key(row)
        if key is None or row.get("status", "ok") != "ok" or row.get("implant_type") != "uka":
            continue
        found = sides.get(key, set())
        if len(found) != 1:
            continue
        side = next(iter(found))
        row["implant_type"] = side
        evidence = f"side_from_study_ap={','.join(sorted(sources[key]))}"
        row["category_evidence"] = "; ".join(e for e in (row.get("category_evidence") or "", evidence) if e)
        changed += 1
    return changed
