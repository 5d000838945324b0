"""Training batches: label checks, PHI refusal, PNG-to-SEG import, idempotent re-runs, growing datasets."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from orthoseg.settings import Settings
from orthoseg.storage import LocalStore
from orthoseg.validation import (
    ValidationConfig,
    latest_dataset_version,
    load_manifest,
    prescreen_batch,
    validate_batch,
)
from tests.validation_builders import dicom_bytes, dx_dataset, knee_masks, png_bytes, seg_bytes, uid_for

PHI_NAME = "MUELLER^ANNA^MARIA"
PHI_ID = "4711-0815-PHI"
ROWS, COLUMNS = 160, 128


def _write(root: Path, key: str, data: bytes) -> None:
    path = root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _labelled(root: Path, index: int, **kwargs: Any) -> Any:
    ds = dx_dataset(index, **kwargs)
    _write(root, f"images/img{index}.dcm", dicom_bytes(ds))
    _write(root, f"labels/{uid_for(index)}.dcm", seg_bytes(ds, knee_masks(ROWS, COLUMNS)))
    return ds


def _first_batch(root: Path) -> dict[str, tuple[str, str | None]]:
    """Batch t1; returns {image key: (verdict, reason kind)}."""
    expected: dict[str, tuple[str, str | None]] = {}
    for index in (30, 31):
        _labelled(root, index, patient_id="PAT_A")
        expected[f"images/img{index}.dcm"] = ("accepted", None)
    _labelled(root, 32)
    _write(
        root, f"truth/{uid_for(32)}.json", json.dumps({"sop_instance_uid": uid_for(32), "tka": True}).encode()
    )
    expected["images/img32.dcm"] = ("accepted", None)
    # PNG masks from an annotation tool: converted to SEG on import.
    _write(root, "images/img34.dcm", dicom_bytes(dx_dataset(34)))
    masks = knee_masks(ROWS, COLUMNS)
    for name, channel in (("femur", 0), ("tibia", 1), ("patella", 3)):
        _write(root, f"labels/{uid_for(34)}/{name}.png", png_bytes(masks[channel]))
    expected["images/img34.dcm"] = ("accepted", None)
    _write(root, "images/img35.dcm", dicom_bytes(dx_dataset(35)))
    expected["images/img35.dcm"] = ("quarantined", "label_missing")
    _labelled(root, 36, patient_id=PHI_ID, deidentified=False)
    phi = dx_dataset(36, patient_id=PHI_ID, deidentified=False)
    phi.PatientName = PHI_NAME
    _write(root, "images/img36.dcm", dicom_bytes(phi))
    expected["images/img36.dcm"] = ("quarantined", "phi")
    _labelled(root, 37, body_part="HIP")
    expected["images/img37.dcm"] = ("quarantined", "body_part")
    ds = dx_dataset(38)
    _write(root, "images/img38.dcm", dicom_bytes(ds))
    smaller = dx_dataset(38, rows=ROWS - 16, columns=COLUMNS)
    _write(root, f"labels/{uid_for(38)}.dcm", seg_bytes(smaller, knee_masks(ROWS - 16, COLUMNS)))
    expected["images/img38.dcm"] = ("quarantined", "label_shape")
    _write(root, "images/img39.dcm", dicom_bytes(dx_dataset(39)))
    grey = masks[0].astype(np.uint8)
    grey[:10] *= 2
    _write(root, f"labels/{uid_for(39)}/femur.png", _png_values(grey))
    _write(root, f"labels/{uid_for(39)}/tibia.png", png_bytes(masks[1]))
    expected["images/img39.dcm"] = ("quarantined", "label_not_binary")
    _write(root, "images/img40.dcm", dicom_bytes(dx_dataset(40)))
    for name, channel in (("femur", 0), ("tibia", 1), ("meniscus", 3)):
        _write(root, f"labels/{uid_for(40)}/{name}.png", png_bytes(masks[channel]))
    expected["images/img40.dcm"] = ("quarantined", "label_unknown_structure")
    ds = dx_dataset(41)
    _write(root, "images/img41.dcm", dicom_bytes(ds))
    _write(root, f"labels/{uid_for(41)}.dcm", seg_bytes(ds, knee_masks(ROWS, COLUMNS, femur=False)))
    expected["images/img41.dcm"] = ("quarantined", "label_no_femur")
    # A film of the lower leg shows the tibia and fibula without the knee: no femur to label.
    ds = dx_dataset(46, body_part="LEG")
    _write(root, "images/img46.dcm", dicom_bytes(ds))
    _write(root, f"labels/{uid_for(46)}.dcm", seg_bytes(ds, knee_masks(ROWS, COLUMNS, femur=False)))
    expected["images/img46.dcm"] = ("accepted", None)
    _write(root, "images/img42.dcm", dicom_bytes(dx_dataset(42)))
    _write(root, f"labels/{uid_for(42)}.dcm", seg_bytes(dx_dataset(43), knee_masks(ROWS, COLUMNS)))
    expected["images/img42.dcm"] = ("quarantined", "label_reference")
    _labelled(root, 44)
    _write(root, f"labels/{uid_for(44)}/femur.png", png_bytes(masks[0]))
    expected["images/img44.dcm"] = ("quarantined", "label_unreadable")
    _labelled(root, 45, patient_id="")
    expected["images/img45.dcm"] = ("quarantined", "patient_id")
    _write(root, f"labels/{uid_for(99)}.dcm", seg_bytes(dx_dataset(99), masks))
    expected[f"labels/{uid_for(99)}.dcm"] = ("quarantined", "orphan")
    return expected


def _png_values(values: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(values.astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _snapshot(store: LocalStore, *prefixes: str) -> dict[str, str]:
    return {
        key: hashlib.sha256(store.get_bytes(key)).hexdigest()
        for prefix in prefixes
        for key in store.list_keys(prefix)
    }


@pytest.fixture(scope="module")
def training_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """t1 (pre-screen, validate, re-run), then t2 (new images + a repeat), then t3 (only repeats)."""
    base = tmp_path_factory.mktemp("training")
    store = LocalStore(base / "store")
    settings = Settings(store=str(base / "store"), work_dir=str(base / "work"))
    config = ValidationConfig(workers=2, pseudonym_salt="training-salt")
    first = base / "store" / "incoming" / "t1"
    expected = _first_batch(first)
    logger = logging.getLogger("orthoseg")
    records: list[logging.LogRecord] = []
    handler = logging.Handler(level=logging.DEBUG)
    handler.emit = records.append  # type: ignore[method-assign]
    logger.addHandler(handler)
    previous_level = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        prescreen = prescreen_batch(settings, "incoming/t1", "t1", "training", config=config)
        t1 = validate_batch(settings, "incoming/t1", "t1", "training", config=config)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous_level)
    before = _snapshot(store, "datasets", "quarantine")
    all_keys_before = set(store.list_keys(""))
    t1_again = validate_batch(settings, "incoming/t1", "t1", "training", config=config)
    after = _snapshot(store, "datasets", "quarantine")
    all_keys_after = set(store.list_keys(""))

    second = base / "store" / "incoming" / "t2"
    _labelled(second, 50, patient_id="PAT_A")
    _labelled(second, 51)
    (second / "images" / "again.dcm").write_bytes((first / "images" / "img32.dcm").read_bytes())
    (second / "labels" / f"{uid_for(32)}.dcm").write_bytes(
        (first / "labels" / f"{uid_for(32)}.dcm").read_bytes()
    )
    t2 = validate_batch(settings, "incoming/t2", "t2", "training", config=config)
    third = base / "store" / "incoming" / "t3"
    third.mkdir(parents=True)
    for name in ("img30.dcm", "img31.dcm"):
        (third / name).write_bytes((first / "images" / name).read_bytes())
    (third / "labels").mkdir()
    for index in (30, 31):
        src = first / "labels" / f"{uid_for(index)}.dcm"
        (third / "labels" / src.name).write_bytes(src.read_bytes())
    t3 = validate_batch(settings, "incoming/t3", "t3", "training", config=config)
    return {
        "store": store, "settings": settings, "config": config, "expected": expected, "records": records,
        "prescreen": prescreen, "t1": t1, "t1_again": t1_again, "before": before, "after": after,
        "keys_before": all_keys_before, "keys_after": all_keys_after, "t2": t2, "t3": t3,
    }  # fmt: skip


def test_training_verdicts_and_reasons(training_runs: dict[str, Any]) -> None:
    store, t1 = training_runs["store"], training_runs["t1"]
    report = json.loads(store.get_bytes("reports/validation/t1/summary.json"))
    entries = {entry["file"]: entry for entry in report["files"]}
    wrong = {}
    for key, (verdict, kind) in training_runs["expected"].items():
        kinds = [reason["kind"] for reason in entries[key]["reasons"]]
        if entries[key]["verdict"] != verdict or (kind is not None and kind not in kinds):
            wrong[key] = (entries[key]["verdict"], kinds)
    assert not wrong
    # Labels share their image's verdict.
    assert entries[f"labels/{uid_for(30)}.dcm"]["verdict"] == "accepted"
    assert entries[f"labels/{uid_for(37)}.dcm"]["verdict"] == "quarantined"
    assert entries[f"labels/{uid_for(40)}/meniscus.png"]["reasons"][0]["kind"] == "image_quarantined"
    assert t1.accepted + t1.quarantined == t1.files_total == len(entries)
    assert t1.images_accepted == 5 and t1.new_rows == 5


def test_phi_is_named_never_quoted(training_runs: dict[str, Any]) -> None:
    store: LocalStore = training_runs["store"]
    reasons = json.loads(store.get_bytes("quarantine/t1/images/img36.dcm.reasons.json"))
    phi = next(r for r in reasons["reasons"] if r["kind"] == "phi")
    assert "PatientName" in phi["observed"] and "PatientID" in phi["observed"]
    leaks = []
    for key in store.list_keys(""):
        if key.startswith("incoming/") or (
            key.startswith("quarantine/") and not key.endswith(".reasons.json")
        ):
            continue  # the inputs themselves and their byte-identical quarantine copies
        data = store.get_bytes(key)
        if PHI_NAME.encode() in data or PHI_ID.encode() in data or b"MUELLER" in data:
            leaks.append(key)
    assert not leaks, f"PHI value found in {leaks}"
    logged = "\n".join(record.getMessage() for record in training_runs["records"])
    assert "MUELLER" not in logged and PHI_ID not in logged


def test_png_labels_are_stored_as_seg(training_runs: dict[str, Any]) -> None:
    from orthoseg.seg_io import read_seg_masks

    store, t1 = training_runs["store"], training_runs["t1"]
    manifest = load_manifest(store, t1.dataset_version).set_index("sop_instance_uid")
    label_key = manifest.at[uid_for(34), "label_key"]
    assert label_key == f"datasets/{t1.dataset_version}/labels/{uid_for(34)}.dcm"
    masks, referenced = read_seg_masks(store.get_bytes(label_key))
    assert referenced == uid_for(34)
    np.testing.assert_array_equal(masks[[0, 1, 3]], knee_masks(ROWS, COLUMNS)[[0, 1, 3]])
    assert not masks[[2, 4, 5, 6]].any()
    # SEG labels are copied byte for byte; truth keeps its JSON.
    seg_key = manifest.at[uid_for(30), "label_key"]
    incoming = store.get_bytes(f"incoming/t1/labels/{uid_for(30)}.dcm")
    assert store.get_bytes(seg_key) == incoming
    assert json.loads(store.get_bytes(manifest.at[uid_for(32), "truth_key"]))["tka"] is True


def test_manifest_columns_and_patient_split(training_runs: dict[str, Any]) -> None:
    from orthoseg.validation import MANIFEST_COLUMNS

    store, t1 = training_runs["store"], training_runs["t1"]
    manifest = load_manifest(store, t1.dataset_version)
    assert list(manifest.columns) == list(MANIFEST_COLUMNS)
    assert set(manifest["split"]) <= {"train", "val", "test"}
    same_patient = manifest[manifest["sop_instance_uid"].isin([uid_for(30), uid_for(31)])]
    assert same_patient["patient_pseudonym"].nunique() == 1 and same_patient["split"].nunique() == 1
    assert "PAT_A" not in set(manifest["patient_pseudonym"])
    assert manifest["sha256"].str.fullmatch("[0-9a-f]{64}").all()
    assert set(manifest["batch"]) == {"t1"}
    assert (manifest["rows"] == ROWS).all() and (manifest["pixel_spacing_row_mm"] == 0.15).all()
    info = json.loads(store.get_bytes(f"datasets/{t1.dataset_version}/dataset.json"))
    assert info["purpose"] == "training" and "training-salt" not in json.dumps(info)


def test_rerun_changes_nothing(training_runs: dict[str, Any]) -> None:
    t1, again = training_runs["t1"], training_runs["t1_again"]
    assert again.dataset_version == t1.dataset_version
    assert again.new_rows == 0 and again.accepted == t1.accepted and again.quarantined == t1.quarantined
    assert training_runs["after"] == training_runs["before"]
    before, after = training_runs["keys_before"], training_runs["keys_after"]
    data_docs = "reports/validation/t1/data_docs/validations/"
    assert {k for k in after - before if not k.startswith(data_docs)} == set()
    assert len(after) == len(before)


def test_datasets_accumulate(training_runs: dict[str, Any]) -> None:
    store, t1, t2, t3 = training_runs["store"], training_runs["t1"], training_runs["t2"], training_runs["t3"]
    assert t2.dataset_version not in (None, t1.dataset_version)
    assert t2.new_rows == 2 and t2.images_accepted == 3 and t2.dataset_rows == t1.dataset_rows + 2
    first = load_manifest(store, t1.dataset_version).set_index("sop_instance_uid")
    second = load_manifest(store, t2.dataset_version).set_index("sop_instance_uid")
    assert second.index.is_unique
    shared = first.index
    assert (second.loc[shared, "image_key"] == first["image_key"]).all()  # earlier rows keep their keys
    assert (second.loc[shared, "split"] == first["split"]).all()
    assert second.at[uid_for(50), "split"] == first.at[uid_for(30), "split"]  # same patient, same split
    assert second.at[uid_for(50), "image_key"].startswith(f"datasets/{t2.dataset_version}/")
    assert latest_dataset_version(store) == t2.dataset_version
    assert t3.dataset_version == t2.dataset_version and t3.new_rows == 0 and t3.quarantined == 0


def test_prescreen_reads_headers_only(training_runs: dict[str, Any]) -> None:
    prescreen = training_runs["prescreen"]
    assert prescreen.files_total == training_runs["t1"].files_total
    assert prescreen.would_accept + prescreen.would_quarantine == prescreen.files_total
    assert {"phi", "body_part", "patient_id", "orphan"} <= set(prescreen.reasons_by_kind)
    assert "label_shape" not in prescreen.reasons_by_kind  # label contents are not read
    assert training_runs["store"].exists(prescreen.report_key)


def test_changed_salt_is_refused(training_runs: dict[str, Any]) -> None:
    other = ValidationConfig(workers=2, pseudonym_salt="another-salt")
    with pytest.raises(ValueError, match="another pseudonym salt"):
        validate_batch(training_runs["settings"], "incoming/t3", "t3", "training", config=other)
