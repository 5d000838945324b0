"""The HTML report of an inference run: counts, model version, measurements per image, overlays, failures."""

from __future__ import annotations

import html
import logging
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from pydantic import BaseModel

logger = logging.getLogger(__name__)

# Columns shown in the per-image table, in order, with their headings (units in the heading).
_TABLE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("quality_flag", "quality"),
    ("implant_type", "implant"),
    ("fixation", "fixation"),
    ("tibiofemoral_angle_deg", "tibiofemoral angle (°)"),
    ("femur_area_mm2", "femur (mm²)"),
    ("tibia_area_mm2", "tibia (mm²)"),
    ("femoral_component_area_mm2", "femoral comp. (mm²)"),
    ("tibial_component_area_mm2", "tibial comp. (mm²)"),
    ("cement_area_mm2", "cement (mm²)"),
    ("tibial_component_extent_mm", "tibial comp. extent (mm)"),
    ("view_position", "view"),
    ("laterality", "side"),
)

_SUMMARY_FIELDS: tuple[tuple[str, str], ...] = (
    ("model_name", "model"),
    ("model_version", "model version"),
    ("run_id", "run id"),
    ("source", "source"),
    ("images_total", "images"),
    ("images_inferred", "inferred now"),
    ("images_skipped", "already done (skipped)"),
    ("images_failed", "failed"),
    ("output_prefix", "output prefix"),
    ("seconds", "seconds"),
)

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #222; }
h1 { font-size: 1.4rem; } h2 { font-size: 1.15rem; margin-top: 2rem; }
table { border-collapse: collapse; font-size: 0.85rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
img.thumb { max-width: 160px; max-height: 160px; display: block; }
.flag-ok { color: #1b7f3b; } .flag-bad { color: #b3261e; font-weight: 600; }
.note { color: #555; font-size: 0.8rem; }
"""


def _e(value: object) -> str:
    """Escape any value for HTML text or attributes."""
    return html.escape(_text(value), quote=True)


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return f"{value:.1f}"
    return str(value)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _summary_table(summary: Mapping[str, Any]) -> str:
    rows = []
    for key, heading in _SUMMARY_FIELDS:
        if key in summary:
            rows.append(f"<tr><th>{_e(heading)}</th><td>{_e(summary[key])}</td></tr>")
    return "<table>" + "".join(rows) + "</table>"


def _records(measurements: pd.DataFrame) -> list[dict[str, Any]]:
    frame = measurements.astype(object).where(measurements.notna(), None)
    return list(frame.to_dict(orient="records"))


def _image_table(records: list[dict[str, Any]], overlay_links: Mapping[str, str]) -> str:
    present = [(key, heading) for key, heading in _TABLE_COLUMNS if any(key in r for r in records)]
    head = "".join(f"<th>{_e(h)}</th>" for h in ("overlay", "SOPInstanceUID", *[h for _, h in present]))
    body = []
    for record in records:
        uid = _text(record.get("sop_instance_uid"))
        link = overlay_links.get(uid)
        thumb = (
            f'<a href="{_e(link)}"><img class="thumb" src="{_e(link)}" alt="overlay {_e(uid)}"></a>'
            if link
            else ""
        )
        cells = [f"<td>{thumb}</td>", f"<td>{_e(uid)}</td>"]
        for key, _ in present:
            value = record.get(key)
            if key == "quality_flag":
                css = "flag-ok" if value == "ok" else "flag-bad"
                notes = record.get("quality_notes")
                note = f'<div class="note">{_e(notes)}</div>' if notes else ""
                cells.append(f'<td class="{css}">{_e(value)}{note}</td>')
            elif _is_number(value):
                cells.append(f'<td class="num">{_e(value)}</td>')
            else:
                cells.append(f"<td>{_e(value)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _failure_table(records: list[dict[str, Any]]) -> str:
    rows = "".join(
        f"<tr><td>{_e(r.get('image_key'))}</td><td>{_e(r.get('sop_instance_uid'))}</td>"
        f"<td>{_e(r.get('reason'))}</td></tr>"
        for r in records
    )
    return (
        "<table><thead><tr><th>image</th><th>SOPInstanceUID</th><th>reason</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
    )


def render_inference_report(
    summary: BaseModel | Mapping[str, Any],
    measurements_df: pd.DataFrame,
    overlay_keys: Mapping[str, str],
) -> str:
    """Render the run's report as one self-contained HTML page (no scripts, no external styles).

    Args:
        summary: the run's ``InferenceSummary`` (or its ``model_dump()``).
        measurements_df: one row per image, as written to ``measurements.parquet`` (``status`` is
            ``ok`` or ``failed``; failed rows carry a ``reason``).
        overlay_keys: SOPInstanceUID -> overlay link relative to the report (``overlays/<uid>.png``).

    Returns:
        The HTML text; every value taken from the data is escaped.
    """
    data = summary.model_dump(mode="json") if hasattr(summary, "model_dump") else dict(summary)
    records = _records(measurements_df) if len(measurements_df) else []
    done = [r for r in records if r.get("status") != "failed"]
    failed = [r for r in records if r.get("status") == "failed"]
    title = f"orthoseg inference — {data.get('model_name', '')} v{data.get('model_version', '')}"
    flagged = sum(1 for r in done if r.get("quality_flag") not in (None, "ok"))
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        _summary_table(data),
        f"<p>{len(done)} image(s) measured, {flagged} with a quality flag other than ok, "
        f"{len(failed)} failed.</p>",
        '<p class="note">Model output on radiographs; not a diagnosis. Lengths in mm from the DICOM '
        "pixel spacing, angles in degrees.</p>",
        "<h2>Measurements per image</h2>",
        _image_table(done, overlay_keys) if done else "<p>No image was measured.</p>",
    ]
    if failed:
        parts += ["<h2>Failures</h2>", _failure_table(failed)]
    parts.append("</body></html>")
    return "\n".join(parts)
