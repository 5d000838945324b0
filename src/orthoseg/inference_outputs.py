"""What an inference run leaves behind: one row per knee, and the files the driver writes at the end
(``measurements.parquet``, ``summary.json``, ``report.html``); the table's schema is
``orthoseg.inference_row.measurements_schema``."""

from __future__ import annotations

import json
import posixpath
from typing import TYPE_CHECKING, Any

from orthoseg.inference_row import measurements_schema
from orthoseg.measure.study import reconcile_study_rows
from orthoseg.storage import ObjectStore, join_key

if TYPE_CHECKING:
    from orthoseg.inference import InferenceSummary

__all__ = ["knee_rows", "measurements_schema", "write_run_outputs"]


def knee_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per knee: a bilateral film's row is followed by a copy carrying its other knee's
    measurements; then the study-level decisions (``reconcile_study_rows``) are made on the knees."""
    out: list[dict[str, Any]] = []
    for row in rows:
        others = row.get("other_knees") or []
        base = {k: v for k, v in row.items() if k != "other_knees"}
        out.append(base)
        out.extend({**base, **other} for other in others)
    reconcile_study_rows(out)
    return out


def _parquet_bytes(rows: list[dict[str, Any]]) -> bytes:
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = measurements_schema()
    table = pa.Table.from_pylist([{f.name: row.get(f.name) for f in schema} for row in rows], schema=schema)
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def write_run_outputs(store: ObjectStore, summary: InferenceSummary, rows: list[dict[str, Any]]) -> None:
    """measurements.parquet, summary.json and report.html of the run (the driver writes them at the end)."""
    import pandas as pd

    from orthoseg.report import render_inference_report

    rows = knee_rows(rows)
    store.put_bytes(summary.measurements_key, _parquet_bytes(rows))
    store.put_bytes(
        join_key(summary.output_prefix, "summary.json"),
        json.dumps(summary.model_dump(mode="json"), indent=2, sort_keys=True).encode(),
    )
    frame = pd.DataFrame(rows, columns=[f.name for f in measurements_schema()])
    overlays = {
        str(r["sop_instance_uid"]): posixpath.relpath(str(r["overlay_key"]), summary.output_prefix)
        for r in rows
        if r.get("status") == "ok" and r.get("overlay_key")
    }
    page = render_inference_report(
        summary,
        frame,
        overlays,
        thumbnails=_read_thumbnails(store, rows),
        annotate_next=summary.annotate_next,
    )
    store.put_bytes(summary.report_key, page.encode())


def _read_thumbnails(store: ObjectStore, rows: list[dict[str, Any]]) -> dict[str, bytes]:
    """SOPInstanceUID -> thumbnail JPEG of each measured row that has one (rows of earlier versions may
    not: the report then links the overlay instead)."""
    from concurrent.futures import ThreadPoolExecutor

    from orthoseg.storage import StoreError

    wanted = [
        (str(r["sop_instance_uid"]), str(r["thumbnail_key"]))
        for r in rows
        if r.get("status") == "ok" and r.get("thumbnail_key")
    ]

    def read(item: tuple[str, str]) -> tuple[str, bytes | None]:
        try:
            return item[0], store.get_bytes(item[1])
        except StoreError:
            return item[0], None

    with ThreadPoolExecutor(max_workers=8) as pool:
        return {uid: data for uid, data in pool.map(read, wanted) if data}
