"""The human-readable validation report: per-expectation pass/fail and every file's verdict with reasons."""

from __future__ import annotations

import html
from typing import Any

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
.pass { color: #1a7f37; font-weight: bold; } .fail { color: #cf222e; font-weight: bold; }
.warn { color: #9a6700; font-weight: bold; } .muted { color: #666; }
code { font-size: 0.9em; }
"""


def _cell(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _status(entry: dict[str, Any]) -> str:
    if entry["success"]:
        return '<span class="pass">pass</span>'
    css = {"critical": "fail", "warning": "warn"}.get(entry["severity"], "muted")
    return f'<span class="{css}">fail ({_cell(entry["unexpected_count"])})</span>'


def _reason_list(reasons: list[dict[str, Any]]) -> str:
    items = []
    for reason in reasons:
        text = f"<b>{_cell(reason['kind'])}</b>: {_cell(reason['message'])}"
        if "observed" in reason:
            text += f" &mdash; observed <code>{_cell(reason['observed'])}</code>"
        if reason.get("detail"):
            text += f" <span class='muted'>({_cell(reason['detail'])})</span>"
        items.append(f"<li>{text}</li>")
    return "<ul>" + "".join(items) + "</ul>"


def render_report(
    summary: dict[str, Any], expectations: list[dict[str, Any]], files: list[dict[str, Any]]
) -> str:
    """HTML a person can open: the summary, each expectation's result, each file's verdict and reasons.

    Args:
        summary: the ``ValidationSummary`` (or pre-screen summary) as a dict.
        expectations: per-expectation entries from ``SuiteOutcome.expectations``.
        files: one entry per input file: key, verdict, reasons, warnings.
    """
    title = (
        f"orthoseg validation &mdash; batch {_cell(summary.get('batch'))} ({_cell(summary.get('purpose'))})"
    )
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>",
        f"<style>{_STYLE}</style></head><body><h1>{title}</h1>",
        "<table>",
    ]
    for key in (
        "source",
        "files_total",
        "accepted",
        "quarantined",
        "dataset_version",
        "manifest_key",
        "quarantine_prefix",
        "accounting",
        "validated_by",
        "seconds",
    ):
        if key in summary:
            parts.append(f"<tr><th>{_cell(key)}</th><td>{_cell(summary[key])}</td></tr>")
    parts.append("</table>")
    if summary.get("data_docs_index"):
        parts.append(
            f"<p>Great Expectations Data Docs: <a href='{_cell(summary['data_docs_index'])}'>"
            f"{_cell(summary['data_docs_index'])}</a></p>"
        )
    parts.append(
        "<h2>Expectations</h2><table><tr><th>kind</th><th>expectation</th><th>column</th>"
        "<th>severity</th><th>expected</th><th>result</th><th>what it means</th></tr>"
    )
    for entry in expectations:
        parts.append(
            f"<tr><td>{_cell(entry['kind'])}</td><td><code>{_cell(entry['expectation'])}</code></td>"
            f"<td><code>{_cell(entry['column'])}</code></td><td>{_cell(entry['severity'])}</td>"
            f"<td><code>{_cell(entry['expected'])}</code></td><td>{_status(entry)}</td>"
            f"<td>{_cell(entry['message'])}</td></tr>"
        )
    parts.append("</table>")
    quarantined = [f for f in files if f["verdict"] == "quarantined"]
    warned = [f for f in files if f["verdict"] == "accepted" and f.get("warnings")]
    parts.append(f"<h2>Quarantined files ({len(quarantined)})</h2>")
    if quarantined:
        parts.append("<table><tr><th>file</th><th>reasons</th></tr>")
        for entry in quarantined:
            parts.append(
                f"<tr><td><code>{_cell(entry['file'])}</code></td><td>{_reason_list(entry['reasons'])}</td></tr>"
            )
        parts.append("</table>")
    parts.append(f"<h2>Accepted with warnings ({len(warned)})</h2>")
    if warned:
        parts.append("<table><tr><th>file</th><th>warnings</th></tr>")
        for entry in warned:
            parts.append(
                f"<tr><td><code>{_cell(entry['file'])}</code></td><td>{_reason_list(entry['warnings'])}</td></tr>"
            )
        parts.append("</table>")
    accepted = [f for f in files if f["verdict"] == "accepted"]
    parts.append(
        f"<h2>Accepted files ({len(accepted)})</h2><table><tr><th>file</th><th>dataset row</th></tr>"
    )
    for entry in accepted:
        parts.append(
            f"<tr><td><code>{_cell(entry['file'])}</code></td>"
            f"<td>{_cell(entry.get('stored_as', ''))}</td></tr>"
        )
    parts.append("</table></body></html>")
    return "\n".join(parts)
