"""Reading radiographs: presentation values, spacing, and clear refusals for unusable files."""

from __future__ import annotations

import numpy as np
import pytest

from orthoseg.radiograph import RadiographError, read_header, read_radiograph
from tests.dicom_factory import make_dx, to_bytes


def test_monochrome1_is_inverted_so_bright_means_dense() -> None:
    pixels = np.tile(np.arange(0, 4000, 100, dtype=np.uint16), (40, 1))
    mono2 = read_radiograph(to_bytes(make_dx(pixels)))
    mono1 = read_radiograph(to_bytes(make_dx(pixels, photometric="MONOCHROME1")))
    assert mono2.pixels[0, -1] > mono2.pixels[0, 0]
    assert mono1.pixels[0, -1] < mono1.pixels[0, 0]
    np.testing.assert_allclose(mono1.pixels, mono2.pixels[:, ::-1])


def test_rescale_slope_and_intercept_are_applied() -> None:
    pixels = np.full((8, 8), 100, dtype=np.uint16)
    image = read_radiograph(to_bytes(make_dx(pixels, rescale=(2.0, -50.0))))
    assert float(image.pixels[0, 0]) == pytest.approx(150.0)


def test_spacing_prefers_pixel_spacing_and_falls_back_to_imager() -> None:
    ds = make_dx(np.zeros((4, 4), np.uint16), spacing_mm=0.15)
    assert read_radiograph(to_bytes(ds)).pixel_spacing_mm == (0.15, 0.15)
    ds.PixelSpacing = [0.12, 0.13]
    assert read_radiograph(to_bytes(ds)).pixel_spacing_mm == (0.12, 0.13)
    assert (
        read_radiograph(to_bytes(make_dx(np.zeros((4, 4), np.uint16), spacing_mm=None))).pixel_spacing_mm
        is None
    )


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda data: b"", "empty file"),
        (lambda data: b"not a dicom file at all" * 10, "not a DICOM"),
        (lambda data: data[: len(data) // 2], "truncated"),
    ],
)
def test_broken_files_are_refused_with_a_reason(mutate: object, message: str) -> None:
    data = to_bytes(make_dx(np.ones((64, 64), np.uint16)))
    with pytest.raises(RadiographError, match=message):
        read_radiograph(mutate(data))  # type: ignore[operator]


def test_absurd_declared_size_is_refused_before_allocation() -> None:
    ds = make_dx(np.ones((4, 4), np.uint16))
    ds.Rows, ds.Columns = 60000, 60000
    with pytest.raises(RadiographError, match="exceeds the limit"):
        read_radiograph(to_bytes(ds))


def test_header_reader_never_touches_pixels() -> None:
    header = read_header(to_bytes(make_dx(np.ones((16, 16), np.uint16))))
    assert "PixelData" not in header
