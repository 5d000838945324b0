"""One row of facts per image (header, pixels, labels, truth), read with bounded memory; runs in workers.

Nothing here decides: the reader records what it saw (including why a file could not be read) and the
Great Expectations suite in ``orthoseg.validation.suite`` turns the table into verdicts. The reader never
puts an identifying value into a row: PHI is recorded by attribute name, the patient by a salted pseudonym.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from orthoseg.radiograph import RadiographError, decode_pixels, pixel_spacing_with_source
from orthoseg.storage import DEFAULT_S3_MAX_ATTEMPTS, ObjectStore, StoreError
from orthoseg.validation.dicom_access import (
    int_value,
    parse_header,
    read_bounded,
    size_problem,
    text_value,
)
from orthoseg.validation.inventory import InputFile
from orthoseg.validation.label_reader import fill_labels, fill_truth
from orthoseg.validation.phi import phi_fields, pseudonymize
from orthoseg.validation_config import ValidationConfig

logger = logging.getLogger(__name__)

# Statistics are taken on a strided sample of about this many pixels (exact enough, fast on big films).
_STATS_SAMPLE_PX = 250_000

# Every column of the validation table, in order. None in a column means "not determined" (the file
# was not read that far), which the suite skips; a readable file always gets a value ('' / 0 / False).
COLUMNS: tuple[str, ...] = (
    "file_key",
    "item_kind",
    "orphan_detail",
    "is_link",
    "size_bytes",
    "readable",
    "read_error",
    "sop_class_uid",
    "sop_class_name",
    "modality",
    "body_part",
    "view_position",
    "laterality",
    "rows",
    "columns",
    "pixel_count",
    "number_of_frames",
    "samples_per_pixel",
    "bits_allocated",
    "bits_stored",
    "photometric_interpretation",
    "transfer_syntax",
    "transfer_syntax_name",
    "has_pixel_spacing",
    "pixel_spacing_row_mm",
    "pixel_spacing_col_mm",
    "pixel_spacing_source",
    "pixel_spacing_plausible",
    "pixel_spacing_min_mm",
    "pixel_spacing_max_mm",
    "pixel_spacing_detail",
    "phi_fields",
    "patient_pseudonym",
    "sop_instance_uid",
    "sha256",
    "pixel_decoded",
    "pixel_error",
    "pixel_range_fraction",
    "saturated_fraction",
    "label_present",
    "label_format",
    "label_readable",
    "label_error",
    "label_shape",
    "label_shape_matches",
    "label_binary",
    "label_unknown_structures",
    "label_references_image",
    "label_has_femur",
    "label_has_tibia",
    "label_source_sha256",
    "label_staged_path",
    "truth_present",
    "truth_valid",
    "truth_error",
    "truth_sha256",
    "duplicate_of",
    "duplicate_detail",
    "dataset_conflict",
    "timed_out",
    "time_limit_s",
)


@dataclass(frozen=True)
class ReaderContext:
    """Everything a worker needs, sent once per worker process.

    Attributes:
        source_uri: URI of the batch's store (each worker opens its own client).
        endpoint_url: S3 endpoint, or None.
        header_only: read headers only (pre-screen): no pixels, labels or truth contents.
        config: limits and accepted values.
        salt: pseudonym salt (never logged).
        labels_by_uid: label files by the SOPInstanceUID their path names.
        truth_by_uid: truth files by the SOPInstanceUID their path names.
        staging_dir: local folder where PNG masks converted to SEG are left for the writer.
        environment: store credentials and settings (``AWS_*``, ``ORTHOSEG_*``) as the caller sees them now;
            worker processes start from a fork server whose environment may predate them.
        s3_max_attempts: attempts per S3 call of each worker's store client (retries with backoff).
    """

    source_uri: str
    endpoint_url: str | None
    header_only: bool
    config: ValidationConfig
    salt: str = field(repr=False)
    labels_by_uid: dict[str, list[InputFile]] = field(default_factory=dict)
    truth_by_uid: dict[str, list[InputFile]] = field(default_factory=dict)
    staging_dir: str | None = None
    environment: dict[str, str] = field(default_factory=dict, repr=False)
    s3_max_attempts: int = DEFAULT_S3_MAX_ATTEMPTS


def store_environment() -> dict[str, str]:
    """The variables a worker needs to reach the store as this process does."""
    return {k: v for k, v in os.environ.items() if k.startswith(("AWS_", "ORTHOSEG_", "BOTO_"))}


def empty_row(file_key: str, item_kind: str = "image") -> dict[str, Any]:
    """A row with every column undetermined."""
    row: dict[str, Any] = dict.fromkeys(COLUMNS)
    row["file_key"] = file_key
    row["item_kind"] = item_kind
    return row


@contextlib.contextmanager
def quiet_dicom() -> Iterator[None]:
    """Silence pydicom/highdicom warnings while reading: their messages can quote header values (PHI)."""
    from pydicom import config as pydicom_config

    previous_mode = pydicom_config.settings.reading_validation_mode
    pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE
    quieted = [logging.getLogger(name) for name in ("pydicom", "highdicom")]
    previous_disabled = [log.disabled for log in quieted]
    for log in quieted:
        log.disabled = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        pydicom_config.settings.reading_validation_mode = previous_mode
        for log, disabled in zip(quieted, previous_disabled, strict=True):
            log.disabled = disabled


def supported_transfer_syntaxes() -> tuple[str, ...]:
    """Transfer syntaxes this installation can read and decode (uncompressed, deflated, installed plugins)."""
    import pydicom.uid
    from pydicom.pixels.decoders.base import get_decoder

    supported = []
    for uid in pydicom.uid.AllTransferSyntaxes:
        if not uid.is_compressed:
            supported.append(str(uid))
            continue
        try:
            if get_decoder(uid).is_available:
                supported.append(str(uid))
        except (NotImplementedError, ValueError):
            continue
    return tuple(supported)


def _fill_header(row: dict[str, Any], dataset: Any, ctx: ReaderContext) -> None:
    from pydicom.uid import UID

    meta = getattr(dataset, "file_meta", None)
    sop_class = text_value(dataset, "SOPClassUID") or (
        text_value(meta, "MediaStorageSOPClassUID") if meta else ""
    )
    row["sop_class_uid"] = sop_class
    try:
        row["sop_class_name"] = UID(sop_class).name if sop_class else "no SOPClassUID"
    except Exception:
        row["sop_class_name"] = sop_class
    row["modality"] = text_value(dataset, "Modality")
    row["body_part"] = text_value(dataset, "BodyPartExamined")
    row["view_position"] = text_value(dataset, "ViewPosition")
    row["laterality"] = text_value(dataset, "ImageLaterality") or text_value(dataset, "Laterality")
    rows, columns = int_value(dataset, "Rows", 0), int_value(dataset, "Columns", 0)
    frames, samples = int_value(dataset, "NumberOfFrames", 1), int_value(dataset, "SamplesPerPixel", 1)
    row.update(rows=rows, columns=columns, number_of_frames=frames, samples_per_pixel=samples)
    row["pixel_count"] = max(rows, 0) * max(columns, 0) * max(frames, 1) * max(samples, 1)
    row["bits_allocated"] = int_value(dataset, "BitsAllocated", 0)
    row["bits_stored"] = int_value(dataset, "BitsStored", 0)
    row["photometric_interpretation"] = text_value(dataset, "PhotometricInterpretation")
    syntax = text_value(meta, "TransferSyntaxUID") if meta is not None else ""
    row["transfer_syntax"] = syntax
    try:
        row["transfer_syntax_name"] = UID(syntax).name if syntax else "no TransferSyntaxUID"
    except Exception:
        row["transfer_syntax_name"] = syntax
    try:
        found = pixel_spacing_with_source(dataset)
    except Exception:
        found = None
    row["has_pixel_spacing"] = found is not None
    if found is not None:
        (row["pixel_spacing_row_mm"], row["pixel_spacing_col_mm"]), row["pixel_spacing_source"] = found
    else:
        row["pixel_spacing_source"] = ""
    row["phi_fields"] = ",".join(phi_fields(dataset))
    try:
        patient_id = str(getattr(dataset, "PatientID", "") or "").strip()
    except Exception:
        patient_id = ""
    row["patient_pseudonym"] = pseudonymize(patient_id, ctx.salt) if patient_id else ""
    row["sop_instance_uid"] = str(getattr(dataset, "SOPInstanceUID", "") or "").strip()


_IMAGE_COLUMNS = (
    "body_part",
    "view_position",
    "laterality",
    "rows",
    "columns",
    "pixel_count",
    "number_of_frames",
    "samples_per_pixel",
    "bits_allocated",
    "bits_stored",
    "photometric_interpretation",
    "has_pixel_spacing",
    "pixel_spacing_source",
)


def _clear_image_columns(row: dict[str, Any]) -> None:
    """Image attributes are not determined for objects that are not images."""
    for column in _IMAGE_COLUMNS:
        row[column] = None


def _structurally_decodable(row: dict[str, Any], config: ValidationConfig) -> bool:
    """Whether decoding is worth trying: one greyscale frame of a bounded, declared size."""
    return (
        row["rows"] is not None
        and row["rows"] > 0
        and row["columns"] > 0
        and row["number_of_frames"] == 1
        and row["samples_per_pixel"] == 1
        and row["pixel_count"] <= config.max_pixels
        and row["photometric_interpretation"] in ("MONOCHROME1", "MONOCHROME2")
    )


def _pixel_statistics(dataset: Any, stored: np.ndarray) -> tuple[float, float]:
    """(1st-99th percentile range as a fraction of full scale, largest share pinned at either end)."""
    step = max(1, int(np.sqrt(stored.size / _STATS_SAMPLE_PX)))
    sample = np.asarray(stored[::step, ::step])
    bits = int_value(dataset, "BitsStored", 0)
    if not 1 <= bits <= 32:
        bits = sample.dtype.itemsize * 8
    if int_value(dataset, "PixelRepresentation", 0) == 1:
        low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    else:
        low, high = 0, 2**bits - 1
    p1, p99 = np.percentile(sample, [1, 99])
    range_fraction = float((p99 - p1) / max(high - low, 1))
    saturated = float(max(np.mean(sample <= low), np.mean(sample >= high)))
    return range_fraction, saturated


def _fill_pixels(row: dict[str, Any], data: bytes, config: ValidationConfig) -> None:
    try:
        dataset, stored = decode_pixels(data, config.max_pixels)
        row["pixel_range_fraction"], row["saturated_fraction"] = _pixel_statistics(dataset, stored)
        row["pixel_decoded"], row["pixel_error"] = True, ""
    except RadiographError as error:
        row["pixel_decoded"], row["pixel_error"] = False, str(error)
    except MemoryError:
        row["pixel_decoded"], row["pixel_error"] = False, "decoding ran out of memory (hostile or huge data)"
    except Exception as error:  # decoder plugins raise anything on hostile data
        row["pixel_decoded"] = False
        row["pixel_error"] = f"pixel data could not be decoded: {type(error).__name__}: {error}"


def read_image(store: ObjectStore, file: InputFile, ctx: ReaderContext) -> dict[str, Any]:
    """The validation row of one image candidate; never raises for anything the file contains."""
    config = ctx.config
    row = empty_row(file.key)
    row["is_link"] = file.is_link
    if file.is_link:
        return row
    row["size_bytes"] = file.size_bytes
    if size_problem(file, config.max_file_bytes):
        return row
    with quiet_dicom():
        try:
            _read_image_contents(store, file, ctx, row)
        except MemoryError:
            row["readable"], row["read_error"] = False, "reading ran out of memory (hostile or huge data)"
        except Exception as error:  # the last line of defence: a row, never a crash
            logger.debug("unexpected reader failure on %s: %s", file.key, type(error).__name__)
            row["readable"], row["read_error"] = False, f"unexpected reader failure: {type(error).__name__}"
    return row


def _read_image_contents(
    store: ObjectStore, file: InputFile, ctx: ReaderContext, row: dict[str, Any]
) -> None:
    config = ctx.config
    try:
        if ctx.header_only:
            data = store.get_bytes(file.key, max_bytes=min(config.header_prefix_bytes, config.max_file_bytes))
        else:
            data = read_bounded(store, file.key, config.max_file_bytes)
    except StoreError as error:
        row["readable"], row["read_error"] = False, str(error)
        return
    if len(data) > config.max_file_bytes:
        row["size_bytes"] = len(data)  # grew since listing: refused by size
        return
    try:
        dataset, reached = parse_header(data, whole_file=not ctx.header_only)
        if ctx.header_only and not reached:
            # Not conclusive from the prefix (long header, deflated, no pixels): parse the whole file once.
            if len(data) < file.size_bytes:
                data = read_bounded(store, file.key, config.max_file_bytes)
            dataset, reached = parse_header(data, whole_file=True)
    except (RadiographError, StoreError) as error:
        row["readable"], row["read_error"] = False, str(error)
        return
    _fill_header(row, dataset, ctx)
    truncated = not reached and (
        not row["sop_class_uid"] or row["rows"] > 0 or row["sop_class_uid"] in config.sop_classes
    )
    if truncated:
        row["readable"] = False
        row["read_error"] = "file ends before its pixel data (truncated)"
        return
    row["readable"], row["read_error"] = True, ""
    if not reached and "Rows" not in dataset:
        _clear_image_columns(row)  # SR, RT plan, ...: refused by SOP class, not by twenty image attributes
    if not ctx.header_only:
        row["sha256"] = hashlib.sha256(data).hexdigest()
        if _structurally_decodable(row, config):
            _fill_pixels(row, data, config)
    uid = row["sop_instance_uid"]
    label_files = ctx.labels_by_uid.get(uid, []) if uid else []
    truth_files = ctx.truth_by_uid.get(uid, []) if uid else []
    row["label_present"] = bool(label_files)
    row["truth_present"] = bool(truth_files)
    if ctx.header_only:
        return
    if label_files and row["rows"] is not None:
        fill_labels(row, store, label_files, dataset, ctx)
    if truth_files:
        fill_truth(row, store, truth_files[0], uid, config)
