"""One row of facts per image (header, pixels, labels, truth), read with bounded memory; runs in workers.

Nothing here decides: the reader records what it saw (including why a file could not be read) and the
Great Expectations suite in ``orthoseg.validation.suite`` turns the table into verdicts. The reader never
puts an identifying value into a row: PHI is recorded by attribute name, the patient by a salted pseudonym.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import io
import json
import logging
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from orthoseg.labels import BY_NAME, NUM_STRUCTURES, STRUCTURE_NAMES
from orthoseg.radiograph import RadiographError, decode_pixels, pixel_spacing_with_source
from orthoseg.storage import DEFAULT_S3_MAX_ATTEMPTS, ObjectStore, StoreError
from orthoseg.validation.inventory import InputFile
from orthoseg.validation_config import ValidationConfig

logger = logging.getLogger(__name__)

# Identifiers a de-identified export may keep as pseudonyms when it declares PatientIdentityRemoved=YES.
PSEUDONYMISABLE_IDENTIFIERS = ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber")
# Identifiers no de-identification profile keeps (PS3.15 basic profile: removed); PHI whatever is declared.
ALWAYS_PHI = (
    "OtherPatientIDs",
    "OtherPatientIDsSequence",
    "OtherPatientNames",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "PatientTelecomInformation",
    "PatientMotherBirthName",
    "PatientBirthName",
    "MedicalRecordLocator",
    "ResponsiblePerson",
    "MilitaryRank",
    "BranchOfService",
    "RegionOfResidence",
)
# (7FE0,0010) Pixel Data as it starts an element, little and big endian.
_PIXEL_TAGS = (b"\xe0\x7f\x10\x00", b"\x7f\xe0\x00\x10")
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


def pseudonymize(patient_id: str, salt: str) -> str:
    """Salted hash (HMAC-SHA256) of a PatientID: stable for a salt, not reversible without it (16 hex)."""
    return hmac.new(salt.encode(), patient_id.strip().encode(), hashlib.sha256).hexdigest()[:16]


def _text(dataset: Any, keyword: str) -> str:
    try:
        value = getattr(dataset, keyword, None)
    except Exception:  # broken values raise on conversion
        return ""
    if value is None:
        return ""
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value).strip().upper()
    return str(value).strip().upper()


def _int(dataset: Any, keyword: str, default: int) -> int:
    try:
        value = getattr(dataset, keyword, None)
        return default if value is None or value == "" else int(value)
    except Exception:
        return 0


@functools.cache
def _tag(keyword: str) -> int:
    from pydicom.datadict import tag_for_keyword

    tag = tag_for_keyword(keyword)
    if tag is None:
        raise KeyError(f"not a DICOM keyword: {keyword}")
    return int(tag)


def _has_value(dataset: Any, keyword: str) -> bool:
    """Whether the attribute is present with a non-empty value (raw bytes looked at, nothing converted)."""
    try:
        element = dataset.get_item(_tag(keyword))
    except Exception:
        return True  # present but unparseable: treat as present
    if element is None:
        return False
    value = element.value
    if value is None:
        return False
    if isinstance(value, bytes):
        return bool(value.strip(b"\x00 "))
    if isinstance(value, str):
        return bool(value.strip("\x00 "))
    try:
        return len(value) > 0
    except TypeError:
        return True


def phi_fields(dataset: Any) -> list[str]:
    """Names (never values) of identifying attributes the file carries.

    A file that declares de-identification (PatientIdentityRemoved YES, DICOM PS3.15) may keep
    pseudonymous PatientName/PatientID/PatientBirthDate/AccessionNumber; without that declaration any
    non-empty value of these is PHI. ``ALWAYS_PHI`` attributes count whatever the file declares.
    """
    declared = _text(dataset, "PatientIdentityRemoved") == "YES"
    names = [] if declared else [k for k in PSEUDONYMISABLE_IDENTIFIERS if _has_value(dataset, k)]
    return names + [k for k in ALWAYS_PHI if _has_value(dataset, k)]


def _size_problem(file: InputFile, limit: int) -> str:
    if file.is_link:
        return "is a symbolic link (links are not followed)"
    if file.size_bytes <= 0:
        return "is empty (0 bytes)"
    if file.size_bytes > limit:
        return f"is {file.size_bytes} bytes, over the {limit}-byte limit"
    return ""


def _read_bounded(store: ObjectStore, key: str, limit: int) -> bytes:
    """Read at most ``limit + 1`` bytes, so an object that grew past the listing is still caught."""
    return store.get_bytes(key, max_bytes=limit + 1)


def _parse_header(data: bytes, whole_file: bool) -> tuple[Any, bool]:
    """Parse a DICOM file; returns (dataset, has_pixel_data).

    With ``whole_file`` the file is parsed to its end (pixel data included, as bytes, not decoded) and
    ``has_pixel_data`` is exact. Otherwise parsing stops before the pixel data and ``has_pixel_data`` is
    True only when the pixel data tag is seen next (little or big endian); False means "not seen", e.g. a
    header longer than the bytes given, or a deflated file.
    """
    import pydicom

    if len(data) < 132:
        raise RadiographError(f"too short to be a DICOM file ({len(data)} bytes)")
    if data[128:132] != b"DICM":
        raise RadiographError("not a DICOM Part 10 file (no 'DICM' marker after the 128-byte preamble)")
    buffer = io.BytesIO(data)
    try:
        dataset = pydicom.dcmread(buffer, stop_before_pixels=not whole_file)
    except Exception as error:
        raise RadiographError(f"unreadable DICOM header: {type(error).__name__}: {error}") from None
    if whole_file:
        pixel_keywords = [k for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData") if k in dataset]
        for keyword in pixel_keywords:
            delattr(dataset, keyword)  # the header is what is kept; pixels are decoded from the bytes
        return dataset, bool(pixel_keywords)
    position = buffer.tell()
    return dataset, data[position : position + 4] in _PIXEL_TAGS


def _fill_header(row: dict[str, Any], dataset: Any, ctx: ReaderContext) -> None:
    from pydicom.uid import UID

    meta = getattr(dataset, "file_meta", None)
    sop_class = _text(dataset, "SOPClassUID") or (_text(meta, "MediaStorageSOPClassUID") if meta else "")
    row["sop_class_uid"] = sop_class
    try:
        row["sop_class_name"] = UID(sop_class).name if sop_class else "no SOPClassUID"
    except Exception:
        row["sop_class_name"] = sop_class
    row["modality"] = _text(dataset, "Modality")
    row["body_part"] = _text(dataset, "BodyPartExamined")
    row["view_position"] = _text(dataset, "ViewPosition")
    row["laterality"] = _text(dataset, "ImageLaterality") or _text(dataset, "Laterality")
    rows, columns = _int(dataset, "Rows", 0), _int(dataset, "Columns", 0)
    frames, samples = _int(dataset, "NumberOfFrames", 1), _int(dataset, "SamplesPerPixel", 1)
    row.update(rows=rows, columns=columns, number_of_frames=frames, samples_per_pixel=samples)
    row["pixel_count"] = max(rows, 0) * max(columns, 0) * max(frames, 1) * max(samples, 1)
    row["bits_allocated"] = _int(dataset, "BitsAllocated", 0)
    row["bits_stored"] = _int(dataset, "BitsStored", 0)
    row["photometric_interpretation"] = _text(dataset, "PhotometricInterpretation")
    syntax = _text(meta, "TransferSyntaxUID") if meta is not None else ""
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
    bits = _int(dataset, "BitsStored", 0)
    if not 1 <= bits <= 32:
        bits = sample.dtype.itemsize * 8
    if _int(dataset, "PixelRepresentation", 0) == 1:
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
    if _size_problem(file, config.max_file_bytes):
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
            data = _read_bounded(store, file.key, config.max_file_bytes)
    except StoreError as error:
        row["readable"], row["read_error"] = False, str(error)
        return
    if len(data) > config.max_file_bytes:
        row["size_bytes"] = len(data)  # grew since listing: refused by size
        return
    try:
        dataset, reached = _parse_header(data, whole_file=not ctx.header_only)
        if ctx.header_only and not reached:
            # Not conclusive from the prefix (long header, deflated, no pixels): parse the whole file once.
            if len(data) < file.size_bytes:
                data = _read_bounded(store, file.key, config.max_file_bytes)
            dataset, reached = _parse_header(data, whole_file=True)
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
        _fill_labels(row, store, label_files, dataset, ctx)
    if truth_files:
        _fill_truth(row, store, truth_files[0], uid, config)


def _fill_truth(
    row: dict[str, Any], store: ObjectStore, file: InputFile, uid: str, cfg: ValidationConfig
) -> None:
    problem = _size_problem(file, cfg.max_truth_bytes)
    if problem:
        row["truth_valid"], row["truth_error"] = False, f"{file.key} {problem}"
        return
    try:
        data = _read_bounded(store, file.key, cfg.max_truth_bytes)
        content = json.loads(data.decode("utf-8"))
    except (StoreError, UnicodeDecodeError, ValueError, RecursionError) as error:
        row["truth_valid"], row["truth_error"] = False, f"{file.key}: not valid JSON ({type(error).__name__})"
        return
    if not isinstance(content, dict):
        row["truth_valid"], row["truth_error"] = False, f"{file.key}: not a JSON object"
        return
    named = content.get("sop_instance_uid")
    if named is not None and str(named) != uid:
        row["truth_valid"], row["truth_error"] = False, f"{file.key} names another image ({named})"
        return
    row["truth_valid"], row["truth_error"] = True, ""
    row["truth_sha256"] = hashlib.sha256(data).hexdigest()


def _fill_labels(
    row: dict[str, Any], store: ObjectStore, files: list[InputFile], header: Any, ctx: ReaderContext
) -> None:
    formats = {f.label_format for f in files}
    row["label_format"] = "+".join(sorted(formats))
    if len(formats) > 1:
        row["label_readable"] = False
        row["label_error"] = "both a SEG and PNG masks are given for this image; keep one"
        return
    try:
        if formats == {"seg"}:
            _fill_seg_label(row, store, files[0], ctx)
        else:
            _fill_png_labels(row, store, files, header, ctx)
    except MemoryError:
        row["label_readable"], row["label_error"] = False, "reading the label ran out of memory"
    except Exception as error:  # a row, never a crash
        row["label_readable"] = False
        row["label_error"] = f"label could not be read: {type(error).__name__}: {error}"


def _fill_seg_label(row: dict[str, Any], store: ObjectStore, file: InputFile, ctx: ReaderContext) -> None:
    from orthoseg.radiograph import check_pixel_bounds
    from orthoseg.seg_io import SegmentationError, read_seg_masks

    config = ctx.config
    problem = _size_problem(file, config.max_file_bytes)
    if problem:
        row["label_readable"], row["label_error"] = False, f"{file.key} {problem}"
        return
    data = _read_bounded(store, file.key, config.max_file_bytes)
    try:
        header, _ = _parse_header(data, whole_file=False)
    except RadiographError as error:
        row["label_readable"], row["label_error"] = False, f"{file.key}: {error}"
        return
    if _text(header, "Modality") != "SEG":
        row["label_readable"] = False
        row["label_error"] = f"{file.key} is not a DICOM SEG (Modality={_text(header, 'Modality')!r})"
        return
    row["label_source_sha256"] = hashlib.sha256(data).hexdigest()
    row["label_binary"] = _text(header, "SegmentationType") == "BINARY"
    labels = [str(getattr(item, "SegmentLabel", "")) for item in getattr(header, "SegmentSequence", [])]
    unknown = sorted({label for label in labels if label not in BY_NAME})
    row["label_unknown_structures"] = ",".join(unknown)
    row["label_shape"] = f"{_int(header, 'Rows', 0)}x{_int(header, 'Columns', 0)}"
    if unknown:
        row["label_readable"], row["label_error"] = True, ""
        return
    try:
        check_pixel_bounds(header, config.max_pixels * NUM_STRUCTURES)
        masks, referenced = read_seg_masks(data)
    except (RadiographError, SegmentationError) as error:
        row["label_readable"], row["label_error"] = False, f"{file.key}: {error}"
        return
    row["label_readable"], row["label_error"] = True, ""
    row["label_references_image"] = referenced == row["sop_instance_uid"]
    _fill_mask_facts(row, masks)


def _fill_mask_facts(row: dict[str, Any], masks: np.ndarray) -> None:
    row["label_shape"] = f"{masks.shape[1]}x{masks.shape[2]}"
    row["label_shape_matches"] = tuple(masks.shape[1:]) == (row["rows"], row["columns"])
    row["label_has_femur"] = bool(masks[BY_NAME["femur"].channel].any())
    row["label_has_tibia"] = bool(masks[BY_NAME["tibia"].channel].any())


def _fill_png_labels(
    row: dict[str, Any], store: ObjectStore, files: list[InputFile], header: Any, ctx: ReaderContext
) -> None:
    from PIL import Image

    config = ctx.config
    rows, columns = row["rows"], row["columns"]
    unknown: list[str] = []
    digests: list[str] = []
    masks = np.zeros((NUM_STRUCTURES, max(rows, 1), max(columns, 1)), dtype=bool)
    binary, shape_matches, shapes = True, True, []
    for file in sorted(files, key=lambda f: f.key):
        name = file.key.split("/", 2)[2]
        stem = name[: -len(".png")] if name.lower().endswith(".png") else ""
        if "/" in name or stem not in STRUCTURE_NAMES:
            unknown.append(name)
            continue
        problem = _size_problem(file, config.max_file_bytes)
        if problem:
            row["label_readable"], row["label_error"] = False, f"{file.key} {problem}"
            return
        data = _read_bounded(store, file.key, config.max_file_bytes)
        digests.append(f"{name}:{hashlib.sha256(data).hexdigest()}")
        try:
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > config.max_pixels:
                raise ValueError(f"declares {width}x{height} pixels, over the limit")
            image.load()
        except Exception as error:
            row["label_readable"] = False
            row["label_error"] = f"{file.key}: not a readable PNG ({type(error).__name__}: {error})"
            return
        if image.format != "PNG":
            row["label_readable"], row["label_error"] = False, f"{file.key}: a {image.format} file, not PNG"
            return
        array = np.asarray(image)
        shapes.append(f"{height}x{width}")
        if (height, width) != (rows, columns):
            shape_matches = False
            continue
        values = np.unique(array) if array.ndim == 2 else np.array([])
        if array.ndim != 2 or len(values) > 2 or (len(values) == 2 and values[0] != 0):
            binary = False
            continue
        masks[BY_NAME[stem].channel] = array > 0
    row["label_readable"], row["label_error"] = True, ""
    row["label_unknown_structures"] = ",".join(unknown)
    row["label_source_sha256"] = hashlib.sha256("\n".join(digests).encode()).hexdigest()
    row["label_binary"] = binary
    row["label_references_image"] = True  # PNG masks are paired by their folder name alone
    mismatched = [s for s in shapes if s != f"{rows}x{columns}"]
    row["label_shape"] = mismatched[0] if mismatched else f"{rows}x{columns}"
    row["label_shape_matches"] = shape_matches
    if not shape_matches or not binary or unknown:
        return
    row["label_has_femur"] = bool(masks[BY_NAME["femur"].channel].any())
    row["label_has_tibia"] = bool(masks[BY_NAME["tibia"].channel].any())
    if ctx.staging_dir is not None:
        _stage_png_as_seg(row, header, masks, Path(ctx.staging_dir))


def _stage_png_as_seg(row: dict[str, Any], header: Any, masks: np.ndarray, staging_dir: Path) -> None:
    """Convert accepted-to-be PNG masks to SEG now, so a conversion failure is a reason, not a crash later."""
    from orthoseg.seg_io import build_seg, seg_to_bytes

    try:
        seg_bytes = seg_to_bytes(build_seg(header, masks, automatic=False))
    except Exception as error:
        row["label_readable"] = False
        row["label_error"] = f"PNG masks could not be converted to DICOM SEG: {type(error).__name__}: {error}"
        return
    staging_dir.mkdir(parents=True, exist_ok=True)
    target = staging_dir / f"{hashlib.sha256(row['file_key'].encode()).hexdigest()[:24]}.dcm"
    target.write_bytes(seg_bytes)
    row["label_staged_path"] = str(target)
