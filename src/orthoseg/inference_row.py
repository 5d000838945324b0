"""The result row of batch inference: one typed definition (``MeasurementRow``) from which the Parquet
schema of ``measurements.parquet`` comes, and the steps that fill a row from an image's analysis.

A row is one input file: the run columns (this module), the network's confidence, then every field of
``orthoseg.measure.ImageMeasurements`` (added from that model, so a new measurement is a new column).
Rows travel as plain dicts (JSON completion markers, rows of earlier runs); the worker validates each
measured row against ``MeasurementRow`` before writing its marker.
"""

from __future__ import annotations

import logging
import typing
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic.json_schema import JsonDict

from orthoseg.inference_source import key_digest
from orthoseg.json_values import json_scalar
from orthoseg.labels import STRUCTURE_NAMES
from orthoseg.measure import ImageMeasurements

if TYPE_CHECKING:
    import pyarrow as pa

    from orthoseg.confidence import ModelConfidence
    from orthoseg.inference_analysis import ImageAnalysis
    from orthoseg.inference_config import InferenceConfig
    from orthoseg.inference_writer import WrittenImage
    from orthoseg.radiograph import Radiograph

logger = logging.getLogger(__name__)

# Fields of the row model that are not Parquet columns (``json_schema_extra``).
_NOT_A_COLUMN: JsonDict = {"parquet": False}


class RunColumns(BaseModel):
    """The columns of a row that say which file, which run and what happened to it (every one nullable:
    a file that failed early has few of them)."""

    model_config = ConfigDict(extra="forbid")

    sop_instance_uid: str | None = Field(None, description="SOPInstanceUID of the radiograph (string)")
    image_key: str | None = Field(None, description="store key of the input file (string)")
    status: str | None = Field(None, description="'ok' or 'failed' (string)")
    reason: str | None = Field(None, description="why the file failed, in words (string; null when ok)")
    retryable: bool | None = Field(
        None, description="a failure that may not recur (false: the file itself is unusable) (bool)"
    )
    from_earlier_run: bool | None = Field(
        None, description="the row comes from an earlier call with the same run id (bool)"
    )
    input_size_bytes: int | None = Field(None, description="size of the input file (int64, bytes)")
    model_name: str | None = Field(None, description="registered model name (string)")
    model_version: str | None = Field(None, description="model version, or dir-<digest> (string)")
    run_id: str | None = Field(None, description="output run id (string)")
    seg_key: str | None = Field(None, description="store key of the DICOM SEG (string)")
    overlay_key: str | None = Field(None, description="store key of the overlay PNG (string)")
    thumbnail_key: str | None = Field(None, description="store key of the thumbnail JPEG (string)")
    modality: str | None = Field(None, description="DICOM Modality (string)")
    view_position: str | None = Field(None, description="DICOM ViewPosition: AP, PA, LL, ... (string)")
    laterality: str | None = Field(None, description="film laterality: L, R, B or empty (string)")
    knee: str | None = Field(
        None, description="the knee this row measures: L, R or empty (string; bilateral films: one row each)"
    )
    study_instance_uid: str | None = Field(None, description="DICOM StudyInstanceUID (string)")
    photometric_interpretation: str | None = Field(
        None, description="MONOCHROME1 or MONOCHROME2, as stored (string)"
    )
    rows: int | None = Field(None, description="native image height (int64, pixels)")
    columns: int | None = Field(None, description="native image width (int64, pixels)")
    pixel_spacing_row_mm: float | None = Field(None, description="row pixel spacing (float64, mm)")
    pixel_spacing_col_mm: float | None = Field(None, description="column pixel spacing (float64, mm)")
    canvas_spacing_mm: float | None = Field(
        None, description="spacing of the network's canvas (float64, mm per canvas pixel)"
    )
    image_seconds: float | None = Field(
        None,
        description=(
            "this image's own read, preprocessing, post-processing and writes plus forward_share_seconds "
            "(float64, seconds)"
        ),
    )
    forward_share_seconds: float | None = Field(
        None,
        description="the batched forward pass's time divided by the images in it (float64, seconds)",
    )
    completion_marker_error: str | None = Field(
        None,
        description="why the completion marker could not be written; a re-run redoes the image (string)",
    )


def _confidence_fields() -> dict[str, Any]:
    fields: dict[str, Any] = {
        "tta_passes": (int | None, Field(None, description="test-time augmented passes combined (int64)")),
        "model_confidence": (
            float | None,
            Field(
                None,
                description="image confidence: the passes' lowest agreement, 0-1 (float64; null: one pass)",
            ),
        ),
    }
    for name in STRUCTURE_NAMES:
        description = f"agreement of the passes on {name}, 0-1 (float64; null when not found or one pass)"
        fields[f"confidence_{name}"] = (float | None, Field(None, description=description))
    return fields


_UNITS = (("_px", "pixels"), ("_mm2", "mm²"), ("_mm", "mm"), ("_deg", "degrees"), ("_fraction", "0-1"))


def _measurement_fields() -> dict[str, Any]:
    """Every ``ImageMeasurements`` field as a nullable column (a failed file has no measurement)."""
    fields: dict[str, Any] = {}
    for name, info in ImageMeasurements.model_fields.items():
        kind = _arrow_name(info.annotation)
        unit = next((u for suffix, u in _UNITS if name.endswith(suffix)), None)
        description = f"ImageMeasurements.{name} ({kind}{', ' + unit if unit else ''}; null when failed)"
        base = _python_type(info.annotation)
        fields[name] = (base | None, Field(None, description=description))
    return fields


def _python_type(annotation: Any) -> type:
    args = set(typing.get_args(annotation)) or {annotation}
    return next((t for t in (bool, int, float) if t in args), str)


def _arrow_name(annotation: Any) -> str:
    return {bool: "bool", int: "int64", float: "float64", str: "string"}[_python_type(annotation)]


MeasurementRow: type[RunColumns] = create_model(
    "MeasurementRow",
    __base__=RunColumns,
    __doc__=(
        "One row of measurements.parquet (one input file; one knee of a bilateral film): run columns, "
        "the network's confidence, every ImageMeasurements field. ``other_knees`` is no column: it carries "
        "a bilateral film's other knees until ``inference_outputs.knee_rows`` makes them rows."
    ),
    **_confidence_fields(),
    **_measurement_fields(),
    other_knees=(
        list[dict[str, Any]] | None,
        Field(None, description="a bilateral film's other knees", json_schema_extra=_NOT_A_COLUMN),
    ),
)


def measurements_schema() -> pa.Schema:
    """Arrow schema of ``measurements.parquet``, from ``MeasurementRow``'s fields in their order."""
    import pyarrow as pa

    types = {"string": pa.string(), "bool": pa.bool_(), "int64": pa.int64(), "float64": pa.float64()}
    return pa.schema(
        [
            pa.field(name, types[_arrow_name(info.annotation)])
            for name, info in MeasurementRow.model_fields.items()
            if info.json_schema_extra != _NOT_A_COLUMN
        ]
    )


# ----------------------------------------------------------------------------- filling a row


def validated_row(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` checked against ``MeasurementRow`` and converted to its column types (only the keys it has).

    Raises:
        pydantic.ValidationError: for an unknown column or a value of the wrong type.
    """
    checked = MeasurementRow.model_validate({k: json_scalar(v) for k, v in row.items()})
    return checked.model_dump(exclude_unset=True)


def base_row(image_key: str, model_name: str, model_version: str, run_id: str) -> dict[str, Any]:
    """The columns every row of a run starts with."""
    return {
        "image_key": image_key,
        "model_name": model_name,
        "model_version": model_version,
        "run_id": run_id,
        "from_earlier_run": False,
    }


def radiograph_columns(radiograph: Radiograph) -> dict[str, Any]:
    """What the row says about the film itself (no patient-identifying value)."""
    return {
        "sop_instance_uid": radiograph.sop_instance_uid,
        "modality": radiograph.attributes.get("Modality", ""),
        "view_position": radiograph.view_position,
        "laterality": radiograph.laterality,
        "study_instance_uid": radiograph.attributes.get("StudyInstanceUID", ""),
        "photometric_interpretation": radiograph.photometric_interpretation,
        "rows": int(radiograph.pixels.shape[0]),
        "columns": int(radiograph.pixels.shape[1]),
    }


def measured_columns(analysis: ImageAnalysis, written: WrittenImage) -> dict[str, Any]:
    """The columns of a measured image: its files, spacings and first knee's measurements (a bilateral
    film's other knees ride along in ``other_knees``)."""
    spacing = analysis.radiograph.pixel_spacing_mm
    columns: dict[str, Any] = {
        "status": "ok",
        "reason": None,
        "seg_key": written.seg_key,
        "overlay_key": written.overlay_key,
        "thumbnail_key": written.thumbnail_key,
        "canvas_spacing_mm": analysis.transform.canvas_spacing_mm if analysis.transform else None,
        "pixel_spacing_row_mm": spacing[0] if spacing else None,
        "pixel_spacing_col_mm": spacing[1] if spacing else None,
    }
    side, measured = analysis.knees[0]
    columns.update(measured.model_dump())
    columns["knee"] = side
    if len(analysis.knees) > 1:  # a bilateral film: one parquet row per knee (inference_outputs.knee_rows)
        columns["other_knees"] = [{"knee": k, **m.model_dump()} for k, m in analysis.knees[1:]]
    return columns


def record_confidence(
    row: MutableMapping[str, Any], confidence: ModelConfidence | None, config: InferenceConfig
) -> None:
    """Write the network's confidence into a measured row and flag the row when it is low.

    ``model_confidence`` is the image's confidence, ``confidence_<structure>`` each structure's (None where
    the structure was not found, and everywhere for one pass). Below ``config.min_model_confidence`` the
    measurements are doubtful as a whole: ``measurement_flags`` gets ``model_confidence:low (<value>)``
    and an ``ok`` image becomes ``partial`` (a worse image flag stays), on every knee of the film (a
    bilateral film's other knees, in ``other_knees``, become rows of their own).
    """
    structures = confidence.structures if confidence is not None else {}
    image = confidence.image if confidence is not None else None
    row["tta_passes"] = config.tta_passes
    row["model_confidence"] = image
    row.update({f"confidence_{name}": structures.get(name) for name in STRUCTURE_NAMES})
    if image is None or image >= config.min_model_confidence:
        return
    flag = f"model_confidence:low ({image:.2f})"
    note = (
        f"test-time augmentations agree only to {image:.2f} "
        f"(below {config.min_model_confidence:.2f}): the measurements are doubtful"
    )
    for knee in (row, *(row.get("other_knees") or [])):
        knee["measurement_flags"] = "; ".join(f for f in (knee.get("measurement_flags") or "", flag) if f)
        knee["quality_notes"] = "; ".join(n for n in (knee.get("quality_notes") or "", note) if n)
        if knee.get("quality_flag", "ok") == "ok":
            knee["quality_flag"] = "partial"


def record_failure(row: MutableMapping[str, Any], error: Exception) -> None:
    """Mark the row failed with a reason a person can act on; a file that is not a usable radiograph
    fails the same way every time (``retryable`` false), anything else may not."""
    from orthoseg.radiograph import RadiographError
    from orthoseg.storage import StoreError

    known = isinstance(error, RadiographError | StoreError | ValueError)
    reason = str(error) if known else f"{type(error).__name__}: {error}"
    retryable = not isinstance(error, RadiographError)
    row.update({"status": "failed", "reason": reason or type(error).__name__, "retryable": retryable})
    logger.warning("inference failed for image %s: %s", key_digest(row["image_key"]), reason)
