"""Is the declared pixel spacing plausible for the modality? Facts for the suite, in words a person acts on.

A knee film declaring 5 mm pixels (a 2000-pixel film 10 m wide) or 0.001 mm pixels is mislabelled: the value
is in another unit, a downsampling was not recorded, or the fields are swapped. Every millimetre measurement
would be wrong by that factor, so the spacing is judged against a range per Modality
(``ValidationConfig.pixel_spacing_ranges_mm``). The spacing judged is the one the rest of orthoseg uses
(``orthoseg.radiograph.pixel_spacing_with_source``: PixelSpacing, else ImagerPixelSpacing).

Nothing here decides: the row gets ``pixel_spacing_plausible`` and the Great Expectations suite refuses it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from orthoseg.validation_config import ValidationConfig


def spacing_range_mm(modality: str, config: ValidationConfig) -> tuple[float, float]:
    """The plausible (lowest, highest) pixel spacing in millimetres for a Modality value."""
    return config.pixel_spacing_ranges_mm.get((modality or "").strip().upper(), config.pixel_spacing_range_mm)


def _format_mm(value: float) -> str:
    return f"{value:g}"


def judge_spacing(row: dict[str, Any], config: ValidationConfig) -> None:
    """Fill the plausibility columns of one image row (left undetermined when the row has no spacing).

    Sets ``pixel_spacing_plausible`` (bool), ``pixel_spacing_min_mm`` / ``pixel_spacing_max_mm`` (the range
    applied, mm) and ``pixel_spacing_detail`` (the value, the attribute it came from and the range).
    """
    row_mm, col_mm = row.get("pixel_spacing_row_mm"), row.get("pixel_spacing_col_mm")
    if (
        row.get("item_kind") != "image"
        or not row.get("has_pixel_spacing")
        or row_mm is None
        or col_mm is None
    ):
        return
    modality = str(row.get("modality") or "")
    low, high = spacing_range_mm(modality, config)
    row["pixel_spacing_min_mm"], row["pixel_spacing_max_mm"] = float(low), float(high)
    outside = [value for value in (float(row_mm), float(col_mm)) if not low <= value <= high]
    row["pixel_spacing_plausible"] = not outside
    source = row.get("pixel_spacing_source") or "PixelSpacing or ImagerPixelSpacing"
    declared = f"{source} declares {_format_mm(float(row_mm))} x {_format_mm(float(col_mm))} mm per pixel"
    accepted = f"{_format_mm(low)} to {_format_mm(high)} mm"
    whose = f"for Modality {modality}" if modality in config.pixel_spacing_ranges_mm else "by default"
    if not outside:
        row["pixel_spacing_detail"] = f"{declared} (row x column), within {accepted} ({whose})"
        return
    hint = "too coarse" if max(outside) > high else "too fine"
    row["pixel_spacing_detail"] = (
        f"{declared} (row x column): {hint}; accepted {whose} is {accepted} per pixel. Check the unit and "
        "whether the image was resized without updating the spacing, or widen "
        "ORTHOSEG_VALIDATION__PIXEL_SPACING_RANGES_MM if this is genuine"
    )


def judge_all(rows: Iterable[dict[str, Any]], config: ValidationConfig) -> None:
    """``judge_spacing`` on every row (rows that are not images, or have no spacing, are left as they are)."""
    for row in rows:
        judge_spacing(row, config)
