"""Pixel spacing plausibility per modality: the value, the attribute it came from and the range, in words."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from orthoseg.settings import Settings
from orthoseg.storage import LocalStore
from orthoseg.validation import ValidationConfig
from orthoseg.validation.inventory import take_inventory
from orthoseg.validation.reader import ReaderContext, read_image
from orthoseg.validation.spacing import judge_spacing, spacing_range_mm
from tests.validation_builders import dicom_bytes, dx_dataset


def _row(tmp_path: Path, ds: Any) -> dict[str, Any]:
    (tmp_path / "images").mkdir(parents=True, exist_ok=True)
    (tmp_path / "images" / "film.dcm").write_bytes(dicom_bytes(ds))
    store = LocalStore(tmp_path)
    context = ReaderContext(store.uri, None, True, ValidationConfig(workers=1), "salt")
    (file,) = take_inventory(store).images
    return read_image(store, file, context)


@pytest.mark.parametrize(
    ("spacing", "plausible", "words"),
    [
        (0.15, True, "within 0.05 to 1 mm"),
        (5.0, False, "ImagerPixelSpacing declares 5 x 5 mm per pixel (row x column): too coarse"),
        (0.001, False, "ImagerPixelSpacing declares 0.001 x 0.001 mm per pixel (row x column): too fine"),
    ],
)
def test_a_dx_film_is_judged_against_its_modality_range(
    tmp_path: Path, spacing: float, plausible: bool, words: str
) -> None:
    ds = dx_dataset(1)
    ds.ImagerPixelSpacing = [spacing, spacing]
    row = _row(tmp_path, ds)
    judge_spacing(row, ValidationConfig())
    assert row["pixel_spacing_plausible"] is plausible
    assert (row["pixel_spacing_min_mm"], row["pixel_spacing_max_mm"]) == (0.05, 1.0)
    assert words in row["pixel_spacing_detail"]
    if not plausible:
        assert "accepted for Modality DX is 0.05 to 1 mm per pixel" in row["pixel_spacing_detail"]


def test_one_bad_axis_is_enough_and_the_source_is_the_attribute_used(tmp_path: Path) -> None:
    ds = dx_dataset(2)
    ds.PixelSpacing = [0, 0]  # unusable (not positive): the reader falls back to ImagerPixelSpacing
    ds.ImagerPixelSpacing = [0.15, 1.8]
    row = _row(tmp_path, ds)
    assert row["pixel_spacing_source"] == "ImagerPixelSpacing"
    judge_spacing(row, ValidationConfig())
    assert row["pixel_spacing_plausible"] is False
    assert "0.15 x 1.8 mm" in row["pixel_spacing_detail"]
    ds.PixelSpacing = [0.2, 0.2]  # PixelSpacing wins when usable, as everywhere else in orthoseg
    row = _row(tmp_path / "again", ds)
    judge_spacing(row, ValidationConfig())
    assert row["pixel_spacing_source"] == "PixelSpacing" and row["pixel_spacing_plausible"] is True


def test_no_spacing_and_other_modalities(tmp_path: Path) -> None:
    ds = dx_dataset(3)
    del ds.ImagerPixelSpacing
    row = _row(tmp_path, ds)
    judge_spacing(row, ValidationConfig())
    assert row["pixel_spacing_plausible"] is None  # missing spacing is its own reason, not this one
    config = ValidationConfig()
    assert spacing_range_mm("cr ", config) == (0.05, 1.0)
    assert spacing_range_mm("MG", config) == config.pixel_spacing_range_mm
    generic = {"item_kind": "image", "has_pixel_spacing": True, "modality": "MG"}
    generic.update(pixel_spacing_row_mm=3.0, pixel_spacing_col_mm=3.0, pixel_spacing_source="PixelSpacing")
    judge_spacing(generic, config)
    assert generic["pixel_spacing_plausible"] is True and "by default" in generic["pixel_spacing_detail"]


def test_ranges_come_from_settings_and_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORTHOSEG_VALIDATION__PIXEL_SPACING_RANGES_MM", '{"dx": [0.1, 0.3]}')
    monkeypatch.setenv("ORTHOSEG_VALIDATION__FILE_TIME_LIMIT_S", "7.5")
    config = ValidationConfig.from_settings(Settings())
    assert config.pixel_spacing_ranges_mm == {"DX": (0.1, 0.3)}
    assert config.file_time_limit_s == 7.5
    row = {"item_kind": "image", "has_pixel_spacing": True, "modality": "DX", "pixel_spacing_source": ""}
    row.update(pixel_spacing_row_mm=0.5, pixel_spacing_col_mm=0.5)
    judge_spacing(row, config)
    assert row["pixel_spacing_plausible"] is False and "0.1 to 0.3 mm" in row["pixel_spacing_detail"]
    monkeypatch.delenv("ORTHOSEG_VALIDATION__PIXEL_SPACING_RANGES_MM")
    assert ValidationConfig.from_settings(Settings()).pixel_spacing_ranges_mm["DX"] == (0.05, 1.0)
    with pytest.raises(ValidationError, match="0 < low < high"):
        ValidationConfig(pixel_spacing_ranges_mm={"DX": (1.0, 0.5)})
