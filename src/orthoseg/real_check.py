"""The sim-to-real check: a model on the few real films in ``shared/realdata`` (evaluation only).

Three real radiographs judge a model trained on the simulator (DESIGN.md section 6):

- ``knee_ap_native.png``: a real AP knee with femur/tibia labels covering only a band of rows around
  the joint. It is wrapped as a DICOM DX in memory (MONOCHROME2, 0.14 mm/px) and read back through
  ``orthoseg.radiograph.read_radiograph``, so it takes the decode path of inference; femur and tibia
  are scored (Dice, HD95 mm) only inside the rows their label covers.
- ``RG3_J2KR.dcm`` (distal tibia/fibula and ankle, CR) and ``RG2_JLSL.dcm`` (hip, CR): no labels, so
  the check reports the predicted area of each structure and whether an implant was called.

These files are never trained on and never copied into the repository.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from orthoseg.labels import BY_NAME, STRUCTURE_NAMES
from orthoseg.metrics import hd95_mm

if TYPE_CHECKING:
    from orthoseg.model_package import SegmentationModel
    from orthoseg.radiograph import Radiograph

logger = logging.getLogger(__name__)

KNEE_FILE = "knee_ap_native.png"
KNEE_LABELS_FILE = "knee_ap_native_labels.png"
# No spacing is recorded; from the anatomy (plateau ~541 px, condyles ~585 px) it is about 0.14 mm/px.
KNEE_SPACING_MM = 0.14
# Label values of the knee's label PNG.
KNEE_LABELS = {"femur": 1, "tibia": 2}
CR_FILES = ("RG3_J2KR.dcm", "RG2_JLSL.dcm")
IMPLANT_STRUCTURES = ("femoral_component", "tibial_component", "cement")
# Predicted area above which an implant structure counts as called (a small false blob does not).
IMPLANT_CALL_MM2 = 50.0
OVERLAY_MAX_SIDE_PX = 1024
_UID_NAMESPACE = uuid.UUID("0b6f6c1e-5a0e-4f64-9d8e-2f1f3a7c9b21")


def wrap_png_as_dx(pixels: np.ndarray, spacing_mm: float, name: str) -> bytes:
    """Wrap an 8- or 16-bit greyscale array as a DICOM DX 'For Presentation' file, in memory.

    MONOCHROME2, ImagerPixelSpacing and PixelSpacing set to ``spacing_mm``, no patient data, and UIDs
    derived from ``name`` and the pixels (the same image always gets the same SOPInstanceUID).

    Args:
        pixels: (H, W) unsigned integer image, higher = brighter.
        spacing_mm: isotropic pixel spacing in mm.
        name: a label for the UIDs and descriptions (e.g. the file name).

    Returns:
        DICOM file bytes (explicit VR little endian).

    Raises:
        ValueError: for a non-2-D array, a signed or float dtype, or a non-positive spacing.
    """
    import hashlib
    import io

    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian

    array = np.asarray(pixels)
    if array.ndim != 2 or array.dtype.kind != "u" or array.dtype.itemsize > 2:
        raise ValueError(f"need a 2-D uint8 or uint16 image; got shape {array.shape}, dtype {array.dtype}")
    if not spacing_mm > 0:
        raise ValueError(f"spacing_mm must be positive; got {spacing_mm}")
    digest = hashlib.sha256(array.tobytes()).hexdigest()

    def uid(role: str) -> UID:
        return UID(f"2.25.{uuid.uuid5(_UID_NAMESPACE, f'{name}|{digest}|{role}').int}")

    dx_sop_class = UID("1.2.840.10008.5.1.4.1.1.1.1")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = dx_sop_class
    meta.MediaStorageSOPInstanceUID = uid("image")
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = dx_sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = uid("study")
    ds.SeriesInstanceUID = uid("series")
    ds.Modality = "DX"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.PatientName = ""
    ds.PatientID = ""
    ds.PatientIdentityRemoved = "YES"
    ds.BodyPartExamined = "KNEE"
    ds.ViewPosition = "AP"
    ds.SeriesDescription = f"real check: {name}"
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.Rows, ds.Columns = array.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    bits = 8 * array.dtype.itemsize
    ds.BitsAllocated = 16
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    ds.ImagerPixelSpacing = [spacing_mm, spacing_mm]
    ds.PixelSpacing = [spacing_mm, spacing_mm]
    ds.PixelData = np.ascontiguousarray(array.astype("<u2")).tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def label_row_band(label: np.ndarray) -> tuple[int, int] | None:
    """First and last row (inclusive) where a 2-D mask has any pixel; None for an empty mask."""
    rows = np.flatnonzero(np.asarray(label, dtype=bool).any(axis=1))
    return (int(rows[0]), int(rows[-1])) if rows.size else None


def score_in_row_band(pred: np.ndarray, truth: np.ndarray, spacing_mm: tuple[float, float]) -> dict[str, Any]:
    """Dice and HD95 of one structure, counting only the rows its ground truth covers.

    A label that covers only a band of rows says nothing about the rest of the film, so a prediction
    outside the band is neither right nor wrong: both masks are cut to the band before scoring.

    Args:
        pred: (H, W) binary prediction.
        truth: (H, W) binary ground truth (its rows define the band).
        spacing_mm: (row, column) pixel spacing.

    Returns:
        ``{"band_rows": [first, last] | None, "dice": float | None, "hd95_mm": float | None,
        "hd95_miss": bool}``: None where nothing can be scored (empty truth; HD95 of a miss).

    Raises:
        ValueError: when the shapes differ.
    """
    pred_b, truth_b = np.asarray(pred, dtype=bool), np.asarray(truth, dtype=bool)
    if pred_b.shape != truth_b.shape or pred_b.ndim != 2:
        raise ValueError(f"need two 2-D masks of the same shape; got {pred_b.shape} and {truth_b.shape}")
    band = label_row_band(truth_b)
    if band is None:
        return {"band_rows": None, "dice": None, "hd95_mm": None, "hd95_miss": False}
    pred_band, truth_band = pred_b[band[0] : band[1] + 1], truth_b[band[0] : band[1] + 1]
    total = int(pred_band.sum()) + int(truth_band.sum())
    dice = 2.0 * int((pred_band & truth_band).sum()) / total
    distance = hd95_mm(pred_band, truth_band, spacing_mm)
    return {
        "band_rows": [band[0], band[1]],
        "dice": float(dice),
        "hd95_mm": float(distance) if math.isfinite(distance) else None,
        "hd95_miss": bool(math.isinf(distance)),
    }


def _areas_mm2(masks: np.ndarray, spacing_mm: tuple[float, float]) -> dict[str, float]:
    pixel_mm2 = float(spacing_mm[0]) * float(spacing_mm[1])
    return {name: round(float(masks[c].sum()) * pixel_mm2, 1) for c, name in enumerate(STRUCTURE_NAMES)}


def _implant_call(areas: dict[str, float]) -> dict[str, Any]:
    called = [name for name in IMPLANT_STRUCTURES if areas[name] > IMPLANT_CALL_MM2]
    return {"implant_called": bool(called), "implant_structures_called": called}


def _predict(model: SegmentationModel, radiograph: Radiograph) -> tuple[np.ndarray, tuple[float, float], str]:
    from orthoseg.evaluation import predict_native_masks
    from orthoseg.preprocessing import FALLBACK_SPACING_MM

    masks = predict_native_masks(model, radiograph.pixels, radiograph.pixel_spacing_mm)
    if radiograph.pixel_spacing_mm is not None:
        return masks, radiograph.pixel_spacing_mm, "header"
    return masks, (FALLBACK_SPACING_MM, FALLBACK_SPACING_MM), "fallback"


def _write_png(image: Any, path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG", compress_level=1)
    return str(path)


def _side_by_side(left: Any, right: Any, captions: tuple[str, str]) -> Any:
    from PIL import Image, ImageDraw

    gap, caption = 8, 14
    sheet = Image.new("RGB", (left.width + gap + right.width, caption + max(left.height, right.height)))
    draw = ImageDraw.Draw(sheet)
    for x, panel, text in ((0, left, captions[0]), (left.width + gap, right, captions[1])):
        draw.text((x + 2, 1), text, fill=(255, 255, 255))
        sheet.paste(panel, (x, caption))
    return sheet


def _check_knee(model: SegmentationModel, realdata_dir: Path, out_dir: Path) -> dict[str, Any]:
    from PIL import Image

    from orthoseg.overlay import render_overlay
    from orthoseg.radiograph import read_radiograph

    started = time.perf_counter()
    png = np.asarray(Image.open(realdata_dir / KNEE_FILE).convert("L"))
    labels = np.asarray(Image.open(realdata_dir / KNEE_LABELS_FILE))
    if labels.shape != png.shape:
        raise ValueError(f"{KNEE_LABELS_FILE} is {labels.shape} but {KNEE_FILE} is {png.shape}")
    radiograph = read_radiograph(wrap_png_as_dx(png, KNEE_SPACING_MM, KNEE_FILE))
    pred, spacing, spacing_source = _predict(model, radiograph)
    truth = np.zeros_like(pred)
    for name, value in KNEE_LABELS.items():
        truth[BY_NAME[name].channel] = labels == value
    scores = {
        name: score_in_row_band(pred[BY_NAME[name].channel], truth[BY_NAME[name].channel], spacing)
        for name in KNEE_LABELS
    }
    areas = _areas_mm2(pred, spacing)
    stem = Path(KNEE_FILE).stem
    overlay = render_overlay(radiograph.pixels, pred, max_side_px=OVERLAY_MAX_SIDE_PX)
    truth_panel = render_overlay(radiograph.pixels, truth, max_side_px=OVERLAY_MAX_SIDE_PX)
    side_by_side = _side_by_side(truth_panel, overlay, ("ground truth (label bands)", "prediction"))
    dice = [s["dice"] for s in scores.values() if s["dice"] is not None]
    return {
        "file": KNEE_FILE,
        "shape": list(radiograph.pixels.shape),
        "spacing_mm": list(spacing),
        # The PNG records none: the spacing estimated from the anatomy is written into the wrapped DICOM.
        "spacing_source": "estimated" if spacing_source == "header" else spacing_source,
        "band_scores": scores,
        "dice": {name: s["dice"] for name, s in scores.items()},
        "hd95_mm": {name: s["hd95_mm"] for name, s in scores.items()},
        "dice_mean": float(np.mean(dice)) if dice else None,
        "predicted_area_mm2": areas,
        **_implant_call(areas),
        "overlay": _write_png(overlay, out_dir / f"{stem}_overlay.png"),
        "side_by_side": _write_png(side_by_side, out_dir / f"{stem}_truth_vs_prediction.png"),
        "seconds": round(time.perf_counter() - started, 2),
    }


def _check_unlabelled(model: SegmentationModel, path: Path, out_dir: Path) -> dict[str, Any]:
    from orthoseg.overlay import render_overlay
    from orthoseg.radiograph import read_radiograph

    started = time.perf_counter()
    radiograph = read_radiograph(path.read_bytes())
    pred, spacing, spacing_source = _predict(model, radiograph)
    areas = _areas_mm2(pred, spacing)
    overlay = render_overlay(radiograph.pixels, pred, max_side_px=OVERLAY_MAX_SIDE_PX)
    return {
        "file": path.name,
        "modality": radiograph.attributes.get("Modality", ""),
        "body_part": radiograph.attributes.get("BodyPartExamined", ""),
        "photometric_interpretation": radiograph.photometric_interpretation,
        "shape": list(radiograph.pixels.shape),
        "spacing_mm": list(spacing),
        "spacing_source": spacing_source,
        "predicted_area_mm2": areas,
        "structures_found": [n for n in STRUCTURE_NAMES if areas[n] > IMPLANT_CALL_MM2],
        **_implant_call(areas),
        "overlay": _write_png(overlay, out_dir / f"{path.stem}_overlay.png"),
        "seconds": round(time.perf_counter() - started, 2),
    }


def run_real_check(model: SegmentationModel, realdata_dir: Path, out_dir: Path) -> dict[str, Any]:
    """Run a model on the real films and score what can be scored.

    Args:
        model: a ``SegmentationModel`` (its ``threshold`` is reported).
        realdata_dir: the ``shared/realdata`` folder (read only).
        out_dir: where overlay PNGs are written (created if needed).

    Returns:
        A JSON-ready dict: ``knee`` (band Dice and HD95 mm for femur and tibia, predicted areas, implant
        call, overlay and side-by-side paths), one entry per CR file (predicted areas in mm², implant
        call, overlay path; ``{"missing": true}`` when the file is absent), ``model`` (its threshold and
        preprocessing) and ``implant_call_mm2``.

    Raises:
        FileNotFoundError: when ``realdata_dir`` or the labelled knee is absent.
    """
    realdata_dir, out_dir = Path(realdata_dir), Path(out_dir)
    for required in (KNEE_FILE, KNEE_LABELS_FILE):
        if not (realdata_dir / required).is_file():
            raise FileNotFoundError(f"{realdata_dir / required} not found (the shared/realdata folder)")
    out_dir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "realdata_dir": str(realdata_dir),
        "model": {
            "threshold": float(model.threshold),
            "preprocess": model.preprocess.model_dump(mode="json"),
        },
        "implant_call_mm2": IMPLANT_CALL_MM2,
        "knee": _check_knee(model, realdata_dir, out_dir),
    }
    for name in CR_FILES:
        path = realdata_dir / name
        result[path.stem] = _check_unlabelled(model, path, out_dir) if path.is_file() else {"missing": True}
    knee = result["knee"]
    logger.info(
        "Real knee: femur Dice %s, tibia Dice %s (in the label bands)",
        knee["dice"]["femur"],
        knee["dice"]["tibia"],
    )
    return result
