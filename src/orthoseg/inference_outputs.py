"""What an inference run leaves behind: the result table's schema, one row per knee, and the files the
driver writes at the end (``measurements.parquet``, ``summary.json``, ``report.html``)."""

from __future__ import annotations

import json
import posixpath
from typing import TYPE_CHECKING, Any

from orthoseg.labels import STRUCTURE_NAMES
from orthoseg.measure.study import reconcile_study_rows
from orthoseg.measurements import ImageMeasurements
from orthoseg.storage import ObjectStore, join_key

if TYPE_CHECKING:
    import pyarrow as pa
    from pydantic import BaseModel


_ROW_COLUMNS: tuple[tuple[str, str], ...] = (
    ("sop_instance_uid", "string"),
    ("image_key", "string"),
    ("status", "string"),
    ("reason", "string"),
    ("retryable", "bool"),
    ("from_earlier_run", "bool"),
    ("input_size_bytes", "int64"),
    ("model_name", "string"),
    ("model_version", "string"),
    ("run_id", "string"),
    ("seg_key", "string"),
    ("overlay_key", "string"),
    ("thumbnail_key", "string"),
    ("modality", "string"),
    ("view_position", "string"),
    ("laterality", "string"),
    ("knee", "string"),
    ("study_instance_uid", "string"),
    ("photometric_interpretation", "string"),
    ("rows", "int64"),
    ("columns", "int64"),
    ("pixel_spacing_row_mm", "float64"),
    ("pixel_spacing_col_mm", "float64"),
    ("canvas_spacing_mm", "float64"),
    # This image's own read/preprocess/post-process/write time plus its share of the batched forward pass
    # (the pass's time divided by the images in it, also given alone).
    ("image_seconds", "float64"),
    ("forward_share_seconds", "float64"),
    # Why the row file (completion marker) could not be written; a re-run processes the image again.
    ("completion_marker_error", "string"),
)
# The network's confidence in the row's masks (orthoseg.confidence); set by _record_confidence.
_CONFIDENCE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("tta_passes", "int64"),
    ("model_confidence", "float64"),
    *((f"confidence_{name}", "float64") for name in STRUCTURE_NAMES),
)


def measurements_schema() -> pa.Schema:
    """Arrow schema of ``measurements.parquet``: run columns, confidence columns, then every
    ``ImageMeasurements`` field."""
    import typing

    import pyarrow as pa

    types = {"string": pa.string(), "bool": pa.bool_(), "int64": pa.int64(), "float64": pa.float64()}
    fields = [pa.field(name, types[kind]) for name, kind in (*_ROW_COLUMNS, *_CONFIDENCE_COLUMNS)]
    for name, info in ImageMeasurements.model_fields.items():
        args = set(typing.get_args(info.annotation)) or {info.annotation}
        kind = pa.int64() if int in args else pa.float64() if float in args else pa.string()
        fields.append(pa.field(name, kind))
    return pa.schema(fields)


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


def write_run_outputs(store: ObjectStore, summary: BaseModel, rows: list[dict[str, Any]]) -> None:
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
