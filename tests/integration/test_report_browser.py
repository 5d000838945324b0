"""The run report in a real headless Chromium: the script runs, pages, and every image of a page loads."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from orthoseg.labels import NUM_STRUCTURES, structure
from orthoseg.measure.drawing import MeasurementDrawing, Segment, ZoneMark
from orthoseg.overlay import render_overlay, thumbnail_jpeg
from orthoseg.report import render_inference_report

IMAGES = 120  # three pages of 50, 50 and 20
BROWSER_TIMEOUT_S = 60


def _chromium() -> str:
    """The Chromium binary; skipped when absent unless ``ORTHOSEG_REQUIRE_BROWSER=1`` (CI installs it)."""
    found = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if found:
        return found
    if os.environ.get("ORTHOSEG_REQUIRE_BROWSER") == "1":
        pytest.fail("ORTHOSEG_REQUIRE_BROWSER=1 but no chromium found (apt-get install chromium)")
    pytest.skip("chromium is not installed")


def _film(index: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, MeasurementDrawing]:
    """A small synthetic film: noise, a femur block above a tibia block, an axis and one zone mark."""
    h, w = 96, 72
    pixels = rng.normal(1000.0, 60.0, (h, w)).astype(np.float32)
    masks = np.zeros((NUM_STRUCTURES, h, w), dtype=bool)
    masks[structure("femur").channel, 5:45, 20:52] = True
    masks[structure("tibia").channel, 50:90, 18 + index % 5 : 54] = True
    pixels[masks.any(axis=0)] += 400.0
    drawing = MeasurementDrawing(
        segments=[Segment("tibia axis", (88.0, 36.0), (52.0, 36.0 + index % 7))],
        zones=[
            ZoneMark("tibia_1M", 2.3, (55.0, 20.0), np.array([[52.0, 24.0], [52.0, 30.0]]), index % 10 == 0)
        ],
    )
    return pixels, masks, drawing


def build_report(count: int = IMAGES, seed: int = 0) -> str:
    """A report over ``count`` synthetic images with real JPEG thumbnails; every tenth needs attention."""
    rng = np.random.default_rng(seed)
    rows, thumbnails = [], {}
    for index in range(count):
        uid = f"1.2.826.0.1.3680043.8.498.{index + 1}"
        flagged = index % 10 == 0
        rows.append(
            {
                "sop_instance_uid": uid,
                "image_key": f"batch/{index:04d}.dcm",
                "status": "ok",
                "view_position": "AP" if index % 3 else "LL",
                "laterality": "L" if index % 2 else "R",
                "implant_type": ("tka", "uka_medial", "revision_tka", "native")[index % 4],
                "fixation": "cemented" if index % 4 != 3 else None,
                "tibiofemoral_angle_deg": float(rng.normal(5.0, 3.0)),
                "femoral_component_angle_deg": float(rng.normal(96.0, 2.0)),
                "tibial_component_angle_deg": 84.1 if index == 30 else float(rng.normal(90.0, 1.5)),
                "joint_space_medial_mm": float(rng.uniform(3, 8)),
                "line_ap_tibia_1M_mm": 2.3 if flagged else float(rng.uniform(0, 1)),
                "line_max_mm": 2.3 if flagged else 0.9,
                "line_flag": "wide" if flagged else None,
                "quality_flag": "implausible_anatomy" if index == 7 else "ok",
                "quality_notes": "femur axis too short" if index == 7 else "",
                "model_confidence": float(rng.uniform(0.4, 1.0)),
            }
        )
        pixels, masks, drawing = _film(index, rng)
        thumbnails[uid] = thumbnail_jpeg(render_overlay(pixels, masks, drawing=drawing), max_side_px=160)
    rows.append({"image_key": "batch/broken.dcm", "status": "failed", "reason": "not a DICOM file"})
    summary = {"model_name": "orthoseg-knee", "model_version": "7", "run_id": "r1", "images_total": count + 1}
    overlays = {r["sop_instance_uid"]: f"overlays/{r['sop_instance_uid']}.png" for r in rows[:-1]}
    return render_inference_report(
        summary,
        pd.DataFrame(rows),
        overlays,
        thumbnails=thumbnails,
        annotate_next=[rows[i]["sop_instance_uid"] for i in (3, 4, 5)],
    )


def _dump_dom(chromium: str, url: str, profile: Path) -> str:
    result = subprocess.run(
        [
            chromium,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=5000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=BROWSER_TIMEOUT_S,
        check=True,
    )
    return result.stdout


def _body_data(dom: str) -> dict[str, str]:
    body = re.search(r"<body([^>]*)>", dom)
    assert body, "no <body> in the dumped DOM"
    return dict(re.findall(r'data-([a-z-]+)="([^"]*)"', body.group(1)))


@pytest.fixture(scope="module")
def report_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("report") / "report.html"
    path.write_text(build_report(), encoding="utf-8")
    return path


def test_first_page_renders_and_its_images_load(report_file: Path, tmp_path: Path) -> None:
    chromium = _chromium()
    data = _body_data(_dump_dom(chromium, report_file.as_uri(), tmp_path / "profile"))
    assert data["js"] == "ready"
    assert data["page-count"] == "3" and data["page"] == "1"
    assert data["images-shown"] == "50" and data["images-expected"] == "50"
    assert data["images-loaded"] == "50"
    assert data["images-failed"] == "0"
    assert data["attention-images-failed"] == "0"


def test_a_link_to_an_image_turns_to_its_page(report_file: Path, tmp_path: Path) -> None:
    chromium = _chromium()
    uid = "1.2.826.0.1.3680043.8.498.111"  # the 111th image: page 3, which holds 20
    dom = _dump_dom(chromium, f"{report_file.as_uri()}#img-{uid}", tmp_path / "profile")
    data = _body_data(dom)
    assert data["page"] == "3" and data["images-shown"] == "20"
    assert data["images-loaded"] == "20" and data["images-failed"] == "0"
    assert f'id="img-{uid}"' in dom


def test_screenshot_is_not_blank(report_file: Path, tmp_path: Path) -> None:
    chromium = _chromium()
    shot = tmp_path / "report.png"
    subprocess.run(
        [
            chromium,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--hide-scrollbars",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=5000",
            "--window-size=1280,2000",
            f"--screenshot={shot}",
            report_file.as_uri(),
        ],
        capture_output=True,
        timeout=BROWSER_TIMEOUT_S,
        check=True,
    )
    assert shot.exists()
    with Image.open(shot) as image:
        assert image.size == (1280, 2000)
        grey = np.asarray(image.convert("L"), dtype=np.float32)
    assert grey.std() > 10.0  # text, header, thumbnails: far from one flat colour
    assert (grey < 60).mean() > 0.01  # dark pixels: header bar and radiograph thumbnails
