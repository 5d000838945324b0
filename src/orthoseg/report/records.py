"""Per-image records of a report: frame rows without NaN, and the compact JSON the page pages through."""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from orthoseg.report.attention import AttentionReason, number, text_or_none, zone_widths

if TYPE_CHECKING:
    import pandas as pd

ANGLE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("tibiofemoral_angle_deg", "TF"),
    ("femoral_component_angle_deg", "α"),
    ("tibial_component_angle_deg", "β"),
    ("femoral_flexion_angle_deg", "γ"),
    ("tibial_slope_angle_deg", "δ"),
)
"""Angle columns (degrees) and the symbol the report shows (TF: tibiofemoral, valgus positive)."""

GAP_COLUMNS: tuple[tuple[str, str], ...] = (
    ("joint_space_medial_mm", "medial"),
    ("joint_space_lateral_mm", "lateral"),
)
"""Joint-space columns (mm) and their labels."""

AREA_COLUMNS: tuple[tuple[str, str], ...] = (
    ("femur_area_mm2", "femur"),
    ("tibia_area_mm2", "tibia"),
    ("fibula_area_mm2", "fibula"),
    ("patella_area_mm2", "patella"),
    ("femoral_component_area_mm2", "femoral comp."),
    ("tibial_component_area_mm2", "tibial comp."),
    ("cement_area_mm2", "cement"),
)
"""Structure-area columns (mm²) and their labels."""

_SAFE_SCHEMES = frozenset({"", "http", "https", "file"})


def escape(value: object) -> str:
    """Any value as escaped HTML text (floats with one decimal, missing values empty)."""
    return html.escape(format_value(value), quote=True)


def format_value(value: object) -> str:
    """A cell value as text: None/NaN empty, floats with one decimal."""
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.1f}"
    return str(value)


def frame_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The frame's rows as dicts, NaN/NA replaced by None (any columns, any dtypes)."""
    if len(frame) == 0:
        return []
    cleaned = frame.astype(object).where(frame.notna(), None)
    return [{str(k): v for k, v in row.items()} for row in cleaned.to_dict(orient="records")]


def safe_link(link: object) -> str | None:
    """A relative, http(s) or file link, or None for anything else (``javascript:``, ``data:`` ...)."""
    text = text_or_none(link)
    if text is None:
        return None
    try:
        scheme = urlsplit(text).scheme.lower()
    except ValueError:
        return None
    return text if scheme in _SAFE_SCHEMES else None


def thumbnail_data_uri(data: bytes) -> str:
    """Image bytes as a ``data:`` URI (JPEG unless the bytes say PNG), so the report needs no other file."""
    mime = "image/png" if data[:8] == b"\x89PNG\r\n\x1a\n" else "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _pairs(record: Mapping[str, Any], columns: Sequence[tuple[str, str]]) -> list[list[Any]]:
    pairs = []
    for column, label in columns:
        value = number(record.get(column))
        if value is not None:
            pairs.append([label, round(value, 2)])
    return pairs


def client_record(
    record: Mapping[str, Any],
    reasons: Sequence[AttentionReason],
    *,
    thumbnail: bytes | None,
    overlay_link: str | None,
) -> dict[str, Any]:
    """What the page's script shows for one image: short keys, rounded numbers, no NaN.

    Angles, gaps and areas are ``[label, value]`` pairs of the measured values only; ``out`` lists the
    angle symbols outside the attention rules; ``img`` is the thumbnail's data URI, else the overlay link.
    """
    flagged_columns = {reason.column for reason in reasons}
    out = [symbol for column, symbol in ANGLE_COLUMNS if column in flagged_columns]
    return {
        "uid": text_or_none(record.get("sop_instance_uid")) or "",
        "view": text_or_none(record.get("view_position")),
        "side": text_or_none(record.get("knee")) or text_or_none(record.get("laterality")),
        "implant": text_or_none(record.get("implant_type")),
        "fixation": text_or_none(record.get("fixation")),
        "angles": _pairs(record, ANGLE_COLUMNS),
        "out": out,
        "gaps": _pairs(record, GAP_COLUMNS),
        "zones": [[zone, round(width, 2)] for zone, width in zone_widths(record)],
        "lineMax": _rounded(number(record.get("line_max_mm"))),
        "lineFlag": text_or_none(record.get("line_flag")),
        "quality": text_or_none(record.get("quality_flag")),
        "notes": text_or_none(record.get("quality_notes")),
        "measurementFlags": text_or_none(record.get("measurement_flags")),
        "confidence": _rounded(number(record.get("model_confidence"))),
        "areas": _pairs(record, AREA_COLUMNS),
        "attention": [reason.text for reason in reasons],
        "img": thumbnail_data_uri(thumbnail) if thumbnail else overlay_link,
        "href": overlay_link,
    }


def script_json(value: object) -> str:
    """JSON safe to embed in ``<script type="application/json">``: no ``<``, ``>`` or ``&`` (so no ``</``)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def view_side(record: Mapping[str, Any]) -> str:
    """``AP · L``: view and the knee's side (a bilateral film's rows each name their knee)."""
    side = text_or_none(record.get("knee")) or text_or_none(record.get("laterality"))
    parts = (text_or_none(record.get("view_position")), side)
    return " · ".join(p for p in parts if p)


def _pairs_html(record: Mapping[str, Any], columns: Sequence[tuple[str, str]], unit: str) -> str:
    return "".join(
        f"<div>{escape(label)} {value:.1f}{unit}</div>"
        for column, label in columns
        if (value := number(record.get(column))) is not None
    )


def static_image_rows(done: Sequence[Mapping[str, Any]], links: Mapping[str, str | None]) -> str:
    """Every image as a plain table for readers without scripts (overlay files by relative link)."""
    rows = []
    for record in done:
        uid = text_or_none(record.get("sop_instance_uid")) or ""
        link = links.get(uid)
        image = (
            f'<img class="thumb" loading="lazy" src="{escape(link)}" alt="overlay {escape(uid)}">'
            if link
            else ""
        )
        zones = "".join(f"<div>{escape(z)} {w:.1f} mm</div>" for z, w in zone_widths(record))
        quality = text_or_none(record.get("quality_flag"))
        css = "flag-ok" if quality == "ok" else "flag-bad"
        rows.append(
            f"<tr><td>{image}</td><td><div class=uid>{escape(uid)}</div>{escape(view_side(record))}</td>"
            f"<td>{escape(record.get('implant_type'))}"
            f"<div class=note>{escape(record.get('fixation'))}</div></td>"
            f'<td class="num">{_pairs_html(record, ANGLE_COLUMNS, "°")}</td>'
            f'<td class="num">{_pairs_html(record, GAP_COLUMNS, " mm")}</td>'
            f'<td class="num">{zones}<div class=bad>{escape(record.get("line_flag"))}</div></td>'
            f'<td class="{css}">{escape(quality)}'
            f'<div class="note">{escape(record.get("quality_notes"))}</div>'
            f'<div class="note">{escape(_areas_text(record))}</div></td></tr>'
        )
    return "".join(rows)


def _areas_text(record: Mapping[str, Any]) -> str:
    values = [(label, number(record.get(column))) for column, label in AREA_COLUMNS]
    return ", ".join(f"{label} {value:.1f}" for label, value in values if value is not None)
