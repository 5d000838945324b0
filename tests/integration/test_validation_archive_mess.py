"""An archive's real mess through the whole validation (worker processes, Great Expectations, quarantine):
a truncated copy next to its complete re-sent copy, and films declaring implausible pixel spacing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from orthoseg.labels import NUM_STRUCTURES
from orthoseg.settings import Settings
from orthoseg.storage import LocalStore
from orthoseg.validation import ValidationConfig, prescreen_batch, validate_batch
from tests.dicom_factory import make_dx, to_bytes

CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
UID = "1.2.826.0.1.3680043.8.498.91.{}"


def _film(index: int, spacing_mm: float | None = 0.15, modality: str = "DX") -> Any:
    rng = np.random.default_rng(index)
    columns = np.arange(160)
    profile = 600 + 2400 * np.exp(-(((columns - 80) / 30) ** 2))
    pixels = np.clip(profile[None, :] + rng.normal(0, 40, (192, 160)), 0, 4095)
    ds = make_dx(pixels, spacing_mm=spacing_mm, uid=UID.format(index))
    if modality == "CR":
        ds.Modality, ds.SOPClassUID = "CR", CR_IMAGE_STORAGE
        ds.file_meta.MediaStorageSOPClassUID = CR_IMAGE_STORAGE
        del ds.ImagerPixelSpacing
        ds.PixelSpacing = [spacing_mm, spacing_mm]
    return ds


def _seg(ds: Any) -> bytes:
    from orthoseg.seg_io import build_seg, seg_to_bytes

    masks = np.zeros((NUM_STRUCTURES, ds.Rows, ds.Columns), dtype=bool)
    masks[0, :80, 40:120] = True
    masks[1, 110:, 40:120] = True
    return seg_to_bytes(build_seg(ds, masks, automatic=False))


def _batch(root: Path) -> Path:
    source = root / "incoming" / "mess"
    (source / "images").mkdir(parents=True)
    (source / "labels").mkdir()

    def put(key: str, data: bytes) -> None:
        (source / key).write_bytes(data)

    first, second = _film(1), _film(2)
    first_bytes, second_bytes = to_bytes(first), to_bytes(second)
    # The truncated copy sorts first for UID 1 and last for UID 2: the complete copy must win both times.
    put("images/a_truncated_copy.dcm", first_bytes[: len(first_bytes) * 2 // 3])
    put("images/b_complete.dcm", first_bytes)
    put("images/c_complete.dcm", second_bytes)
    put("images/d_truncated_copy.dcm", second_bytes[: len(second_bytes) - 1000])
    put(f"labels/{UID.format(1)}.dcm", _seg(first))
    put("images/spacing_5mm.dcm", to_bytes(_film(3, spacing_mm=5.0)))
    put("images/spacing_0001mm.dcm", to_bytes(_film(4, spacing_mm=0.001)))
    put("images/cr_pixel_spacing_ok.dcm", to_bytes(_film(5, spacing_mm=0.2, modality="CR")))
    # Two decodable copies of UID 6: the larger, first-listed one declares 5 mm pixels. The clean one wins.
    mislabelled = _film(6, spacing_mm=5.0)
    mislabelled.ImageComments = "re-sent by another gateway"
    put("images/e_mislabelled_copy.dcm", to_bytes(mislabelled))
    put("images/f_clean_copy.dcm", to_bytes(_film(6)))
    return source


@pytest.fixture(scope="module")
def mess(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("mess")
    source = _batch(base)
    settings = Settings(store=str(base / "store"), work_dir=str(base / "work"))
    config = ValidationConfig(workers=2, pseudonym_salt="mess-salt")
    summary = validate_batch(settings, str(source), "mess", "inference", config=config)
    prescreen = prescreen_batch(settings, str(source), "mess", "inference", config=config)
    store = LocalStore(base / "store")
    report = json.loads(store.get_bytes("reports/validation/mess/summary.json"))
    prescreened = json.loads(store.get_bytes("reports/validation/mess/prescreen.json"))
    return {
        "summary": summary,
        "source": source,
        "prescreen": prescreen,
        "store": store,
        "files": {entry["file"]: entry for entry in report["files"]},
        "prescreened": {entry["file"]: entry for entry in prescreened["files"]},
    }


def _reasons(store: LocalStore, key: str) -> dict[str, dict[str, Any]]:
    document = json.loads(store.get_bytes(f"quarantine/mess/{key}.reasons.json"))
    assert document["verdict"] == "quarantined"
    return {reason["kind"]: reason for reason in document["reasons"]}


def test_the_complete_copy_is_accepted_and_the_truncated_copy_names_it(mess: dict[str, Any]) -> None:
    files, store = mess["files"], mess["store"]
    assert files["images/b_complete.dcm"]["verdict"] == "accepted"
    assert files["images/c_complete.dcm"]["verdict"] == "accepted"
    # The label of UID 1 travels with the copy that was kept.
    label = files[f"labels/{UID.format(1)}.dcm"]
    assert label["verdict"] == "accepted" and label["judged_with"] == "images/b_complete.dcm"
    for copy, kept, uid in (
        ("images/a_truncated_copy.dcm", "images/b_complete.dcm", UID.format(1)),
        ("images/d_truncated_copy.dcm", "images/c_complete.dcm", UID.format(2)),
    ):
        reasons = _reasons(store, copy)
        duplicate = reasons["duplicate"]
        assert duplicate["observed"] == kept
        assert duplicate["facts"] == {"sop_instance_uid": uid, "duplicate_of": kept}
        assert f"{kept}, which is kept (its pixels decode" in duplicate["detail"]
        assert "pixels_undecodable" in reasons
        assert store.get_bytes(f"quarantine/mess/{copy}") == (mess["source"] / copy).read_bytes()
    assert mess["summary"].reasons_by_kind["duplicate"] == 3
    # The header-only pre-screen decodes nothing but still keeps the complete (larger) copy.
    prescreened = mess["prescreened"]
    assert prescreened["images/b_complete.dcm"]["verdict"] == "accepted"
    assert prescreened["images/d_truncated_copy.dcm"]["verdict"] == "quarantined"
    assert [r["kind"] for r in prescreened["images/d_truncated_copy.dcm"]["reasons"]] == ["duplicate"]


def test_implausible_spacing_is_quarantined_with_value_source_and_range(mess: dict[str, Any]) -> None:
    files, store = mess["files"], mess["store"]
    assert files["images/cr_pixel_spacing_ok.dcm"]["verdict"] == "accepted"
    for key, value, words in (
        (
            "images/spacing_5mm.dcm",
            5,
            "ImagerPixelSpacing declares 5 x 5 mm per pixel (row x column): too coarse",
        ),
        ("images/spacing_0001mm.dcm", 0.001, "declares 0.001 x 0.001 mm per pixel (row x column): too fine"),
    ):
        reasons = _reasons(store, key)
        assert list(reasons) == ["pixel_spacing_implausible"], reasons
        reason = reasons["pixel_spacing_implausible"]
        assert reason["severity"] == "critical"  # for inference too: every millimetre would be wrong
        assert words in reason["detail"] and "accepted for Modality DX is 0.05 to 1 mm" in reason["detail"]
        assert reason["facts"] == {
            "modality": "DX",
            "pixel_spacing_source": "ImagerPixelSpacing",
            "pixel_spacing_row_mm": value,
            "pixel_spacing_col_mm": value,
            "pixel_spacing_min_mm": 0.05,
            "pixel_spacing_max_mm": 1,
        }
        assert mess["prescreened"][key]["verdict"] == "quarantined"
    summary = mess["summary"]
    assert summary.accepted == 5 and summary.quarantined == 5 and summary.files_total == 10


def test_a_copy_refused_on_its_own_does_not_cost_the_clean_copy(mess: dict[str, Any]) -> None:
    files = mess["files"]
    assert files["images/f_clean_copy.dcm"]["verdict"] == "accepted"
    reasons = _reasons(mess["store"], "images/e_mislabelled_copy.dcm")
    assert set(reasons) == {"duplicate", "pixel_spacing_implausible"}
    assert reasons["duplicate"]["observed"] == "images/f_clean_copy.dcm"
    assert "this copy: refused on its own for pixel_spacing_implausible" in reasons["duplicate"]["detail"]
    assert mess["prescreened"]["images/f_clean_copy.dcm"]["verdict"] == "accepted"
