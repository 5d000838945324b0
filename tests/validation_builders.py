"""Builders for the validation tests: small DX radiographs and their labels, made on the fly (no binaries)."""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from orthoseg.labels import NUM_STRUCTURES

DX_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
UID_ROOT = "1.2.826.0.1.3680043.8.498.77"


def uid_for(index: int) -> str:
    return f"{UID_ROOT}.{index}"


def dx_dataset(
    index: int,
    *,
    rows: int = 160,
    columns: int = 128,
    patient_id: str | None = None,
    monochrome1: bool = False,
    body_part: str = "KNEE",
    deidentified: bool = True,
    pixels: np.ndarray | None = None,
) -> Any:
    """A de-identified 12-bit DX 'for presentation' knee image with a smooth phantom and noise."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    uid = uid_for(index)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DX_PRESENTATION
    meta.MediaStorageSOPInstanceUID = uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = DX_PRESENTATION
    ds.SOPInstanceUID = uid
    ds.StudyInstanceUID = f"{uid}.1"
    ds.SeriesInstanceUID = f"{uid}.2"
    ds.Modality = "DX"
    ds.BodyPartExamined = body_part
    ds.ViewPosition = "AP"
    ds.ImageLaterality = "R" if index % 2 else "L"
    ds.PatientID = patient_id if patient_id is not None else f"PAT{index:04d}"
    ds.PatientName = f"SYNTH^{index:04d}"
    if deidentified:
        ds.PatientIdentityRemoved = "YES"
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.ImagerPixelSpacing = [0.15, 0.15]
    if pixels is None:
        rng = np.random.default_rng(index)
        yy, xx = np.mgrid[0:rows, 0:columns]
        phantom = 600 + 2400 * np.exp(-(((xx - columns / 2) / (columns / 5)) ** 2))
        pixels = np.clip(phantom + rng.normal(0, 40, (rows, columns)), 0, 4095)
        if monochrome1:
            pixels = 4095 - pixels
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<u2").tobytes()
    return ds


def dicom_bytes(ds: Any, transfer_syntax: str | None = None) -> bytes:
    """Part 10 bytes, optionally re-encoded (RLE natively; JPEG-LS and JPEG 2000 by installed encoders)."""
    import copy

    import pydicom.uid

    ds = copy.deepcopy(ds)
    if transfer_syntax is not None:
        ds.compress(getattr(pydicom.uid, transfer_syntax))
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def knee_masks(rows: int, columns: int, femur: bool = True, tibia: bool = True) -> np.ndarray:
    masks = np.zeros((NUM_STRUCTURES, rows, columns), dtype=bool)
    masks[0, : rows // 2 - 4, columns // 4 : 3 * columns // 4] = femur
    masks[1, rows // 2 + 4 :, columns // 4 : 3 * columns // 4] = tibia
    masks[3, rows // 2 - 20 : rows // 2 - 6, columns // 3 : 2 * columns // 3] = True
    return masks


def seg_bytes(ds: Any, masks: np.ndarray) -> bytes:
    from orthoseg.seg_io import build_seg, seg_to_bytes

    return seg_to_bytes(build_seg(ds, masks, automatic=False))


def png_bytes(mask: np.ndarray, on_value: int = 255) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray((np.asarray(mask) > 0).astype(np.uint8) * on_value).save(buffer, format="PNG")
    return buffer.getvalue()
