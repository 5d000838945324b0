"""Batch inference on a real local Ray cluster: outputs, failures, resumption, S3, real radiographs, registry.

The models are freshly initialised networks (no training needed to test the plumbing): what they
segment is noise, so these tests check files, keys, rows and flags, never segmentation quality.
"""

from __future__ import annotations

import importlib.util
import io
import json
from pathlib import Path

import pandas as pd
import pytest

from orthoseg.inference import InferenceConfig, InferenceError, resolve_source, run_inference
from orthoseg.settings import Settings
from orthoseg.storage import LocalStore, ObjectStore, S3Store, join_key

BATCH = "b1"
CONFIG = InferenceConfig(batch_size=2, concurrency=2, overlay_max_side_px=256, annotate_next_count=2)
BROKEN_KEY = f"incoming/{BATCH}/images/broken.dcm"


def _save_model(directory: Path, settings: Settings, predicts_nothing: bool = False) -> Path:
    """A freshly initialised small network saved as a model package (``model.json`` + safetensors)."""
    import torch

    from orthoseg.model import NetworkConfig, build_network_from_config
    from orthoseg.model_package import save_model_artifacts

    torch.manual_seed(0)
    network_config = NetworkConfig(channels=(8, 16, 32))
    network = build_network_from_config(network_config)
    if predicts_nothing:
        # Every layer that writes the 7 output channels: zero weights, strongly negative bias, so each
        # probability is ~0 — a model that finds nothing, like a knee model shown an ankle or a hip.
        with torch.no_grad():
            for module in network.modules():
                if (
                    isinstance(module, torch.nn.Conv2d | torch.nn.ConvTranspose2d)
                    and module.out_channels == 7
                ):
                    module.weight.zero_()
                    module.bias.fill_(-10.0)
    save_model_artifacts(directory, network, network_config, settings.preprocess)
    return directory


def _write_radiographs(store: ObjectStore, count: int = 4) -> list[str]:
    """``count`` small simulated DX knee radiographs under incoming/<batch>/images, plus one broken file.

    Returns:
        The SOPInstanceUIDs of the valid images.
    """
    from orthoseg.synth import SynthConfig, generate_dataset

    generate_dataset(store, SynthConfig(count=count, seed=3, batch=BATCH, image_px=192, views=("AP",)))
    uids = [k.rsplit("/", 1)[1][: -len(".dcm")] for k in store.list_keys(f"incoming/{BATCH}/images")]
    store.put_bytes(BROKEN_KEY, b"DICM but not really a DICOM file")
    return uids


def _patient_names(store: ObjectStore, uids: list[str]) -> list[str]:
    import pydicom

    names = []
    for uid in uids:
        header = pydicom.dcmread(io.BytesIO(store.get_bytes(f"incoming/{BATCH}/images/{uid}.dcm")))
        names.append(str(header.PatientName))
    return [n for n in names if n]


def _expected_keys(uids: list[str]) -> set[str]:
    keys = {"measurements.parquet", "summary.json", "report.html"}
    keys |= {f"seg/{uid}.dcm" for uid in uids} | {f"overlays/{uid}.png" for uid in uids}
    keys |= {f"thumbnails/{uid}.jpg" for uid in uids}
    return keys


def _outputs(store: ObjectStore, prefix: str) -> set[str]:
    return {k[len(prefix) + 1 :] for k in store.list_keys(prefix) if not k.startswith(f"{prefix}/rows/")}


def _check_run(store: ObjectStore, summary, uids: list[str]) -> pd.DataFrame:  # noqa: ANN001
    import highdicom as hd
    import pydicom

    assert summary.images_total == len(uids) + 1
    assert summary.images_failed == 1
    assert set(summary.failures) == {BROKEN_KEY}
    assert _outputs(store, summary.output_prefix) == _expected_keys(uids)

    for uid in uids:
        seg_data = store.get_bytes(join_key(summary.output_prefix, "seg", f"{uid}.dcm"))
        seg = hd.seg.Segmentation.from_dataset(pydicom.dcmread(io.BytesIO(seg_data)))
        referenced = [
            item.ReferencedSOPInstanceUID
            for series in seg.ReferencedSeriesSequence
            for item in series.ReferencedInstanceSequence
        ]
        assert referenced == [uid]
        assert [str(d.SegmentLabel) for d in seg.SegmentSequence][:2] == ["femur", "tibia"]
        png = store.get_bytes(join_key(summary.output_prefix, "overlays", f"{uid}.png"))
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        jpeg = store.get_bytes(join_key(summary.output_prefix, "thumbnails", f"{uid}.jpg"))
        assert jpeg[:3] == b"\xff\xd8\xff"

    frame = pd.read_parquet(io.BytesIO(store.get_bytes(summary.measurements_key)))
    assert len(frame) == len(uids) + 1
    ok = frame[frame["status"] == "ok"]
    assert sorted(ok["sop_instance_uid"]) == sorted(uids)
    assert ok["femur_area_px"].notna().all() and ok["quality_flag"].notna().all()
    # Test-time augmentation confidence: every film gets one; a low one is flagged, never reported as fact.
    assert (ok["tta_passes"] == CONFIG.tta_passes).all()
    assert ok["model_confidence"].between(0.0, 1.0).all()
    low = ok[ok["model_confidence"] < CONFIG.min_model_confidence]
    assert low["measurement_flags"].str.contains("model_confidence:low").all()
    assert (low["quality_flag"] != "ok").all()
    least_confident = ok.sort_values(["model_confidence", "sop_instance_uid"])["sop_instance_uid"]
    assert summary.annotate_next == list(least_confident[: CONFIG.annotate_next_count])
    failed = frame[frame["status"] == "failed"].iloc[0]
    assert failed["image_key"] == BROKEN_KEY
    assert "DICOM" in failed["reason"]

    saved = json.loads(store.get_bytes(join_key(summary.output_prefix, "summary.json")))
    assert saved["run_id"] == summary.run_id and saved["images_failed"] == 1
    assert saved["annotate_next"] == summary.annotate_next
    report = store.get_bytes(summary.report_key).decode()
    assert summary.model_version in report and "broken.dcm" in report
    assert all(f'src="overlays/{uid}.png"' in report for uid in uids)
    # Thumbnails are embedded (the page reads offline without the overlay folder).
    assert report.count("data:image/jpeg;base64,") >= len(uids)
    assert set(ok["knee"]) <= {"L", "R", ""} and ok["study_instance_uid"].str.len().gt(0).all()
    return frame


def test_inference_writes_results_and_resumes(
    ray_cluster: None, settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = LocalStore(settings.store)
    uids = _write_radiographs(store)
    model_dir = _save_model(tmp_path / "model", settings)
    progress: list[tuple[int, int]] = []

    with caplog.at_level("INFO"):
        first = run_inference(
            settings,
            f"incoming/{BATCH}",
            str(model_dir),
            progress=lambda d, t: progress.append((d, t)),
            config=CONFIG,
        )
    assert first.images_inferred == len(uids) + 1 and first.images_skipped == 0
    assert first.output_prefix == f"predictions/{first.model_version}/{first.run_id}"
    frame = _check_run(store, first, uids)
    assert progress[0] == (0, len(uids) + 1) and progress[-1] == (len(uids) + 1, len(uids) + 1)
    assert [d for d, _ in progress] == sorted(d for d, _ in progress)

    # No patient-identifying header value reaches the logs or any output of the run.
    names = _patient_names(store, uids)
    assert names
    outputs = b"".join(
        store.get_bytes(join_key(first.output_prefix, k)) for k in ("report.html", "summary.json")
    )
    outputs += store.get_bytes(first.measurements_key)
    for name in names:
        assert name.encode() not in outputs
        assert name not in caplog.text

    # Same source, same model: same run id; every image is done, nothing is processed again.
    seg_key = join_key(first.output_prefix, "seg", f"{uids[0]}.dcm")
    seg_before = store.get_bytes(seg_key)
    second = run_inference(settings, f"incoming/{BATCH}", str(model_dir), config=CONFIG)
    assert second.run_id == first.run_id
    assert second.images_skipped == len(uids) + 1 and second.images_inferred == 0
    assert second.images_failed == 1
    assert second.annotate_next == first.annotate_next
    assert store.get_bytes(seg_key) == seg_before
    again = pd.read_parquet(io.BytesIO(store.get_bytes(second.measurements_key)))
    assert again["from_earlier_run"].all()
    columns = ["image_key", "status", "sop_instance_uid", "femur_area_px", "implant_type"]
    pd.testing.assert_frame_equal(
        again[columns].reset_index(drop=True), frame[columns].reset_index(drop=True), check_dtype=False
    )


def test_inference_on_s3_writes_the_same_keys(
    ray_cluster: None, s3_endpoint: str, s3_bucket: str, settings: Settings, tmp_path: Path
) -> None:
    s3_settings = settings.model_copy(
        update={"store": f"s3://{s3_bucket}/orthoseg", "s3_endpoint_url": s3_endpoint}
    )
    store = S3Store(s3_settings.store, endpoint_url=s3_endpoint)
    uids = _write_radiographs(store, count=3)
    model_dir = _save_model(tmp_path / "model", settings)

    # One actor here: the two-actor path is covered on the local store; this test is about S3 keys.
    config = CONFIG.model_copy(update={"concurrency": 1})
    summary = run_inference(s3_settings, f"incoming/{BATCH}", str(model_dir), config=config)
    _check_run(store, summary, uids)
    assert summary.images_inferred == len(uids) + 1


def test_sources_resolve_to_radiograph_keys(settings: Settings, tmp_path: Path) -> None:
    store = LocalStore(settings.store)
    store.put_bytes(f"incoming/{BATCH}/images/a.dcm", b"x")
    store.put_bytes(f"incoming/{BATCH}/images/.hidden", b"x")
    store.put_bytes(f"incoming/{BATCH}/labels/a.dcm", b"x")
    store.put_bytes(f"incoming/{BATCH}/truth/a.json", b"{}")
    manifest = pd.DataFrame({"sop_instance_uid": ["1.2"], "image_key": ["datasets/v1/images/1.2.dcm"]})
    buffer = io.BytesIO()
    manifest.to_parquet(buffer)
    store.put_bytes("datasets/v1/manifest.parquet", buffer.getvalue())
    store.put_bytes("datasets/LATEST", b"v1\n")

    prefix = resolve_source(settings, f"incoming/{BATCH}")
    assert prefix.keys == (f"incoming/{BATCH}/images/a.dcm",)
    folder = resolve_source(settings, str(store.root / "incoming" / BATCH))
    assert folder.keys == ("images/a.dcm",) and folder.store_uri.startswith("file://")
    for ref in ("dataset:v1", "dataset:latest"):
        dataset = resolve_source(settings, ref)
        assert dataset.keys == ("datasets/v1/images/1.2.dcm",) and dataset.canonical == "dataset:v1"
    with pytest.raises(InferenceError, match="not dataset"):
        resolve_source(settings, "no/such/prefix")


def test_real_radiographs_do_not_crash_and_find_no_knee(
    ray_cluster: None, realdata_dir: Path, settings: Settings, tmp_path: Path
) -> None:
    model_dir = _save_model(tmp_path / "model", settings, predicts_nothing=True)
    summary = run_inference(settings, str(realdata_dir), str(model_dir), config=CONFIG)
    store = LocalStore(settings.store)
    frame = pd.read_parquet(io.BytesIO(store.get_bytes(summary.measurements_key)))
    assert summary.images_failed == 0, summary.failures
    assert set(frame["image_key"]) == {"RG2_JLSL.dcm", "RG3_J2KR.dcm"}
    assert (frame["quality_flag"] == "no_knee_found").all()
    assert (frame["implant_type"] == "unknown").all()
    # Nothing found, nothing to be confident about: no confidence, no annotate-next candidate.
    assert frame["model_confidence"].isna().all() and summary.annotate_next == []
    assert set(frame["photometric_interpretation"]) == {"MONOCHROME1", "MONOCHROME2"}
    for uid in frame["sop_instance_uid"]:
        assert store.exists(join_key(summary.output_prefix, "seg", f"{uid}.dcm"))


@pytest.mark.skipif(
    importlib.util.find_spec("orthoseg.registry") is None,
    reason="orthoseg.registry does not exist yet: the registry path of run_inference is untested",
)
def test_inference_of_the_champion_from_the_registry(
    ray_cluster: None, settings: Settings, tmp_path: Path
) -> None:
    import mlflow
    import torch

    from orthoseg.model import NetworkConfig, build_network_from_config
    from orthoseg.model_package import connect_tracking, log_segmentation_model
    from orthoseg.registry import promote_model, register_model

    client = connect_tracking(settings)
    experiment_id = client.create_experiment(
        "inference-test", artifact_location=(tmp_path / "mlartifacts").as_uri()
    )
    torch.manual_seed(0)
    network_config = NetworkConfig(channels=(8, 16, 32))
    with mlflow.start_run(experiment_id=experiment_id) as run:
        log_segmentation_model(build_network_from_config(network_config), network_config, settings.preprocess)
        mlflow.log_metric("test_dice_mean", 0.5)
    registered = register_model(settings, run.info.run_id, dataset_version="test")
    assert promote_model(settings, registered.version, force=True).promoted  # no benchmark set here

    store = LocalStore(settings.store)
    uids = _write_radiographs(store, count=1)
    summary = run_inference(settings, f"incoming/{BATCH}", "champion", config=CONFIG)
    assert summary.model_version == registered.version
    assert summary.output_prefix.startswith(f"predictions/{registered.version}/")
    assert _outputs(store, summary.output_prefix) == _expected_keys(uids)
    frame = pd.read_parquet(io.BytesIO(store.get_bytes(summary.measurements_key)))
    assert set(frame["model_version"]) == {registered.version}


def test_report_escapes_every_value() -> None:
    from orthoseg.report import render_inference_report

    hostile = "<script>alert(1)</script>"
    frame = pd.DataFrame(
        [
            {
                "sop_instance_uid": "1.2",
                "image_key": "a.dcm",
                "status": "ok",
                "quality_flag": "ok",
                "implant_type": hostile,
                "femur_area_mm2": 1234.5,
            },
            {"sop_instance_uid": None, "image_key": f"{hostile}.dcm", "status": "failed", "reason": hostile},
        ]
    )
    summary = {"model_name": hostile, "model_version": "3", "run_id": "r", "images_total": 2}
    page = render_inference_report(summary, frame, {"1.2": 'overlays/1.2.png"onerror="x'})
    assert "<script>" not in page
    assert "&lt;script&gt;" in page and "1234.5" in page and "Failures" in page
    assert 'onerror="x' not in page
