"""The inference result row: one pydantic model, the Parquet schema derived from it, the row's steps."""

from __future__ import annotations

import io
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from orthoseg.inference_outputs import knee_rows
from orthoseg.inference_row import (
    MeasurementRow,
    RunColumns,
    measured_columns,
    measurements_schema,
    record_failure,
    validated_row,
)
from orthoseg.inference_writer import WrittenImage
from orthoseg.labels import STRUCTURE_NAMES
from orthoseg.measure import ImageMeasurements
from orthoseg.radiograph import Radiograph, RadiographError


def _measured_row(**overrides: object) -> dict[str, object]:
    measured = ImageMeasurements(femur_area_px=120, femur_area_mm2=30.5, tibia_axis_deg=2.5)
    row = {
        "sop_instance_uid": "1.2.3",
        "image_key": "incoming/b1/images/1.2.3.dcm",
        "status": "ok",
        "reason": None,
        "from_earlier_run": False,
        "input_size_bytes": 123456,
        "model_name": "orthoseg-knee",
        "model_version": "3",
        "run_id": "abc",
        "seg_key": "predictions/3/abc/seg/1.2.3.dcm",
        "rows": 192,
        "columns": 160,
        "pixel_spacing_row_mm": 0.2,
        "canvas_spacing_mm": 2.0,
        "image_seconds": 0.25,
        "forward_share_seconds": 0.05,
        "knee": "R",
        "tta_passes": 4,
        "model_confidence": 0.9,
        "confidence_femur": 0.95,
        **measured.model_dump(),
    }
    row.update(overrides)
    return row


def test_the_schema_has_every_column_once_in_the_table_order() -> None:
    schema = measurements_schema()
    names = schema.names
    assert len(names) == len(set(names))
    assert names[:3] == ["sop_instance_uid", "image_key", "status"]
    assert names[: len(RunColumns.model_fields)] == list(RunColumns.model_fields)
    confidence = ["tta_passes", "model_confidence", *(f"confidence_{s}" for s in STRUCTURE_NAMES)]
    start = len(RunColumns.model_fields)
    assert names[start : start + len(confidence)] == confidence
    assert names[start + len(confidence) :] == list(ImageMeasurements.model_fields)
    assert "other_knees" in MeasurementRow.model_fields and "other_knees" not in names
    expected = {
        "retryable": pa.bool_(),
        "input_size_bytes": pa.int64(),
        "rows": pa.int64(),
        "image_seconds": pa.float64(),
        "forward_share_seconds": pa.float64(),
        "tta_passes": pa.int64(),
        "confidence_cement": pa.float64(),
        "femur_area_px": pa.int64(),
        "femur_area_mm2": pa.float64(),
        "implant_type": pa.string(),
        "fixation": pa.string(),
        "completion_marker_error": pa.string(),
    }
    assert {name: schema.field(name).type for name in expected} == expected
    # Every column says what it holds; the measurement columns their unit.
    assert all(MeasurementRow.model_fields[name].description for name in names)
    assert "seconds" in MeasurementRow.model_fields["image_seconds"].description
    assert "mm²" in MeasurementRow.model_fields["femur_area_mm2"].description
    assert "degrees" in MeasurementRow.model_fields["tibia_axis_deg"].description


def test_rows_round_trip_through_parquet() -> None:
    measured = MeasurementRow.model_validate(_measured_row())
    failed = MeasurementRow(
        image_key="incoming/b1/images/broken.dcm", status="failed", reason="not a DICOM file", retryable=False
    )
    rows = [measured.model_dump(), failed.model_dump()]
    schema = measurements_schema()
    table = pa.Table.from_pylist([{f.name: row.get(f.name) for f in schema} for row in rows], schema=schema)
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    read = pq.read_table(io.BytesIO(buffer.getvalue()))

    assert read.schema.equals(schema)
    back = [MeasurementRow.model_validate(row) for row in read.to_pylist()]
    assert back[0] == measured and back[1] == failed
    # A failed file has no measurement: null, not the measurement's default (0 px, quality 'ok').
    assert back[1].femur_area_px is None and back[1].quality_flag is None


def test_validated_row_converts_to_column_types_and_keeps_only_the_given_keys() -> None:
    row = validated_row(
        {
            "image_key": "a.dcm",
            "rows": np.int64(7),
            "model_confidence": np.float32(0.5),
            "tibia_axis_deg": math.nan,
        }
    )
    assert row == {"image_key": "a.dcm", "rows": 7, "model_confidence": 0.5, "tibia_axis_deg": None}
    assert type(row["rows"]) is int and type(row["model_confidence"]) is float
    with pytest.raises(ValidationError, match="no_such_column"):
        validated_row({"image_key": "a.dcm", "no_such_column": 1})
    with pytest.raises(ValidationError, match="rows"):
        validated_row({"image_key": "a.dcm", "rows": "many"})


class SimpleAnalysis:
    """What ``measured_columns`` reads of an ``ImageAnalysis``."""

    def __init__(self, radiograph: Radiograph, transform: object, knees: list) -> None:
        self.radiograph, self.transform, self.knees = radiograph, transform, knees


def test_a_bilateral_film_becomes_one_row_per_knee() -> None:
    from orthoseg.preprocessing import CanvasTransform

    radiograph = Radiograph(np.zeros((4, 6), np.float32), (0.2, 0.25), "1.2.3", "MONOCHROME2", "B", "AP")
    transform = CanvasTransform((4, 6), (0.2, 0.25), (128, 128), 2.0, (4, 6), (0, 0))
    analysis = SimpleAnalysis(
        radiograph,
        transform,
        [("R", ImageMeasurements(femur_area_px=10)), ("L", ImageMeasurements(femur_area_px=20))],
    )
    written = WrittenImage("seg/1.2.3.dcm", "overlays/1.2.3.png", "thumbnails/1.2.3.jpg")
    row = validated_row({"image_key": "a.dcm", **measured_columns(analysis, written)})  # type: ignore[arg-type]
    assert row["knee"] == "R" and row["femur_area_px"] == 10 and row["pixel_spacing_col_mm"] == 0.25
    assert row["canvas_spacing_mm"] == 2.0 and row["status"] == "ok" and row["reason"] is None
    assert [k["knee"] for k in row["other_knees"]] == ["L"]
    knees = knee_rows([row])
    assert [(k["knee"], k["femur_area_px"]) for k in knees] == [("R", 10), ("L", 20)]
    assert all(k["overlay_key"] == "overlays/1.2.3.png" and "other_knees" not in k for k in knees)


def test_record_failure_says_whether_the_failure_can_recur() -> None:
    row: dict[str, object] = {"image_key": "a.dcm"}
    record_failure(row, RadiographError("not a DICOM file"))
    assert row == {"image_key": "a.dcm", "status": "failed", "reason": "not a DICOM file", "retryable": False}
    record_failure(row, MemoryError("out of memory"))
    assert row["reason"] == "MemoryError: out of memory" and row["retryable"] is True
    assert validated_row(row) == row
