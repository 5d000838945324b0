"""The two real CR files (JPEG 2000 MONOCHROME1 ankle, JPEG-LS hip) decode; as non-knees they get a verdict.

Decision: inference accepts them with a ``body_part`` warning (clinic archives often tag knees as LEG,
EXTREMITY or nothing; the inference quality flag then says a knee model found little to segment), while
training refuses them (a knee model must not learn from a hip).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd

from orthoseg.settings import Settings
from orthoseg.storage import LocalStore
from orthoseg.validation import ValidationConfig, load_manifest, prescreen_batch, validate_batch

FILES = ("RG2_JLSL.dcm", "RG3_J2KR.dcm")


def _batch(realdata_dir: Path, tmp_path: Path) -> Path:
    source = tmp_path / "incoming" / "real" / "images"
    source.mkdir(parents=True)
    for name in FILES:
        shutil.copyfile(realdata_dir / name, source / name)
    return source.parent


def test_real_radiographs_decode_and_are_accepted_for_inference_with_warnings(
    realdata_dir: Path, tmp_path: Path
) -> None:
    source = _batch(realdata_dir, tmp_path)
    settings = Settings(store=str(tmp_path / "store"), work_dir=str(tmp_path / "work"))
    config = ValidationConfig(workers=2, pseudonym_salt="real-salt")
    summary = validate_batch(settings, str(source), "real", "inference", config=config)
    assert summary.accepted == 2 and summary.quarantined == 0
    assert summary.warnings_by_kind["body_part"] == 2
    assert summary.warnings_by_kind["pixel_spacing"] == 1  # RG3 carries no spacing at all
    store = LocalStore(tmp_path / "store")
    table = pd.read_parquet(store.local_path("reports/validation/real/files.parquet")).set_index("file_key")
    assert (table.loc[[f"images/{n}" for n in FILES], "pixel_decoded"] == "True").all()
    assert table.at["images/RG3_J2KR.dcm", "photometric_interpretation"] == "MONOCHROME1"
    assert table.at["images/RG2_JLSL.dcm", "transfer_syntax"] == "1.2.840.10008.1.2.4.80"
    manifest = load_manifest(store, summary.dataset_version)
    assert set(manifest["body_part"]) == {"HIP", "EXTREMITY"}
    assert all("body_part" in w for w in manifest["warnings"])
    report = json.loads(store.get_bytes("reports/validation/real/summary.json"))
    warned = {e["file"]: [w["kind"] for w in e["warnings"]] for e in report["files"]}
    assert "body_part" in warned["images/RG2_JLSL.dcm"]


def test_real_radiographs_are_refused_for_training(realdata_dir: Path, tmp_path: Path) -> None:
    source = _batch(realdata_dir, tmp_path)
    settings = Settings(store=str(tmp_path / "store"), work_dir=str(tmp_path / "work"))
    config = ValidationConfig(workers=1, pseudonym_salt="real-salt")
    summary = prescreen_batch(settings, str(source), "real", "training", config=config)
    assert summary.would_quarantine == 2
    # Not knees, identifying test-set names without a de-identification declaration, and no labels.
    assert summary.reasons_by_kind["body_part"] == 2
    assert summary.reasons_by_kind["phi"] == 2
    assert summary.reasons_by_kind["label_missing"] == 2
