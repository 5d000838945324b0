"""Small DICOM radiographs built in memory for tests of the readers (the simulator makes realistic ones)."""

from __future__ import annotations

import io

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

DX_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.1.1"


def make_dx(
    pixels: np.ndarray,
    *,
    spacing_mm: float | None = 0.2,
    photometric: str = "MONOCHROME2",
    rescale: tuple[float, float] | None = None,
    uid: str | None = None,
) -> Dataset:
    """A minimal DX 'For Presentation' dataset around 16-bit stored pixels."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = DX_SOP_CLASS
    ds.SOPClassUID = DX_SOP_CLASS
    ds.SOPInstanceUID = uid or generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.FrameOfReferenceUID = generate_uid()
    ds.Modality = "DX"
    ds.BodyPartExamined = "KNEE"
    ds.ViewPosition = "AP"
    ds.ImageLaterality = "R"
    ds.PatientOrientation = ["L", "F"]
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    if spacing_mm is not None:
        ds.ImagerPixelSpacing = [spacing_mm, spacing_mm]
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
    ds.PixelData = np.ascontiguousarray(pixels.astype(np.uint16)).tobytes()
    return ds


def to_bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
