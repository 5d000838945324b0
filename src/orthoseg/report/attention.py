"""Which measured images a surgeon should look at first, and why, in words.

An image needs attention when its radiolucent lines are flagged, when its quality flag is not ``ok``, or
when an alignment angle lies outside ``AttentionRules``. Progressive lines (a line that widened since an
earlier film of the same knee) need the earlier run's measurements; they are not computed here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

from orthoseg.measure.result import ZONE_FIELDS

# Ranks of the reasons: loosening signs first, then malalignment, then image quality.
_LINES, _ALIGNMENT, _QUALITY = 0, 1, 2


class AttentionRules(BaseModel):
    """Angle ranges (degrees, inclusive) outside which an image is listed under "Needs attention".

    The defaults are the Knee Society radiographic ranges commonly used after knee arthroplasty
    (femoral component angle alpha 95 ± 3°, tibial component angle beta 90 ± 3°; Ewald 1989), with
    alpha's upper bound at 100° because 95-97° is quoted as ideal, and a tibial slope delta of 80-93° on
    the lateral view (90° minus a posterior slope of up to 10°, or an anterior tilt of up to 3°).

    Attributes:
        tibiofemoral_deg: AP tibiofemoral angle, signed, valgus positive; below: varus, above: valgus.
        femoral_component_alpha_deg: AP femoral component angle alpha.
        tibial_component_beta_deg: AP tibial component angle beta (below 90: varus).
        tibial_slope_delta_deg: lateral tibial slope angle delta (90 minus the posterior slope).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    tibiofemoral_deg: tuple[float, float] = (0.0, 10.0)
    femoral_component_alpha_deg: tuple[float, float] = (92.0, 100.0)
    tibial_component_beta_deg: tuple[float, float] = (87.0, 93.0)
    tibial_slope_delta_deg: tuple[float, float] = (80.0, 93.0)

    @model_validator(mode="after")
    def _check_ranges(self) -> AttentionRules:
        for name in type(self).model_fields:
            low, high = getattr(self, name)
            if not (math.isfinite(low) and math.isfinite(high) and low < high):
                raise ValueError(
                    f"{name} must be a finite (low, high) range with low < high; got {(low, high)}"
                )
        return self


@dataclass(frozen=True)
class AttentionReason:
    """One reason an image needs attention.

    Attributes:
        text: what a person reads (``line 2.3 mm in tibia_1M``, ``β 84.1° (varus)``).
        rank: 0 radiolucent lines, 1 alignment, 2 image quality (lower is listed first).
        magnitude: how far it is (line width in mm, degrees beyond the range); orders within a rank.
        column: the measurement column it is about (``tibial_component_angle_deg``, ``line_max_mm``).
    """

    text: str
    rank: int
    magnitude: float = 0.0
    column: str = ""


# column, symbol shown, rules field, words for (below, above) the range; None: say "below"/"above".
_ANGLES: tuple[tuple[str, str, str, tuple[str, str] | None], ...] = (
    ("tibiofemoral_angle_deg", "tibiofemoral", "tibiofemoral_deg", ("varus", "valgus")),
    ("femoral_component_angle_deg", "α", "femoral_component_alpha_deg", None),
    ("tibial_component_angle_deg", "β", "tibial_component_beta_deg", ("varus", "valgus")),
    ("tibial_slope_angle_deg", "δ", "tibial_slope_delta_deg", None),
)


def number(value: object) -> float | None:
    """A finite float from a frame cell, or None (missing, NaN, text)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        result = float(value)  # type: ignore[arg-type]  # any cell: what float() cannot read is None
    except (TypeError, ValueError):
        return None
    return result if math.isfinite(result) else None


def text_or_none(value: object) -> str | None:
    """A non-empty string from a frame cell, or None (missing, NaN, empty)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value).strip()
    return text or None


def zone_widths(record: Mapping[str, Any]) -> list[tuple[str, float]]:
    """(zone, width mm) of every zone the record measured, in ``ZONE_FIELDS`` order."""
    widths = []
    for column, zone in ZONE_FIELDS.items():
        width = number(record.get(column))
        if width is not None:
            widths.append((zone, width))
    return widths


def _line_reasons(record: Mapping[str, Any]) -> list[AttentionReason]:
    flag = text_or_none(record.get("line_flag"))
    if flag is None:
        return []
    widths = zone_widths(record)
    widest = max(widths, key=lambda zone_width: zone_width[1]) if widths else None
    line_max = number(record.get("line_max_mm"))
    size = widest[1] if widest else (line_max or 0.0)
    reasons = []
    for part in (p.strip() for p in flag.split(";")):
        if not part:
            continue
        if part == "wide" and widest is not None:
            reasons.append(
                AttentionReason(f"line {widest[1]:.1f} mm in {widest[0]}", _LINES, size, "line_max_mm")
            )
        elif part == "wide" and line_max is not None:
            reasons.append(AttentionReason(f"line {line_max:.1f} mm", _LINES, size, "line_max_mm"))
        elif part.startswith("all_zones:"):
            bones = part.split(":", 1)[1].replace(",", ", ")
            reasons.append(AttentionReason(f"lines in every zone of {bones}", _LINES, size, "line_max_mm"))
        else:
            reasons.append(AttentionReason(f"line flag: {part}", _LINES, size, "line_max_mm"))
    return reasons


def _angle_reasons(record: Mapping[str, Any], rules: AttentionRules) -> list[AttentionReason]:
    reasons = []
    for column, symbol, field, words in _ANGLES:
        value = number(record.get(column))
        if value is None:
            continue
        low, high = getattr(rules, field)
        if low <= value <= high:
            continue
        below = value < low
        if words is None:
            side = f"{'below' if below else 'above'} {low:g}–{high:g}°"
        else:
            side = words[0] if below else words[1]
        beyond = (low - value) if below else (value - high)
        reasons.append(AttentionReason(f"{symbol} {value:.1f}° ({side})", _ALIGNMENT, beyond, column))
    return reasons


def attention_reasons(
    record: Mapping[str, Any], rules: AttentionRules | None = None
) -> list[AttentionReason]:
    """Every reason one measured image needs attention, most urgent first; empty when it needs none."""
    rules = rules or AttentionRules()
    reasons = _line_reasons(record) + _angle_reasons(record, rules)
    quality = text_or_none(record.get("quality_flag"))
    if quality is not None and quality != "ok":
        reasons.append(AttentionReason(f"quality: {quality}", _QUALITY, 0.0, "quality_flag"))
    return sorted(reasons, key=lambda r: (r.rank, -r.magnitude))


def attention_sort_key(reasons: Sequence[AttentionReason]) -> tuple[int, int, float]:
    """Sort key of one image's (sorted, non-empty) reasons: most urgent rank first, then more reasons,
    then the larger magnitude (wider line, further out of range)."""
    return (reasons[0].rank, -len(reasons), -reasons[0].magnitude)


def rank_for_attention(
    records: Iterable[Mapping[str, Any]], rules: AttentionRules | None = None
) -> list[tuple[Mapping[str, Any], list[AttentionReason]]]:
    """The records that need attention with their reasons, most urgent first (``attention_sort_key``;
    ties keep the input order)."""
    rules = rules or AttentionRules()
    found = [(record, attention_reasons(record, rules)) for record in records]
    flagged = [(record, reasons) for record, reasons in found if reasons]
    return sorted(flagged, key=lambda item: attention_sort_key(item[1]))
