"""A batch of broken, hostile and foreign files: each gets the right verdict and a reason; nothing crashes."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pydicom.encaps import encapsulate

from orthoseg.settings import Settings
from orthoseg.storage import LocalStore
from orthoseg.validation import ValidationConfig, validate_batch
from tests.validation_builders import dicom_bytes, dx_dataset, knee_masks, seg_bytes, uid_for

# Sparse file listed at 64 GiB: it must be refused from its listed size, never read.
ABSURD_BYTES = 64 * 1024**3
PYDICOM_FILES = {
    # bundled file: (expected reason kind, must its pixels decode?)
    "CT_small.dcm": ("modality", True),
    "MR_small.dcm": ("modality", True),
    "JPEG2000.dcm": ("modality", True),
    # A 12-bit JPEG Extended file with a misplaced marker: libjpeg refuses it (only GDCM is lenient).
    "JPEG-lossy.dcm": ("pixels_undecodable", False),
    "JPGExtended.dcm": ("modality", True),
    "MR_small_RLE.dcm": ("modality", True),
    "MR_small_jpeg_ls_lossless.dcm": ("modality", True),
    "MR_small_jp2klossless.dcm": ("modality", True),
    "MR_small_bigendian.dcm": ("modality", True),
    "image_dfl.dcm": ("modality", True),
    "examples_ybr_color.dcm": ("multi_frame", False),
    "rtdose.dcm": ("multi_frame", False),
    "SC_rgb_rle.dcm": ("colour", False),
    "reportsi.dcm": ("sop_class", False),
    "test-SR.dcm": ("sop_class", False),
    "liver_1frame.dcm": ("sop_class", False),
    "rtplan.dcm": ("sop_class", False),
    "waveform_ecg.dcm": ("sop_class", False),
    "rtstruct.dcm": ("unreadable", False),
    "no_meta.dcm": ("unreadable", False),
    "MR_truncated.dcm": ("pixels_undecodable", False),
}


def _hostile_corpus(root: Path) -> dict[str, tuple[str, str | None]]:
    """Write the batch; returns {key: (expected verdict, expected reason kind)}."""
    import pydicom.data
    from pydicom.dataset import Dataset

    expected: dict[str, tuple[str, str | None]] = {}

    def put(key: str, data: bytes, verdict: str, kind: str | None) -> None:
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        expected[key] = (verdict, kind)

    good = dx_dataset(1)
    put("images/good.dcm", dicom_bytes(good), "accepted", None)
    put("images/nested/deeper/good_mono1.dcm", dicom_bytes(dx_dataset(2, monochrome1=True)), "accepted", None)
    put("images/rle.dcm", dicom_bytes(dx_dataset(3), "RLELossless"), "accepted", None)
    put("images/jpegls.dcm", dicom_bytes(dx_dataset(4), "JPEGLSLossless"), "accepted", None)
    put(
        "images/j2k_mono1.dcm",
        dicom_bytes(dx_dataset(5, monochrome1=True), "JPEG2000Lossless"),
        "accepted",
        None,
    )
    put("images/zero.dcm", b"", "quarantined", "empty_file")
    put("images/random.dcm", np.random.default_rng(0).bytes(4096), "quarantined", "unreadable")
    put("images/notes.txt", b"radiology notes, not an image\n", "quarantined", "not_radiograph")
    put("images/.DS_Store", b"\x00\x00\x00\x01Bud1", "quarantined", "not_radiograph")
    put("images/IM0001", dicom_bytes(dx_dataset(61)), "accepted", None)  # DICOM without a suffix
    full = dicom_bytes(dx_dataset(6))
    put("images/truncated_header.dcm", full[:300], "quarantined", "unreadable")
    put("images/truncated_pixels.dcm", full[: len(full) * 2 // 3], "quarantined", "pixels_undecodable")
    lying = dx_dataset(7)
    lying.Rows, lying.Columns = 4000, 4000  # declares 32 MB of pixels, holds 40 kB
    put("images/declared_far_larger.dcm", dicom_bytes(lying), "quarantined", "pixels_undecodable")
    lying_j2k = copy.deepcopy(dx_dataset(8))
    lying_j2k.compress(__import__("pydicom").uid.JPEG2000Lossless)
    lying_j2k.Rows, lying_j2k.Columns = 3000, 3000
    put("images/declared_far_larger_j2k.dcm", dicom_bytes(lying_j2k), "quarantined", "pixels_undecodable")
    absurd = dx_dataset(9)
    absurd.Rows, absurd.Columns = 65535, 65535
    put("images/absurd_dims.dcm", dicom_bytes(absurd), "quarantined", "too_many_pixels")
    multi = dx_dataset(10)
    multi.NumberOfFrames = 2
    multi.PixelData = multi.PixelData * 2
    put("images/multi_frame.dcm", dicom_bytes(multi), "quarantined", "multi_frame")
    colour = dx_dataset(11, pixels=np.zeros((160, 128 * 3)))
    colour.SamplesPerPixel, colour.PhotometricInterpretation, colour.PlanarConfiguration = 3, "RGB", 0
    put("images/colour.dcm", dicom_bytes(colour), "quarantined", "colour")
    put(
        "images/blank.dcm",
        dicom_bytes(dx_dataset(12, pixels=np.full((160, 128), 1000))),
        "quarantined",
        "blank",
    )
    burnt = np.full((160, 128), 4095)
    burnt[:40] = np.linspace(0, 4000, 128)[None, :]
    put("images/saturated.dcm", dicom_bytes(dx_dataset(13, pixels=burnt)), "quarantined", "saturated")
    no_uid = dx_dataset(14)
    del no_uid.SOPInstanceUID
    put("images/no_uid.dcm", dicom_bytes(no_uid), "quarantined", "sop_instance_uid")
    put("images/zz_duplicate_of_good.dcm", dicom_bytes(good), "quarantined", "duplicate")
    weird_syntax = dx_dataset(15)
    weird_syntax.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2: no decoder installed
    weird_syntax.PixelData = encapsulate([weird_syntax.PixelData])
    put("images/mpeg2_syntax.dcm", dicom_bytes(weird_syntax), "quarantined", "transfer_syntax")
    processing = dx_dataset(16)
    processing.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1.1"
    processing.file_meta.MediaStorageSOPClassUID = processing.SOPClassUID
    put("images/dx_for_processing.dcm", dicom_bytes(processing), "quarantined", "sop_class")
    raw = Dataset()  # a dataset written without preamble or file meta
    raw.update({k: v for k, v in dx_dataset(17).items()})
    buffer = __import__("io").BytesIO()
    raw.save_as(buffer, implicit_vr=True, little_endian=True)
    put("images/no_preamble.dcm", buffer.getvalue(), "quarantined", "unreadable")
    for name, (kind, _) in PYDICOM_FILES.items():
        put(
            f"images/pydicom/{name}",
            Path(pydicom.data.get_testdata_file(name)).read_bytes(),
            "quarantined",
            kind,
        )
    # Companions: an image with a valid SEG and truth; an image whose truth is broken (both refused with it).
    labelled = dx_dataset(20)
    put("images/labelled.dcm", dicom_bytes(labelled), "accepted", None)
    put(f"labels/{uid_for(20)}.dcm", seg_bytes(labelled, knee_masks(160, 128)), "accepted", None)
    put(f"truth/{uid_for(20)}.json", json.dumps({"sop_instance_uid": uid_for(20)}).encode(), "accepted", None)
    put("images/bad_truth.dcm", dicom_bytes(dx_dataset(21)), "quarantined", "truth_invalid")
    put(f"truth/{uid_for(21)}.json", b"{not json", "quarantined", "image_quarantined")
    # Orphans: labels and truth that pair with nothing.
    put(f"labels/{uid_for(99)}.dcm", seg_bytes(dx_dataset(99), knee_masks(160, 128)), "quarantined", "orphan")
    put("labels/readme.txt", b"exported by tool X", "quarantined", "orphan")
    put(f"truth/{uid_for(98)}.json", b"{}", "quarantined", "orphan")
    # A file of absurd listed size (sparse: takes no disk), links, directories.
    with (root / "images" / "absurd_size.dcm").open("wb") as fh:
        fh.truncate(ABSURD_BYTES)
    expected["images/absurd_size.dcm"] = ("quarantined", "file_too_large")
    os.symlink(root / "images" / "good.dcm", root / "images" / "link_to_good.dcm")
    expected["images/link_to_good.dcm"] = ("quarantined", "link")
    os.symlink(root / "images" / "nested", root / "images" / "link_to_dir")
    expected["images/link_to_dir"] = ("quarantined", "link")
    os.symlink(root / "does-not-exist", root / "images" / "dangling_link.dcm")
    expected["images/dangling_link.dcm"] = ("quarantined", "link")
    (root / "images" / "empty_directory").mkdir()
    return expected


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Validate the hostile batch once (inference purpose: PHI and body part do not mask other reasons)."""
    base = tmp_path_factory.mktemp("hostile")
    source = base / "incoming" / "hostile"
    expected = _hostile_corpus(source)
    settings = Settings(store=str(base / "store"), work_dir=str(base / "work"))
    config = ValidationConfig(workers=2, pseudonym_salt="hostile-salt")
    summary = validate_batch(settings, str(source), "hostile", "inference", config=config)
    store = LocalStore(base / "store")
    report = json.loads(store.get_bytes("reports/validation/hostile/summary.json"))
    table = pd.read_parquet(store.local_path("reports/validation/hostile/files.parquet"))
    return {"summary": summary, "expected": expected, "store": store, "report": report, "table": table}


def test_every_file_is_accounted_once(hostile_run: dict[str, Any]) -> None:
    summary, expected = hostile_run["summary"], hostile_run["expected"]
    assert summary.files_total == len(expected)
    assert summary.accepted + summary.quarantined == summary.files_total
    verdicts = {entry["file"]: entry["verdict"] for entry in hostile_run["report"]["files"]}
    assert set(verdicts) == set(expected)
    assert "images/empty_directory" not in verdicts  # an empty directory is not a file


def test_each_hostile_file_gets_its_verdict_and_reason(hostile_run: dict[str, Any]) -> None:
    entries = {entry["file"]: entry for entry in hostile_run["report"]["files"]}
    wrong = {}
    for key, (verdict, kind) in hostile_run["expected"].items():
        entry = entries[key]
        kinds = [reason["kind"] for reason in entry["reasons"]]
        if entry["verdict"] != verdict or (kind is not None and kind not in kinds):
            wrong[key] = (entry["verdict"], kinds)
        if verdict == "quarantined":
            assert kinds, f"{key} quarantined without a reason"
    assert not wrong, f"unexpected verdicts: {wrong}"


def test_compressed_and_monochrome1_decode(hostile_run: dict[str, Any]) -> None:
    table = hostile_run["table"].set_index("file_key")
    decoded = {
        "images/rle.dcm",
        "images/jpegls.dcm",
        "images/j2k_mono1.dcm",
        "images/nested/deeper/good_mono1.dcm",
        *(f"images/pydicom/{name}" for name, (_, decodes) in PYDICOM_FILES.items() if decodes),
    }
    for key in decoded:
        assert table.at[key, "pixel_decoded"] == "True", (key, table.at[key, "pixel_error"])
    assert table.at["images/j2k_mono1.dcm", "photometric_interpretation"] == "MONOCHROME1"


def test_quarantine_holds_byte_identical_copies_and_reasons(hostile_run: dict[str, Any]) -> None:
    store: LocalStore = hostile_run["store"]
    reasons = json.loads(store.get_bytes("quarantine/hostile/images/random.dcm.reasons.json"))
    assert reasons["reasons"][0]["kind"] == "unreadable"
    assert reasons["reasons"][0]["expectation"] == "expect_column_values_to_be_in_set"
    assert reasons["reasons"][0]["observed"] is False
    assert "DICM" in reasons["reasons"][0]["detail"]
    source = Path(hostile_run["summary"].source)
    assert (
        store.get_bytes("quarantine/hostile/images/random.dcm") == (source / "images/random.dcm").read_bytes()
    )
    # The absurd file and links are described, not copied.
    assert not store.exists("quarantine/hostile/images/absurd_size.dcm")
    absurd = json.loads(store.get_bytes("quarantine/hostile/images/absurd_size.dcm.reasons.json"))
    assert absurd["copied"] is False and absurd["reasons"][0]["observed"] == ABSURD_BYTES
    assert store.exists("quarantine/hostile/images/link_to_dir.reasons.json")
    # A companion carries its image's reasons.
    truth = json.loads(store.get_bytes(f"quarantine/hostile/truth/{uid_for(21)}.json.reasons.json"))
    assert [r["kind"] for r in truth["reasons"]][:2] == ["image_quarantined", "truth_invalid"]


def test_accepted_files_form_an_inference_dataset(hostile_run: dict[str, Any]) -> None:
    from orthoseg.validation import latest_dataset_version, load_manifest

    store, summary = hostile_run["store"], hostile_run["summary"]
    assert summary.dataset_version is not None
    assert latest_dataset_version(store, "inference") == summary.dataset_version
    assert latest_dataset_version(store, "training") is None
    manifest = load_manifest(store, summary.dataset_version)
    assert len(manifest) == summary.images_accepted == 7
    labelled = manifest.set_index("sop_instance_uid").loc[uid_for(20)]
    assert labelled["label_key"] == f"datasets/{summary.dataset_version}/labels/{uid_for(20)}.dcm"
    assert store.exists(labelled["truth_key"]) and store.exists(labelled["image_key"])
    assert summary.reasons_by_kind["unreadable"] >= 5
    html = store.get_bytes(summary.report_key).decode()
    assert "expect_column_values_to_be_in_set" in html and "images/random.dcm" in html
    assert summary.data_docs_key is not None and store.exists(summary.data_docs_key)
