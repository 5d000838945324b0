"""The pieces without Great Expectations: pseudonyms, splits, versions, pairing, PHI policy, the reader."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from orthoseg.batch_layout import radiograph_keys
from orthoseg.dataset_version import compute_version, resolve_keys, split_for
from orthoseg.settings import Settings
from orthoseg.storage import LocalStore
from orthoseg.validation import ValidationConfig
from orthoseg.validation.inventory import classify
from orthoseg.validation.reader import ReaderContext, phi_fields, pseudonymize, read_image
from tests.validation_builders import dicom_bytes, dx_dataset


def test_pseudonym_is_salted_and_stable() -> None:
    assert pseudonymize("PAT1", "a") == pseudonymize(" PAT1 ", "a")
    assert pseudonymize("PAT1", "a") != pseudonymize("PAT1", "b")
    assert len(pseudonymize("PAT1", "a")) == 16 and "PAT1" not in pseudonymize("PAT1", "a")


def test_split_comes_from_the_pseudonym_alone_at_70_15_15() -> None:
    counts = Counter(split_for(pseudonymize(f"P{i}", "s"), (0.7, 0.15, 0.15)) for i in range(20_000))
    assert abs(counts["train"] / 20_000 - 0.70) < 0.02
    assert abs(counts["val"] / 20_000 - 0.15) < 0.02
    assert abs(counts["test"] / 20_000 - 0.15) < 0.02
    assert split_for("abc", (0.7, 0.15, 0.15)) == split_for("abc", (0.7, 0.15, 0.15))


def test_version_is_a_content_hash_of_the_manifest() -> None:
    rows = pd.DataFrame(
        [
            {"sop_instance_uid": "1.2", "image_key": "datasets/{version}/images/1.2.dcm", "sha256": "a",
             "rows": 10, "columns": 10, "split": "train"},
            {"sop_instance_uid": "1.1", "image_key": "datasets/{version}/images/1.1.dcm", "sha256": "b",
             "rows": 10, "columns": 10, "split": "test"},
        ]
    )  # fmt: skip
    version = compute_version(rows)
    assert len(version) == 12 and version == compute_version(rows.iloc[::-1])
    changed = rows.copy()
    changed.loc[0, "sha256"] = "c"
    assert compute_version(changed) != version
    assert resolve_keys(rows, version)["image_key"].iloc[0] == f"datasets/{version}/images/1.2.dcm"


def test_paths_pair_labels_and_truth_with_images() -> None:
    assert classify("labels/1.2.3.dcm", 10, False).uid == "1.2.3"
    assert classify("labels/1.2.3/femur.png", 10, False).label_format == "png"
    assert classify("labels/readme.txt", 10, False).uid == ""
    assert classify("truth/1.2.3.json", 10, False).role == "truth"
    assert classify("images/a/b.dcm", 10, False).role == "image"
    assert classify("images/IM0001", 10, False).role == "image"  # archives hold DICOM without a suffix
    assert classify("broken.json", 10, False).role == "other"
    assert classify("images/.DS_Store", 10, False).role == "other"


def test_one_rule_says_which_files_are_radiographs() -> None:
    keys = [
        "b/images/1.dcm",
        "b/images/IM0002",
        "b/images/.DS_Store",
        "b/images/snapshot.png",
        "b/labels/1.dcm",
        "b/truth/1.json",
        "b/README.txt",
    ]
    assert radiograph_keys(keys, "b") == ["b/images/1.dcm", "b/images/IM0002"]
    # A folder without images/ (an archive): every radiograph candidate, labels and truth still left out.
    flat = ["a/1.dcm", "a/2", "a/labels/1.dcm", "a/report.html", "a/sub/3.dcm"]
    assert radiograph_keys(flat, "a") == ["a/1.dcm", "a/2", "a/sub/3.dcm"]
    # Validation and inference agree: what inference reads is what validation judges as an image.
    assert [k for k in keys if classify(k[2:], 1, False).role == "image"] == radiograph_keys(keys, "b")


def test_phi_policy_names_attributes_only() -> None:
    declared = dx_dataset(1)
    assert phi_fields(declared) == []  # pseudonymous identifiers under a de-identification declaration
    undeclared = dx_dataset(1, deidentified=False)
    assert phi_fields(undeclared) == ["PatientName", "PatientID"]
    declared.PatientAddress = "Hauptstrasse 1"
    assert phi_fields(declared) == ["PatientAddress"]  # never allowed, declared or not


def test_config_takes_settings_and_keeps_the_salt_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORTHOSEG_PSEUDONYM_SALT", "s3cret-salt")
    config = ValidationConfig.from_settings(Settings(validation={"workers": 3}))
    assert config.workers == 3 and config.effective_salt() == "s3cret-salt"
    assert "s3cret-salt" not in repr(config) and "s3cret-salt" not in config.model_dump_json()
    assert "s3cret" not in config.salt_fingerprint()
    with pytest.raises(ValueError, match="split_fractions"):
        ValidationConfig(split_fractions=(0.5, 0.5, 0.5))


def _context(root: Path, header_only: bool, **overrides: object) -> ReaderContext:
    config = ValidationConfig(**overrides)  # type: ignore[arg-type]
    return ReaderContext(LocalStore(root).uri, None, header_only, config, "salt")


def test_header_only_reads_past_a_long_header(tmp_path: Path) -> None:
    ds = dx_dataset(1)
    ds.private_block(0x0009, "ORTHOSEG TEST", create=True).add_new(0x10, "OB", b"\0" * 200_000)  # long header
    (tmp_path / "long.dcm").write_bytes(dicom_bytes(ds))
    store = LocalStore(tmp_path)
    (info,) = store.list_info("")
    file = classify(info.key, info.size_bytes, info.is_link)
    row = read_image(store, file, _context(tmp_path, header_only=True))
    assert row["readable"] is True and row["rows"] == 160 and row["pixel_decoded"] is None
    full = read_image(store, file, _context(tmp_path, header_only=False))
    assert full["pixel_decoded"] is True and 0 < full["pixel_range_fraction"] <= 1


def test_oversized_files_are_not_read(tmp_path: Path) -> None:
    (tmp_path / "big.dcm").write_bytes(dicom_bytes(dx_dataset(1)))
    store = LocalStore(tmp_path)
    (info,) = store.list_info("")
    row = read_image(
        store, classify(info.key, info.size_bytes, False), _context(tmp_path, False, max_file_bytes=1024)
    )
    assert row["readable"] is None and row["size_bytes"] == info.size_bytes  # refused from its size, unread


def test_reader_rows_carry_no_identifying_values(tmp_path: Path) -> None:
    ds = dx_dataset(1, patient_id="ID-12345", deidentified=False)
    ds.PatientName = "DOE^JANE"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    (tmp_path / "phi.dcm").write_bytes(buffer.getvalue())
    store = LocalStore(tmp_path)
    (info,) = store.list_info("")
    row = read_image(store, classify(info.key, info.size_bytes, False), _context(tmp_path, False))
    text = repr(row)
    assert "DOE" not in text and "12345" not in text
    assert row["phi_fields"] == "PatientName,PatientID" and len(row["patient_pseudonym"]) == 16


def test_bad_arguments_fail_before_any_work(tmp_path: Path) -> None:
    from orthoseg.validation import validate_batch

    settings = Settings(store=str(tmp_path / "store"))
    (tmp_path / "store" / "incoming" / "empty").mkdir(parents=True)
    with pytest.raises(ValueError, match="batch name"):
        validate_batch(settings, "incoming/empty", "../escape")
    with pytest.raises(ValueError, match="purpose"):
        validate_batch(settings, "incoming/empty", "b", "research")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no files"):
        validate_batch(settings, "incoming/empty", "b")
    with pytest.raises(ValueError, match="whole store"):
        validate_batch(settings, str(tmp_path / "store"), "b")
