"""The label and truth facts of one image's row: SEG or PNG masks (shape, binary, structures named) and
the ground-truth JSON, read with bounded memory in the image's worker."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from orthoseg.labels import BY_NAME, NUM_STRUCTURES, STRUCTURE_NAMES
from orthoseg.radiograph import RadiographError
from orthoseg.storage import ObjectStore, StoreError
from orthoseg.validation.dicom_access import int_value, parse_header, read_bounded, size_problem, text_value
from orthoseg.validation.inventory import InputFile
from orthoseg.validation_config import ValidationConfig

if TYPE_CHECKING:
    from orthoseg.validation.reader import ReaderContext


def fill_truth(
    row: dict[str, Any], store: ObjectStore, file: InputFile, uid: str, cfg: ValidationConfig
) -> None:
    problem = size_problem(file, cfg.max_truth_bytes)
    if problem:
        row["truth_valid"], row["truth_error"] = False, f"{file.key} {problem}"
        return
    try:
        data = read_bounded(store, file.key, cfg.max_truth_bytes)
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


def fill_labels(
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
    problem = size_problem(file, config.max_file_bytes)
    if problem:
        row["label_readable"], row["label_error"] = False, f"{file.key} {problem}"
        return
    data = read_bounded(store, file.key, config.max_file_bytes)
    try:
        header, _ = parse_header(data, whole_file=False)
    except RadiographError as error:
        row["label_readable"], row["label_error"] = False, f"{file.key}: {error}"
        return
    if text_value(header, "Modality") != "SEG":
        row["label_readable"] = False
        row["label_error"] = f"{file.key} is not a DICOM SEG (Modality={text_value(header, 'Modality')!r})"
        return
    row["label_source_sha256"] = hashlib.sha256(data).hexdigest()
    row["label_binary"] = text_value(header, "SegmentationType") == "BINARY"
    labels = [str(getattr(item, "SegmentLabel", "")) for item in getattr(header, "SegmentSequence", [])]
    unknown = sorted({label for label in labels if label not in BY_NAME})
    row["label_unknown_structures"] = ",".join(unknown)
    row["label_shape"] = f"{int_value(header, 'Rows', 0)}x{int_value(header, 'Columns', 0)}"
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
        problem = size_problem(file, config.max_file_bytes)
        if problem:
            row["label_readable"], row["label_error"] = False, f"{file.key} {problem}"
            return
        data = read_bounded(store, file.key, config.max_file_bytes)
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
