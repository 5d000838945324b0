"""``render_inference_report``: the run's page, from summary to attention list, images, charts, failures."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from orthoseg.report.assets import PAGE_SIZE, SCRIPT, STYLE
from orthoseg.report.attention import (
    AttentionReason,
    AttentionRules,
    attention_reasons,
    attention_sort_key,
    number,
    text_or_none,
)
from orthoseg.report.charts import distribution_charts
from orthoseg.report.records import (
    client_record,
    escape,
    frame_records,
    safe_link,
    script_json,
    static_image_rows,
    view_side,
)

if TYPE_CHECKING:
    import pandas as pd
    from pydantic import BaseModel

logger = logging.getLogger(__name__)

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

_IMAGE_HEADINGS = (
    "overlay",
    "image",
    "implant / fixation",
    "angles (°) TF valgus +",
    "joint space",
    "lines per zone",
    "quality",
)


def _uid(record: Mapping[str, Any]) -> str:
    return text_or_none(record.get("sop_instance_uid")) or ""


def _jump(uid: str) -> str:
    """A link to the image's row in the paged list (the script turns the page); plain text without it."""
    return f'<a class="jump uid" href="#img-{escape(uid)}" data-uid="{escape(uid)}">{escape(uid)}</a>'


def _overlay_cell(link: str | None) -> str:
    return f'<a href="{escape(link)}" target="_blank" rel="noopener">overlay</a>' if link else ""


def _reasons_list(reasons: Sequence[AttentionReason]) -> str:
    items = "".join(f"<li>{escape(r.text)}</li>" for r in reasons)
    return f'<ul class="reasons">{items}</ul>' if items else ""


def _summary_section(data: Mapping[str, Any], counts: str) -> str:
    rows = "".join(
        f"<tr><th>{escape(heading)}</th><td>{escape(data[key])}</td></tr>"
        for key, heading in _SUMMARY_FIELDS
        if key in data
    )
    return (
        '<section id="summary"><h2>Run summary</h2>'
        f'<table class="summary">{rows}</table><p>{counts}</p>'
        '<p class="disclaimer">Model output on radiographs; not a diagnosis. Lengths in mm from the DICOM '
        "pixel spacing, angles in degrees.</p></section>"
    )


def _rules_note(rules: AttentionRules) -> str:
    def span(values: tuple[float, float]) -> str:
        return f"{values[0]:g}–{values[1]:g}°"

    return (
        '<p class="note">Listed: radiolucent lines flagged by the measurement (wide in a zone, or present in '
        f"every zone of a component); tibiofemoral angle outside {span(rules.tibiofemoral_deg)} (valgus "
        f"positive); α outside {span(rules.femoral_component_alpha_deg)}; β outside "
        f"{span(rules.tibial_component_beta_deg)}; δ outside {span(rules.tibial_slope_delta_deg)}; a quality "
        "flag other than ok. Progressive lines need an earlier film of the same knee and are not assessed "
        "here.</p>"
    )


def _attention_section(
    flagged: Sequence[tuple[Mapping[str, Any], list[AttentionReason]]],
    links: Mapping[str, str | None],
    rules: AttentionRules,
) -> str:
    head = f"<h2>Needs attention ({len(flagged)})</h2>"
    if not flagged:
        return f'<section id="attention">{head}<p>No image needs attention.</p>{_rules_note(rules)}</section>'
    rows = []
    for record, reasons in flagged:
        uid = _uid(record)
        rows.append(
            f'<tr><td class="thumb-slot" data-uid="{escape(uid)}"></td><td>{_jump(uid)}'
            f"<div>{escape(view_side(record))}</div></td>"
            f"<td>{escape(record.get('implant_type'))}</td><td>{_reasons_list(reasons)}</td>"
            f"<td>{_overlay_cell(links.get(uid))}</td></tr>"
        )
    return (
        f'<section id="attention">{head}{_rules_note(rules)}<table><thead><tr><th></th><th>image</th>'
        "<th>implant</th><th>why</th><th>full size</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></section>"
    )


def _annotate_section(
    annotate_next: Sequence[str],
    by_uid: Mapping[str, Mapping[str, Any]],
    reasons_by_uid: Mapping[str, list[AttentionReason]],
) -> str:
    if not annotate_next:
        return ""
    uids = list(dict.fromkeys(str(uid) for uid in annotate_next))
    position = {uid: index for index, uid in enumerate(uids)}

    def confidence(uid: str) -> float | None:
        return number(by_uid.get(uid, {}).get("model_confidence"))

    ordered = sorted(
        uids,
        key=lambda uid: (confidence(uid) is None, confidence(uid) or 0.0, position[uid]),
    )
    rows = []
    for rank, uid in enumerate(ordered, start=1):
        record = by_uid.get(uid, {})
        value = confidence(uid)
        rows.append(
            f'<tr><td class="num">{rank}</td><td class="thumb-slot" data-uid="{escape(uid)}"></td>'
            f"<td>{_jump(uid)}<div>{escape(view_side(record))}</div></td>"
            f'<td class="num">{"" if value is None else f"{value:.2f}"}</td>'
            f"<td>{escape(record.get('implant_type'))}</td><td>{escape(record.get('quality_flag'))}</td>"
            f"<td>{_reasons_list(reasons_by_uid.get(uid, []))}</td></tr>"
        )
    return (
        f'<section id="annotate"><h2>Annotate next ({len(ordered)})</h2>'
        '<p class="note">Images whose manual annotation would teach the model most, least model confidence '
        "first.</p><table><thead><tr><th>#</th><th></th><th>image</th><th>model confidence</th>"
        "<th>implant</th><th>quality</th><th>needs attention</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></section>"
    )


def _pager() -> str:
    return (
        '<div class="controls pager needs-js" hidden><button type="button" class="prev">« prev</button>'
        '<span>page <input type="number" min="1" value="1" aria-label="page number"> of '
        '<span class="page-count">1</span> (<span class="match-count">0</span> images)</span>'
        '<button type="button" class="next">next »</button></div>'
    )


def _images_section(done: Sequence[Mapping[str, Any]], links: Mapping[str, str | None]) -> str:
    if not done:
        return '<section id="images"><h2>All images</h2><p>No image was measured.</p></section>'
    implants = sorted({t for r in done if (t := text_or_none(r.get("implant_type")))})
    options = "".join(f'<option value="{escape(t)}">{escape(t)}</option>' for t in implants)
    head = "".join(f"<th>{escape(h)}</th>" for h in _IMAGE_HEADINGS)
    return (
        f'<section id="images"><h2>All images ({len(done)})</h2>'
        '<div class="controls needs-js" hidden><input type="search" id="image-filter" '
        'placeholder="filter: implant, flag, view, uid (e.g. tka wide)" aria-label="filter images">'
        '<select id="implant-filter" aria-label="implant type"><option value="">all implants</option>'
        f"{options}</select>"
        '<label><input type="checkbox" id="attention-only"> needs attention only</label></div>'
        f"{_pager()}<table><thead><tr>{head}"
        '<th id="confidence-head" hidden>model confidence</th></tr></thead><tbody id="image-rows"></tbody>'
        f"</table>{_pager()}"
        f"<noscript><p class=note>Scripts are off: every image below, overlays linked from the run's "
        f"overlays/ folder.</p><table><thead><tr>{head}</tr></thead>"
        f"<tbody>{static_image_rows(done, links)}</tbody></table></noscript></section>"
    )


def _failure_section(failed: Sequence[Mapping[str, Any]]) -> str:
    if not failed:
        return ""
    rows = "".join(
        f"<tr><td>{escape(r.get('image_key'))}</td><td>{escape(r.get('sop_instance_uid'))}</td>"
        f"<td>{escape(r.get('reason'))}</td></tr>"
        for r in failed
    )
    return (
        f'<section id="failures"><h2>Failures ({len(failed)})</h2><table><thead><tr><th>image</th>'
        f"<th>SOPInstanceUID</th><th>reason</th></tr></thead><tbody>{rows}</tbody></table></section>"
    )


def render_inference_report(
    summary: BaseModel | Mapping[str, Any],
    measurements_df: pd.DataFrame,
    overlay_keys: Mapping[str, str],
    *,
    thumbnails: Mapping[str, bytes] | None = None,
    attention: AttentionRules | None = None,
    annotate_next: Sequence[str] = (),
) -> str:
    """Render the run's report as one self-contained HTML page (inline style, script, images and charts).

    Order: run summary; images that need attention, each with why (flagged radiolucent lines, angles
    outside ``attention``, quality flags; progressive lines are not computed, they need an earlier run);
    images to annotate next; every image, 50 a page, drawn by an inline script from one JSON block (so
    1,000 images stay one light page); distribution charts; failures. Without scripts the summary,
    attention list and a plain table of every image (overlay files linked) still read.

    Args:
        summary: the run's ``InferenceSummary`` (or its ``model_dump()``).
        measurements_df: one row per image, as written to ``measurements.parquet`` (``status`` is ``ok``
            or ``failed``; failed rows carry a ``reason``). Missing columns and NaN are tolerated; an
            optional ``model_confidence`` column in [0, 1] is shown when present.
        overlay_keys: SOPInstanceUID -> overlay link relative to the report (``overlays/<uid>.png``).
        thumbnails: SOPInstanceUID -> small JPEG (``orthoseg.overlay.thumbnail_jpeg``), embedded as data
            URIs; images without one show their overlay link instead.
        attention: angle ranges for the attention list; None: ``AttentionRules()`` defaults.
        annotate_next: SOPInstanceUIDs suggested for annotation (shown least model confidence first).

    Returns:
        The HTML text; every value taken from the data is escaped, also inside the JSON block.
    """
    data = summary.model_dump(mode="json") if hasattr(summary, "model_dump") else dict(summary)
    rules = attention or AttentionRules()
    thumbs = thumbnails or {}
    links = {str(uid): safe_link(link) for uid, link in overlay_keys.items()}
    records = frame_records(measurements_df)
    done = [r for r in records if r.get("status") != "failed"]
    failed = [r for r in records if r.get("status") == "failed"]
    reasons = [attention_reasons(r, rules) for r in done]
    flagged = sorted(
        ((r, why) for r, why in zip(done, reasons, strict=True) if why),
        key=lambda item: attention_sort_key(item[1]),
    )
    by_uid = {_uid(r): r for r in done}
    reasons_by_uid = {_uid(r): why for r, why in zip(done, reasons, strict=True)}
    client = [
        client_record(r, why, thumbnail=thumbs.get(_uid(r)), overlay_link=links.get(_uid(r)))
        for r, why in zip(done, reasons, strict=True)
    ]
    quality_flagged = sum(1 for r in done if text_or_none(r.get("quality_flag")) not in (None, "ok"))
    counts = (
        f"{len(done)} image(s) measured, {len(flagged)} need attention, {quality_flagged} with a quality "
        f"flag other than ok, {len(failed)} failed."
    )
    title = f"orthoseg inference — {data.get('model_name', '')} v{data.get('model_version', '')}"
    nav = "".join(
        f'<a href="#{anchor}">{text}</a>'
        for anchor, text, shown in (
            ("summary", "summary", True),
            ("attention", f"needs attention ({len(flagged)})", True),
            ("annotate", "annotate next", bool(annotate_next)),
            ("images", "all images", True),
            ("distributions", "distributions", True),
            ("failures", f"failures ({len(failed)})", bool(failed)),
        )
        if shown
    )
    logger.debug("report: %d measured, %d need attention, %d failed", len(done), len(flagged), len(failed))
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{escape(title)}</title><style>{STYLE}</style></head>",
            f'<body data-page-size="{PAGE_SIZE}" data-records="{len(client)}">',
            f"<header><h1>{escape(title)}</h1><nav>{nav}</nav></header><main>",
            _summary_section(data, counts),
            _attention_section(flagged, links, rules),
            _annotate_section(annotate_next, by_uid, reasons_by_uid),
            _images_section(done, links),
            distribution_charts(done, rules),
            _failure_section(failed),
            "</main>",
            f'<script type="application/json" id="image-records">{script_json(client)}</script>',
            f'<script type="text/javascript">{SCRIPT}</script>',
            "</body></html>",
        ]
    )
