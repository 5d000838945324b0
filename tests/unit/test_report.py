"""The run report: attention and its reasons, escaping, old frames, the paged JSON block, charts."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from orthoseg.report import (
    AttentionRules,
    attention_reasons,
    rank_for_attention,
    render_inference_report,
    svg_bar_chart,
    svg_histogram,
)

HOSTILE = "<script>alert(1)</script>"
SUMMARY = {"model_name": "orthoseg-knee", "model_version": "3", "run_id": "r", "images_total": 3}


def _row(uid: str, **values: object) -> dict[str, object]:
    base: dict[str, object] = {
        "sop_instance_uid": uid,
        "image_key": f"{uid}.dcm",
        "status": "ok",
        "view_position": "AP",
        "laterality": "L",
        "implant_type": "tka",
        "fixation": "cemented",
        "tibiofemoral_angle_deg": 5.0,
        "femoral_component_angle_deg": 96.0,
        "tibial_component_angle_deg": 90.0,
        "line_ap_tibia_1M_mm": 0.4,
        "line_max_mm": 0.4,
        "line_flag": None,
        "quality_flag": "ok",
        "quality_notes": "",
    }
    base.update(values)
    return base


def _section(page: str, section_id: str) -> str:
    match = re.search(rf'<section id="{section_id}">(.*?)</section>', page, re.S)
    assert match, f"no section {section_id}"
    return match.group(1)


def _records(page: str) -> list[dict]:
    match = re.search(r'<script type="application/json" id="image-records">(.*?)</script>', page, re.S)
    assert match
    return json.loads(match.group(1))


def test_attention_lists_the_worst_first_with_reasons() -> None:
    frame = pd.DataFrame(
        [
            _row("1.1"),
            _row("1.2", quality_flag="partial", quality_notes="no tray line"),
            _row("1.3", tibial_component_angle_deg=84.1),
        ]
    )
    attention = _section(render_inference_report(SUMMARY, frame, {}), "attention")
    assert "Needs attention (2)" in attention
    assert attention.index("1.3") < attention.index("1.2")
    assert "β 84.1° (varus)" in attention and "quality: partial" in attention
    assert 'data-uid="1.1"' not in attention


def test_reasons_say_why_in_words() -> None:
    record = _row(
        "1.4",
        line_ap_tibia_1M_mm=2.3,
        line_ap_femur_2_mm=1.1,
        line_max_mm=2.3,
        line_flag="wide; all_zones:tibia",
        tibiofemoral_angle_deg=-2.0,
        femoral_component_angle_deg=101.5,
        quality_flag="implausible_anatomy",
    )
    texts = [r.text for r in attention_reasons(record)]
    assert texts == [
        "line 2.3 mm in tibia_1M",
        "lines in every zone of tibia",
        "tibiofemoral -2.0° (varus)",  # 2.0° beyond its range before α's 1.5°
        "α 101.5° (above 92–100°)",
        "quality: implausible_anatomy",
    ]
    assert attention_reasons(_row("ok")) == []
    assert [r.text for r in attention_reasons(_row("l", tibial_slope_angle_deg=78.0))] == [
        "δ 78.0° (below 80–93°)"
    ]


def test_rules_can_be_changed_and_are_checked() -> None:
    beta_84 = _row("1.3", tibial_component_angle_deg=84.0)
    assert rank_for_attention([beta_84])
    assert not rank_for_attention([beta_84], AttentionRules(tibial_component_beta_deg=(80.0, 95.0)))
    with pytest.raises(ValidationError, match="low < high"):
        AttentionRules(tibiofemoral_deg=(10.0, 0.0))
    with pytest.raises(ValidationError):
        AttentionRules(hka_deg=(0.0, 1.0))  # type: ignore[call-arg]


def test_hostile_strings_are_escaped_in_html_and_json() -> None:
    frame = pd.DataFrame(
        [
            _row("1.5", quality_flag="partial", quality_notes=HOSTILE, implant_type=HOSTILE),
            {"sop_instance_uid": None, "image_key": f"{HOSTILE}.dcm", "status": "failed", "reason": HOSTILE},
        ]
    )
    summary = {**SUMMARY, "model_name": HOSTILE}
    page = render_inference_report(
        summary, frame, {"1.5": 'overlays/1.5.png"onerror="x'}, annotate_next=["1.5"]
    )
    assert HOSTILE not in page and "<script>" not in page and 'onerror="x' not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    block = re.search(r'id="image-records">(.*?)</script>', page, re.S)
    assert block and "<" not in block.group(1) and "</" not in block.group(1)
    (record,) = _records(page)
    assert record["notes"] == HOSTILE and record["implant"] == HOSTILE  # escaped, not altered
    assert record["href"] == 'overlays/1.5.png"onerror="x'


def test_unsafe_overlay_links_are_dropped() -> None:
    page = render_inference_report(SUMMARY, pd.DataFrame([_row("1.6")]), {"1.6": "javascript:alert(1)"})
    assert "javascript:" not in page
    assert _records(page)[0]["img"] is None


def test_old_frames_with_missing_columns_and_nan_render() -> None:
    frame = pd.DataFrame(
        [
            {"sop_instance_uid": "2.1", "status": "ok"},
            {
                "sop_instance_uid": "2.2",
                "status": "ok",
                "tibiofemoral_angle_deg": np.nan,
                "line_flag": np.nan,
            },
            {"sop_instance_uid": "2.3"},  # no status at all: counted as measured
        ]
    )
    page = render_inference_report({}, frame, {})
    assert "3 image(s) measured, 0 need attention" in page
    assert [r["uid"] for r in _records(page)] == ["2.1", "2.2", "2.3"]
    assert _records(page)[1]["angles"] == [] and _records(page)[1]["lineFlag"] is None
    empty = render_inference_report(SUMMARY, pd.DataFrame(), {})
    assert "No image was measured" in empty and _records(empty) == []


def test_page_is_self_contained() -> None:
    frame = pd.DataFrame([_row(f"3.{i}", model_confidence=i / 10) for i in range(5)])
    page = render_inference_report(
        SUMMARY, frame, {"3.1": "overlays/3.1.png"}, thumbnails={"3.0": b"\xff\xd8jpeg"}
    )
    assert "http" not in page and "//" not in re.sub(
        r"<script type=\"text/javascript\">.*?</script>", "", page, flags=re.S
    )
    assert "<style>" in page and 'id="image-records"' in page
    records = {r["uid"]: r for r in _records(page)}
    assert records["3.0"]["img"] == "data:image/jpeg;base64," + base64.b64encode(b"\xff\xd8jpeg").decode()
    assert records["3.1"]["img"] == "overlays/3.1.png"  # no thumbnail: the overlay link, as before
    assert 'src="overlays/3.1.png"' in page  # the no-script table
    assert records["3.2"]["img"] is None


def test_a_thousand_images_sit_in_one_json_block() -> None:
    thumbnail = bytes(range(256)) * 40  # 10 KB
    frame = pd.DataFrame([_row(f"4.{i}") for i in range(1000)])
    thumbnails = {f"4.{i}": thumbnail for i in range(1000)}
    page = render_inference_report(SUMMARY, frame, {}, thumbnails=thumbnails)
    records = _records(page)
    assert len(records) == 1000 and all(r["img"].startswith("data:image/jpeg;base64,") for r in records)
    assert len(page) < 1000 * (len(thumbnail) * 4 // 3 + 3_000)  # the thumbnails, once each, plus a little
    assert page.count(base64.b64encode(thumbnail).decode()) == 1000


def test_annotate_next_puts_least_confidence_first() -> None:
    frame = pd.DataFrame(
        [
            _row("5.1", model_confidence=0.9),
            _row("5.2", model_confidence=0.2),
            _row("5.3", model_confidence=np.nan),
        ]
    )
    section = _section(
        render_inference_report(SUMMARY, frame, {}, annotate_next=["5.3", "5.1", "5.2"]), "annotate"
    )
    assert section.index('data-uid="5.2"') < section.index('data-uid="5.1"') < section.index('data-uid="5.3"')
    assert "0.20" in section and "0.90" in section
    assert "annotate" not in render_inference_report(SUMMARY, frame, {}).split("<main>")[0]


def test_distributions_show_the_run() -> None:
    frame = pd.DataFrame([_row("6.1", model_confidence=0.5), _row("6.2", implant_type="uka_medial")])
    charts = _section(render_inference_report(SUMMARY, frame, {}), "distributions")
    for title in (
        "tibiofemoral angle",
        "α femoral component",
        "β tibial component",
        "widest radiolucent line",
    ):
        assert title in charts
    assert "model confidence" in charts and "implant types" in charts and "uka_medial: 1" in charts


def test_histogram_counts_and_empty_chart() -> None:
    svg = svg_histogram([1.0, 1.0, 2.0, None, float("nan")], title="t", unit="°", bins=2)
    assert svg.startswith("<svg") and "(n = 3)" in svg
    assert re.findall(r"<title>[^<]*: (\d+)</title>", svg) == ["2", "1"]
    assert "no values" in svg_histogram([], title="t")
    ranged = svg_histogram([5.0], title="t", reference_range=(0.0, 10.0))
    assert "reference 0–10" in ranged
    with pytest.raises(ValueError, match="bins"):
        svg_histogram([1.0], title="t", bins=0)


def test_bar_chart_escapes_labels_and_orders_by_count() -> None:
    svg = svg_bar_chart({"tka": 3, HOSTILE: 5, "none": 0}, title="implants")
    assert HOSTILE not in svg and "&lt;script&gt;" in svg
    assert svg.index("&lt;script&gt;") < svg.index(">tka<") and "none" not in svg
