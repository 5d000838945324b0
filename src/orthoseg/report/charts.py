"""Tiny inline SVG charts for the run report (no plotting library, no scripts, readable offline)."""

from __future__ import annotations

import html
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from orthoseg.report.attention import AttentionRules, number, text_or_none

_BAR = "#4a78b5"
_RANGE = "#d8efd8"
_AXIS = "#666"


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _tick(value: float) -> str:
    """A short axis label: no trailing zeros, at most two decimals."""
    return f"{value:.2f}".rstrip("0").rstrip(".") if abs(value) < 100 else f"{value:.0f}"


def _empty_chart(title: str, width_px: int, height_px: int) -> str:
    return (
        f'<svg class="chart" width="{width_px}" height="{height_px}" '
        f'role="img" aria-label="{_e(title)}: no values"><text x="8" y="16" class="chart-title">{_e(title)}'
        f'</text><text x="{width_px / 2:.0f}" y="{height_px / 2:.0f}" text-anchor="middle" fill="{_AXIS}">'
        "no values</text></svg>"
    )


def svg_histogram(
    values: Iterable[float | None],
    *,
    title: str,
    unit: str = "",
    bins: int = 20,
    domain: tuple[float, float] | None = None,
    reference_range: tuple[float, float] | None = None,
    width_px: int = 360,
    height_px: int = 180,
) -> str:
    """A histogram as one inline ``<svg>`` element; each bar's tooltip gives its interval and count.

    Args:
        values: the numbers to count; None and non-finite values are left out.
        title: the chart's caption (escaped).
        unit: unit of the values, shown after the axis labels (``°``, ``mm``).
        bins: number of equal-width bins.
        domain: fixed (low, high) of the x axis (values outside are clipped into the end bins); None:
            the values' own range, widened to include ``reference_range``.
        reference_range: an acceptable (low, high) interval shaded behind the bars.
        width_px, height_px: size of the chart.

    Raises:
        ValueError: for fewer than one bin or a chart too small to draw.
    """
    if bins < 1:
        raise ValueError(f"bins must be at least 1; got {bins}")
    if width_px < 120 or height_px < 80:
        raise ValueError(f"a chart needs at least 120 x 80 px; got {width_px} x {height_px}")
    finite = np.asarray([float(v) for v in values if v is not None and math.isfinite(float(v))])
    if finite.size == 0:
        return _empty_chart(title, width_px, height_px)
    if domain is not None:
        low, high = domain
    else:
        low, high = float(finite.min()), float(finite.max())
        if reference_range is not None:
            low, high = min(low, reference_range[0]), max(high, reference_range[1])
    if high <= low:
        low, high = low - 0.5, high + 0.5
    counts, edges = np.histogram(np.clip(finite, low, high), bins=bins, range=(low, high))
    left, right, top, bottom = 34, 10, 22, 30
    plot_w, plot_h = width_px - left - right, height_px - top - bottom
    peak = max(1, int(counts.max()))

    def x_of(value: float) -> float:
        return left + (value - low) / (high - low) * plot_w

    parts = [
        f'<svg class="chart" width="{width_px}" height="{height_px}" '
        f'role="img" aria-label="{_e(title)}: histogram of {finite.size} values">',
        f'<text x="8" y="15" class="chart-title">{_e(title)} (n = {finite.size})</text>',
    ]
    if reference_range is not None:
        a, b = (x_of(min(max(v, low), high)) for v in reference_range)
        parts.append(
            f'<rect x="{a:.1f}" y="{top}" width="{max(0.0, b - a):.1f}" height="{plot_h}" fill="{_RANGE}">'
            f"<title>reference {_e(_tick(reference_range[0]))}–{_e(_tick(reference_range[1]))}{_e(unit)}"
            "</title></rect>"
        )
    bar_w = plot_w / bins
    for index, count in enumerate(counts):
        if count == 0:
            continue
        h = count / peak * plot_h
        interval = f"{_tick(edges[index])}–{_tick(edges[index + 1])}{unit}"
        parts.append(
            f'<rect x="{left + index * bar_w + 0.5:.1f}" y="{top + plot_h - h:.1f}" '
            f'width="{max(0.5, bar_w - 1):.1f}" height="{h:.1f}" fill="{_BAR}">'
            f"<title>{_e(interval)}: {int(count)}</title></rect>"
        )
    base = top + plot_h
    parts += [
        f'<line x1="{left}" y1="{base}" x2="{left + plot_w}" y2="{base}" stroke="{_AXIS}"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{base}" stroke="{_AXIS}"/>',
        f'<text x="{left - 4}" y="{top + 8}" text-anchor="end" class="tick">{peak}</text>',
        f'<text x="{left - 4}" y="{base}" text-anchor="end" class="tick">0</text>',
    ]
    for value, anchor in ((low, "start"), ((low + high) / 2, "middle"), (high, "end")):
        parts.append(
            f'<text x="{x_of(value):.1f}" y="{base + 14}" text-anchor="{anchor}" class="tick">'
            f"{_e(_tick(value))}{_e(unit)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def svg_bar_chart(counts: Mapping[str, int], *, title: str, width_px: int = 360) -> str:
    """Horizontal bars, one per category (most frequent first), as one inline ``<svg>`` element.

    Args:
        counts: category -> count (categories are escaped).
        title: the chart's caption.
        width_px: width of the chart; the height follows the number of categories (18 px each).
    """
    items = sorted(
        ((str(k), int(v)) for k, v in counts.items() if int(v) > 0), key=lambda kv: (-kv[1], kv[0])
    )
    if not items:
        return _empty_chart(title, width_px, 80)
    label_w, right, top, row_h = 110, 40, 22, 18
    height = top + row_h * len(items) + 6
    peak = max(count for _, count in items)
    plot_w = width_px - label_w - right
    parts = [
        f'<svg class="chart" width="{width_px}" height="{height}" '
        f'role="img" aria-label="{_e(title)}: bar chart">',
        f'<text x="8" y="15" class="chart-title">{_e(title)}</text>',
    ]
    for index, (label, count) in enumerate(items):
        y = top + index * row_h
        w = max(1.0, count / peak * plot_w)
        short = label if len(label) <= 18 else label[:17] + "…"
        parts.append(
            f'<text x="{label_w - 6}" y="{y + 12}" text-anchor="end" class="tick">{_e(short)}</text>'
            f'<rect x="{label_w}" y="{y + 2}" width="{w:.1f}" height="{row_h - 5}" fill="{_BAR}">'
            f"<title>{_e(label)}: {count}</title></rect>"
            f'<text x="{label_w + w + 4:.1f}" y="{y + 12}" class="tick">{count}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def distribution_charts(done: Sequence[Mapping[str, Any]], rules: AttentionRules) -> str:
    """The run's distributions as a report section: angle histograms with the attention ranges shaded,
    widest line, model confidence (when the column exists) and implant types."""

    def values(column: str) -> list[float | None]:
        return [number(r.get(column)) for r in done]

    charts = [
        svg_histogram(
            values("tibiofemoral_angle_deg"),
            title="tibiofemoral angle",
            unit="°",
            reference_range=rules.tibiofemoral_deg,
        ),
        svg_histogram(
            values("femoral_component_angle_deg"),
            title="α femoral component",
            unit="°",
            reference_range=rules.femoral_component_alpha_deg,
        ),
        svg_histogram(
            values("tibial_component_angle_deg"),
            title="β tibial component",
            unit="°",
            reference_range=rules.tibial_component_beta_deg,
        ),
    ]
    if any(v is not None for v in values("tibial_slope_angle_deg")):
        charts.append(
            svg_histogram(
                values("tibial_slope_angle_deg"),
                title="δ tibial slope",
                unit="°",
                reference_range=rules.tibial_slope_delta_deg,
            )
        )
    charts.append(svg_histogram(values("line_max_mm"), title="widest radiolucent line", unit=" mm"))
    if any("model_confidence" in r for r in done):
        charts.append(svg_histogram(values("model_confidence"), title="model confidence", domain=(0.0, 1.0)))
    implants = Counter(text_or_none(r.get("implant_type")) or "(missing)" for r in done)
    charts.append(svg_bar_chart(implants, title="implant types"))
    figures = "".join(f"<figure>{chart}</figure>" for chart in charts)
    return f'<section id="distributions"><h2>Distributions</h2><div class="charts">{figures}</div></section>'
