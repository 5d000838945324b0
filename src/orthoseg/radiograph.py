"""Reading radiographs safely: header first, bounded pixel decoding, presentation-ready values."""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field

import numpy as np

logger = logging.getLogger(__name__)

# A knee film is at most ~43 cm at ~0.1 mm/px: anything far past this is hostile or broken.
MAX_PIXELS = 8192 * 8192


class RadiographError(ValueError):
    """A file that cannot be used as a radiograph; the message says why in words a person can act on."""


@dataclass
class Radiograph:
    """One radiograph's pixels in presentation order (higher = more attenuation = brighter).

    Attributes:
        pixels: native-resolution image, float32, after modality rescale and MONOCHROME1 inversion.
        pixel_spacing_mm: (row, column) spacing in millimetres, or None when the file has none.
        sop_instance_uid: the image's SOPInstanceUID, the key of every result.
        photometric_interpretation: as stored (MONOCHROME1 or MONOCHROME2).
        laterality: 'L', 'R' or '' (ImageLaterality, else Laterality).
        view_position: 'AP', 'PA', 'LL', 'ML', ... or ''.
        attributes: selected non-identifying header values, for reports.
    """

    pixels: np.ndarray
    pixel_spacing_mm: tuple[float, float] | None
    sop_instance_uid: str
    photometric_interpretation: str
    laterality: str = ""
    view_position: str = ""
    attributes: dict[str, str] = field(default_factory=dict)


SPACING_KEYWORDS = ("PixelSpacing", "ImagerPixelSpacing")


def pixel_spacing_with_source(dataset: object) -> tuple[tuple[float, float], str] | None:
    """(row, column) pixel spacing in mm and the attribute it came from, as ``pixel_spacing_mm`` picks it.

    PixelSpacing (patient plane) wins when it holds two positive numbers, else ImagerPixelSpacing
    (detector plane); None when neither does.
    """
    for keyword in SPACING_KEYWORDS:
        value = getattr(dataset, keyword, None)
        if value is None:
            continue
        try:
            row, col = float(value[0]), float(value[1])
        except (TypeError, ValueError, IndexError):
            continue
        if row > 0 and col > 0 and np.isfinite(row) and np.isfinite(col):
            return (row, col), keyword
    return None


def pixel_spacing_mm(dataset: object) -> tuple[float, float] | None:
    """Pixel spacing in mm: PixelSpacing if present, else ImagerPixelSpacing (detector plane).

    Returns None when neither is present or the values are not positive numbers.
    """
    found = pixel_spacing_with_source(dataset)
    return None if found is None else found[0]


def read_header(data: bytes) -> object:
    """Parse a DICOM header without touching pixel data.

    Raises:
        RadiographError: when the bytes are not a readable DICOM file.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    if len(data) == 0:
        raise RadiographError("empty file (0 bytes)")
    try:
        return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    except InvalidDicomError as error:
        raise RadiographError(f"not a DICOM file: {error}") from None
    except Exception as error:  # pydicom raises many types on broken input
        raise RadiographError(f"unreadable DICOM header: {type(error).__name__}: {error}") from None


def check_pixel_bounds(dataset: object, max_pixels: int = MAX_PIXELS) -> None:
    """Refuse declared image sizes that are absurd before any pixel buffer is allocated.

    Raises:
        RadiographError: with the declared values when they are missing or out of bounds.
    """
    rows = int(getattr(dataset, "Rows", 0) or 0)
    columns = int(getattr(dataset, "Columns", 0) or 0)
    frames = int(getattr(dataset, "NumberOfFrames", 1) or 1)
    samples = int(getattr(dataset, "SamplesPerPixel", 1) or 1)
    if rows <= 0 or columns <= 0:
        raise RadiographError(f"image has no valid size (Rows={rows}, Columns={columns})")
    if rows * columns * frames * samples > max_pixels:
        raise RadiographError(
            f"declared image size {rows}x{columns}x{frames} frames exceeds the limit of {max_pixels} pixels"
        )


def decode_pixels(data: bytes, max_pixels: int = MAX_PIXELS) -> tuple[object, np.ndarray]:
    """Decode a single-frame greyscale image after checking its declared size.

    Compressed transfer syntaxes are decoded by pydicom's plugins (pylibjpeg, openjpeg, RLE).

    Returns:
        The full dataset and its stored pixel array (raw stored values, no rescale).

    Raises:
        RadiographError: for non-image files, multi-frame or colour images, sizes past the limit,
            truncated or undecodable pixel data.
    """
    import pydicom

    header = read_header(data)
    check_pixel_bounds(header, max_pixels)
    frames = int(getattr(header, "NumberOfFrames", 1) or 1)
    if frames != 1:
        raise RadiographError(f"multi-frame object ({frames} frames); a radiograph has one frame")
    samples = int(getattr(header, "SamplesPerPixel", 1) or 1)
    if samples != 1:
        raise RadiographError(f"colour image (SamplesPerPixel={samples}); radiographs are greyscale")
    try:
        dataset = pydicom.dcmread(io.BytesIO(data))
    except Exception as error:
        raise RadiographError(f"unreadable DICOM file: {type(error).__name__}: {error}") from None
    if "PixelData" not in dataset:
        raise RadiographError("no pixel data (not an image object)")
    transfer_syntax = dataset.file_meta.get("TransferSyntaxUID") if hasattr(dataset, "file_meta") else None
    if transfer_syntax is not None and not transfer_syntax.is_compressed:
        bits_allocated = int(getattr(dataset, "BitsAllocated", 16) or 16)
        expected = int(dataset.Rows) * int(dataset.Columns) * max(bits_allocated // 8, 1)
        if bits_allocated == 1:
            expected = (int(dataset.Rows) * int(dataset.Columns) + 7) // 8
        actual = len(dataset.PixelData)
        if actual < expected:
            raise RadiographError(
                f"pixel data truncated: {actual} bytes present, {expected} declared by "
                f"{dataset.Rows}x{dataset.Columns}x{bits_allocated} bits"
            )
    try:
        stored = dataset.pixel_array
    except Exception as error:
        syntax_name = getattr(transfer_syntax, "name", str(transfer_syntax))
        raise RadiographError(
            f"pixel data could not be decoded ({syntax_name}): {type(error).__name__}: {error}"
        ) from None
    if stored.ndim != 2:
        raise RadiographError(f"pixel array has shape {stored.shape}; expected one greyscale frame")
    return dataset, stored


def to_presentation(dataset: object, stored: np.ndarray) -> np.ndarray:
    """Apply modality rescale and MONOCHROME1 inversion so that brighter always means denser."""
    slope = float(getattr(dataset, "RescaleSlope", 1.0) or 1.0)
    intercept = float(getattr(dataset, "RescaleIntercept", 0.0) or 0.0)
    values = stored.astype(np.float32) * np.float32(slope) + np.float32(intercept)
    if str(getattr(dataset, "PhotometricInterpretation", "MONOCHROME2")).upper() == "MONOCHROME1":
        values = values.max() + values.min() - values
    return values


def read_radiograph(data: bytes, max_pixels: int = MAX_PIXELS) -> Radiograph:
    """Read a radiograph from DICOM bytes into presentation-ready pixels with its spacing and keys.

    Raises:
        RadiographError: when the file is not a usable single-frame greyscale image.
    """
    dataset, stored = decode_pixels(data, max_pixels)
    laterality = str(getattr(dataset, "ImageLaterality", "") or getattr(dataset, "Laterality", "") or "")
    uid = str(getattr(dataset, "SOPInstanceUID", "") or "")
    if not uid:
        raise RadiographError("no SOPInstanceUID: results could not be keyed to this image")
    return Radiograph(
        pixels=to_presentation(dataset, stored),
        pixel_spacing_mm=pixel_spacing_mm(dataset),
        sop_instance_uid=uid,
        photometric_interpretation=str(getattr(dataset, "PhotometricInterpretation", "")),
        laterality=laterality.upper(),
        view_position=str(getattr(dataset, "ViewPosition", "") or "").upper(),
        attributes={
            "Modality": str(getattr(dataset, "Modality", "")),
            "BodyPartExamined": str(getattr(dataset, "BodyPartExamined", "")),
            "StudyInstanceUID": str(getattr(dataset, "StudyInstanceUID", "")),
            "SeriesInstanceUID": str(getattr(dataset, "SeriesInstanceUID", "")),
        },
    )
