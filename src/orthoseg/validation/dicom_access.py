"""Reading a batch's files with bounded memory, and DICOM values that never raise.

Shared by the image reader (``reader``) and the label reader (``label_reader``), which run in workers.
"""

from __future__ import annotations

import io
from typing import Any

from orthoseg.radiograph import RadiographError
from orthoseg.storage import ObjectStore
from orthoseg.validation.inventory import InputFile

# (7FE0,0010) Pixel Data as it starts an element, little and big endian.
PIXEL_TAGS = (b"\xe0\x7f\x10\x00", b"\x7f\xe0\x00\x10")


def text_value(dataset: Any, keyword: str) -> str:
    """An attribute as upper-case text (multi-values joined by a backslash); "" when absent or broken."""
    try:
        value = getattr(dataset, keyword, None)
    except Exception:  # broken values raise on conversion
        return ""
    if value is None:
        return ""
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value).strip().upper()
    return str(value).strip().upper()


def int_value(dataset: Any, keyword: str, default: int) -> int:
    """An attribute as an int: ``default`` when absent or empty, 0 when broken."""
    try:
        value = getattr(dataset, keyword, None)
        return default if value is None or value == "" else int(value)
    except Exception:
        return 0


def size_problem(file: InputFile, limit: int) -> str:
    """Why a listed file is not read (a link, empty, over ``limit`` bytes), or "" when it is read."""
    if file.is_link:
        return "is a symbolic link (links are not followed)"
    if file.size_bytes <= 0:
        return "is empty (0 bytes)"
    if file.size_bytes > limit:
        return f"is {file.size_bytes} bytes, over the {limit}-byte limit"
    return ""


def read_bounded(store: ObjectStore, key: str, limit: int) -> bytes:
    """Read at most ``limit + 1`` bytes, so an object that grew past the listing is still caught."""
    return store.get_bytes(key, max_bytes=limit + 1)


def parse_header(data: bytes, whole_file: bool) -> tuple[Any, bool]:
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
    return dataset, data[position : position + 4] in PIXEL_TAGS
