"""Validation against a real S3 endpoint (moto over HTTP): a simulated batch with broken files, run twice."""

from __future__ import annotations

import json
from typing import Any

import pytest

from orthoseg.settings import Settings
from orthoseg.storage import S3Store
from orthoseg.validation import ValidationConfig, latest_dataset_version, load_manifest, validate_batch

# What each of the simulator's broken kinds must be refused for (one of the reason kinds).
BROKEN_REASON = {
    "truncated_dicom": "pixels_undecodable",
    "not_dicom": "unreadable",
    "ct_object": "sop_class",
    "phi_patient_name": "phi",
    "missing_pixel_spacing": "pixel_spacing",
    "seg_size_mismatch": "label_shape",
    "sr_object": "sop_class",
}


def _objects(store: S3Store) -> dict[str, str]:
    """Every object of the store with its ETag (content hash for single-part uploads)."""
    paginator = store._client.get_paginator("list_objects_v2")
    objects = {}
    for page in paginator.paginate(Bucket=store.bucket, Prefix=f"{store.prefix}/"):
        for item in page.get("Contents", []):
            objects[item["Key"][len(store.prefix) + 1 :]] = item["ETag"]
    return objects


@pytest.mark.timeout(300)
def test_validation_on_s3_accounts_for_every_file_and_is_idempotent(
    s3_store: S3Store, s3_endpoint: str, tmp_path: Any
) -> None:
    from orthoseg import synth

    synth.generate_dataset(
        s3_store, synth.SynthConfig(count=4, seed=3, batch="s3batch", image_px=256, broken_count=7)
    )
    settings = Settings(store=s3_store.uri, s3_endpoint_url=s3_endpoint, work_dir=str(tmp_path / "work"))
    # 256-pixel test films span 190-400 mm: up to 1.6 mm pixels, coarser than the 1 mm a real DX allows.
    config = ValidationConfig(
        workers=2, pseudonym_salt="s3-salt", pixel_spacing_ranges_mm={"DX": (0.05, 2.0)}
    )
    source = f"{s3_store.uri}/incoming/s3batch"
    summary = validate_batch(settings, source, "s3batch", "training", config=config)

    listed = [k for k in s3_store.list_keys("incoming/s3batch")]
    assert summary.files_total == len(listed)
    assert summary.accepted + summary.quarantined == summary.files_total
    assert summary.images_accepted == 4 and summary.dataset_version is not None
    report = json.loads(s3_store.get_bytes("reports/validation/s3batch/summary.json"))
    entries = {entry["file"]: entry for entry in report["files"]}
    assert set(entries) == {k[len("incoming/s3batch/") :] for k in listed}
    broken = json.loads(s3_store.get_bytes("reports/synth/s3batch/broken.json"))
    for key, info in broken.items():
        kinds = [reason["kind"] for reason in entries[key]["reasons"]]
        assert entries[key]["verdict"] == "quarantined" and BROKEN_REASON[info["kind"]] in kinds, (key, kinds)
        assert s3_store.exists(f"quarantine/s3batch/{key}.reasons.json")

    manifest = load_manifest(s3_store, summary.dataset_version)
    assert len(manifest) == 4 and manifest["label_key"].notna().all() and manifest["truth_key"].notna().all()
    for key in (*manifest["image_key"], *manifest["label_key"], *manifest["truth_key"]):
        assert s3_store.exists(key)
    assert latest_dataset_version(s3_store) == summary.dataset_version
    assert (
        s3_store.exists(summary.report_key)
        and summary.data_docs_key
        and s3_store.exists(summary.data_docs_key)
    )

    before = _objects(s3_store)
    again = validate_batch(settings, "incoming/s3batch", "s3batch", "training", config=config)
    after = _objects(s3_store)
    assert again.dataset_version == summary.dataset_version and again.new_rows == 0
    stable = ("datasets/", "quarantine/", "incoming/")
    assert {k: v for k, v in after.items() if k.startswith(stable)} == {
        k: v for k, v in before.items() if k.startswith(stable)
    }
    assert len(after) == len(before)
