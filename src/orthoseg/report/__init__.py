"""The HTML report of an inference run, the page a surgeon reads.

Modules, one job each: ``attention`` (which images need a look first, and why), ``records`` (frame rows
to escaped text and the page's JSON), ``charts`` (inline SVG histograms and bars), ``assets`` (inline
style and script) and ``page`` (``render_inference_report``).
"""

from orthoseg.report.attention import AttentionReason, AttentionRules, attention_reasons, rank_for_attention
from orthoseg.report.charts import svg_bar_chart, svg_histogram
from orthoseg.report.page import render_inference_report

__all__ = [
    "AttentionReason",
    "AttentionRules",
    "attention_reasons",
    "rank_for_attention",
    "render_inference_report",
    "svg_bar_chart",
    "svg_histogram",
]
