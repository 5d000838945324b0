"""Writing batches: store layout, byte-identical reruns, idempotence, broken files, preview, S3."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from orthoseg.radiograph import RadiographError, read_header, read_radiograph
from orthoseg.seg_io import read_seg_masks
from orthoseg.storage import LocalStore, ObjectStore
from orthoseg.synth import SynthConfig, SynthSummary, generate_dataset, write_preview
from orthoseg.synth.broken import BROKEN_KINDS

PX = 192


def _files(store: LocalStore, prefix: str) -> dict[str, bytes]:
    return {key: store.get_bytes(key) for key in store.list_keys(prefix)}


def test_layout_and_byte_identical_reruns(tmp_path: Path) -> None:
    config = SynthConfig(count=6, seed=21, batch="b1", image_px=PX, workers=2)
    first, second = LocalStore(tmp_path / "one"), LocalStore(tmp_path / "two")
    progress: list[tuple[int, int]] = []
    summary = generate_dataset(first, config, progress=lambda done, total: progress.append((done, total)))
    generate_dataset(second, config.model_copy(update={"workers": 1}))
    assert isinstance(summary, SynthSummary)
    assert (summary.images, summary.labels, summary.broken, summary.prefix) == (6, 6, 0, "incoming/b1")
    assert sum(summary.categories.values()) == 6
    assert progress[-1] == (6, 6)
    files_one, files_two = _files(first, "incoming/b1"), _files(second, "incoming/b1")
    assert files_one == files_two  # same seed -> byte-identical, whatever the number of workers
    uids = {
        key.rsplit("/", 1)[1].split(".dcm")[0] for key in files_one if key.startswith("incoming/b1/images/")
    }
    assert len(uids) == 6
    for uid in uids:
        image = files_one[f"incoming/b1/images/{uid}.dcm"]
        assert read_header(image).SOPInstanceUID == uid
        masks, referenced = read_seg_masks(files_one[f"incoming/b1/labels/{uid}.dcm"])
        assert referenced == uid
        truth = json.loads(files_one[f"incoming/b1/truth/{uid}.json"])
        assert truth["sop_instance_uid"] == uid
        assert masks.shape[1:] == read_radiograph(image).pixels.shape
    other = LocalStore(tmp_path / "three")
    generate_dataset(other, config.model_copy(update={"seed": 22}))
    assert _files(other, "incoming/b1") != files_one


def test_rerun_skips_finished_cases_and_completes_missing_ones(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    config = SynthConfig(count=4, seed=5, batch="again", image_px=PX)
    generate_dataset(store, config)
    keys = store.list_keys("incoming/again/images")
    stamps = {key: store.local_path(key).stat().st_mtime_ns for key in keys}
    store.delete(keys[0])  # a crash lost one file
    summary = generate_dataset(store, config)
    assert summary.images == 4
    assert store.list_keys("incoming/again/images") == keys
    assert all(store.local_path(k).stat().st_mtime_ns == stamps[k] for k in keys[1:])


def test_broken_files_are_broken_as_declared(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    config = SynthConfig(count=2, seed=8, batch="bad", image_px=PX, broken_count=len(BROKEN_KINDS))
    summary = generate_dataset(store, config)
    assert summary.broken == len(BROKEN_KINDS)
    verdicts = json.loads(store.get_bytes("reports/synth/bad/broken.json"))
    assert sorted(v["kind"] for v in verdicts.values()) == sorted(BROKEN_KINDS)
    for key, verdict in verdicts.items():
        data = store.get_bytes(f"incoming/bad/{key}")
        kind = verdict["kind"]
        if kind in ("truncated_dicom", "not_dicom"):
            with pytest.raises(RadiographError):
                read_radiograph(data)
        elif kind == "ct_object":
            assert read_header(data).Modality == "CT"
        elif kind == "sr_object":
            assert read_header(data).Modality == "SR" and "PixelData" not in pydicom.dcmread(io.BytesIO(data))
        elif kind == "phi_patient_name":
            header = read_header(data)
            assert "PatientIdentityRemoved" not in header and "^" in str(header.PatientName)
        elif kind == "missing_pixel_spacing":
            assert read_radiograph(data).pixel_spacing_mm is None
        elif kind == "seg_size_mismatch":
            masks, uid = read_seg_masks(data)
            image = read_radiograph(store.get_bytes(f"incoming/bad/images/{uid}.dcm"))
            assert masks.shape[1:] != image.pixels.shape
        else:  # pragma: no cover - a new kind needs a check here
            raise AssertionError(kind)


def test_preview_is_a_png_contact_sheet(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    config = SynthConfig(count=3, seed=2, image_px=PX)
    key = write_preview(store, config, "incoming/synth/preview.png", n=3)
    image = Image.open(io.BytesIO(store.get_bytes(key)))
    assert image.format == "PNG" and image.size[0] > image.size[1] > 100
    assert np.asarray(image).std() > 10


def test_generate_into_s3(s3_store: ObjectStore) -> None:
    config = SynthConfig(count=2, seed=4, batch="s3", image_px=PX, workers=2, broken_count=2)
    summary = generate_dataset(s3_store, config)
    assert summary.images == 2 and summary.broken == 2
    keys = s3_store.list_keys("incoming/s3")
    assert len([k for k in keys if "/images/" in k]) == 4  # 2 cases + 2 broken files
    assert len([k for k in keys if "/truth/" in k]) == 2
