"""Archive inference killed with SIGKILL mid-run, then resumed: one complete result per image, equal to an
uninterrupted run's.

The killed run is ``run_inference`` in a subprocess with its own local Ray (started in its own process
group), so killing it leaves this test's Ray alone. The resumed run and the uninterrupted reference run (on
a copy of the same inputs in another store) use the session's Ray.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from orthoseg.inference import InferenceSummary, run_inference
from orthoseg.settings import Settings
from orthoseg.storage import LocalStore, ObjectStore, join_key
from tests.integration import test_inference as base

COUNT = 12
SOURCE = f"incoming/{base.BATCH}"
# Rows arrive two at a time per actor: enough batches that a kill after the first leaves most undone.
CONFIG = base.CONFIG
# Columns that name the run or time it, not what was found in the image.
RUN_COLUMNS = {
    "run_id",
    "seg_key",
    "overlay_key",
    "thumbnail_key",
    "from_earlier_run",
    "image_seconds",
    "forward_share_seconds",
}

_SCRIPT = """
import sys

import ray

from orthoseg.inference import InferenceConfig, run_inference
from orthoseg.settings import Settings

settings = Settings.model_validate_json(sys.argv[1])
config = InferenceConfig.model_validate_json(sys.argv[2])
ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
summary = run_inference(settings, sys.argv[3], sys.argv[4], config=config)
print("SUMMARY " + summary.model_dump_json())
"""


def _start(settings: Settings, model_dir: Path) -> subprocess.Popen[str]:
    args = [settings.model_dump_json(), CONFIG.model_dump_json(), SOURCE, str(model_dir)]
    return subprocess.Popen(
        [sys.executable, "-c", _SCRIPT, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: killed as a whole, apart from this test
        env={**os.environ, "RAY_ADDRESS": ""},
    )


def _markers(store_root: Path) -> list[Path]:
    return sorted(store_root.glob("predictions/*/*/rows/*.json"))


def _descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (from /proc), to find Ray processes that left its group."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _kill_mid_run(settings: Settings, model_dir: Path, total: int) -> int:
    """Start the run, SIGKILL its whole process group once some but not all images are marked done.

    Returns:
        The number of completion markers present at the kill.
    """
    process = _start(settings, model_dir)
    root = Path(settings.store)
    children: set[int] = set()
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and process.poll() is None:
            children |= _descendants(process.pid)
            if _markers(root):
                break
            time.sleep(0.02)
        children |= _descendants(process.pid)
        os.killpg(process.pid, signal.SIGKILL)
        output = process.communicate(timeout=60)[0]
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=60)
        for pid in children:  # Ray processes outside the group (its reaper) that outlived the kill
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    marked = len(_markers(root))
    assert process.returncode == -signal.SIGKILL, f"the run ended before the kill:\n{output[-3000:]}"
    assert 1 <= marked < total, f"{marked} of {total} markers at the kill: not a mid-run kill"
    return marked


def _segments(store: ObjectStore, summary: InferenceSummary, uid: str) -> tuple[list[str], np.ndarray]:
    """Segment labels and pixel data of an image's SEG (parsing it proves the file is complete)."""
    import highdicom as hd
    import pydicom

    data = store.get_bytes(join_key(summary.output_prefix, "seg", f"{uid}.dcm"))
    seg = hd.seg.Segmentation.from_dataset(pydicom.dcmread(io.BytesIO(data)))
    referenced = [
        item.ReferencedSOPInstanceUID
        for series in seg.ReferencedSeriesSequence
        for item in series.ReferencedInstanceSequence
    ]
    assert referenced == [uid]
    return [str(d.SegmentLabel) for d in seg.SegmentSequence], np.asarray(seg.pixel_array)


def _check_overlay(store: ObjectStore, summary: InferenceSummary, uid: str) -> None:
    from PIL import Image

    png = store.get_bytes(join_key(summary.output_prefix, "overlays", f"{uid}.png"))
    with Image.open(io.BytesIO(png)) as image:
        image.load()  # a truncated PNG raises here


def _table(store: ObjectStore, summary: InferenceSummary) -> pd.DataFrame:
    frame = pd.read_parquet(io.BytesIO(store.get_bytes(summary.measurements_key)))
    columns = [c for c in frame.columns if c not in RUN_COLUMNS]
    return frame[columns].sort_values(["image_key", "knee"]).reset_index(drop=True)


def test_killed_inference_resumes_to_the_results_of_an_uninterrupted_run(
    ray_cluster: None, settings: Settings, tmp_path: Path
) -> None:
    store = LocalStore(settings.store)
    uids = base._write_radiographs(store, count=COUNT)
    assert len(uids) == COUNT
    total = COUNT + 1  # and the broken file, failed for a reason in the file itself
    model_dir = base._save_model(tmp_path / "model", settings)

    marked = _kill_mid_run(settings, model_dir, total)
    # A marker half written (a store without atomic writes, a disk that filled up) is not taken as done.
    partial = _markers(Path(settings.store))[0]
    partial.write_bytes(partial.read_bytes()[:40])

    # Resumed here, on this test's Ray (what a re-run of `orthoseg infer` does after a crash).
    resumed = run_inference(settings, SOURCE, str(model_dir), config=CONFIG)
    assert resumed.images_total == total
    assert resumed.images_skipped == marked - 1
    assert resumed.images_inferred == total - (marked - 1)
    assert resumed.images_failed == 1 and set(resumed.failures) == {base.BROKEN_KEY}
    assert resumed.images_unmarked == 0 and resumed.unmarked == {}

    # Exactly one complete result per image: one SEG, overlay and thumbnail each, every file whole.
    assert base._outputs(store, resumed.output_prefix) == base._expected_keys(uids)
    left_over = [p for p in Path(settings.store, resumed.output_prefix).rglob(".tmp-*")]
    assert all(p.parent.name in {"seg", "overlays", "thumbnails", "rows"} for p in left_over)
    markers = _markers(Path(settings.store))
    assert len(markers) == total
    assert sorted(json.loads(p.read_bytes())["image_key"] for p in markers) == sorted(
        [f"{SOURCE}/images/{uid}.dcm" for uid in uids] + [base.BROKEN_KEY]
    )
    table = _table(store, resumed)
    ok = table[table["status"] == "ok"]
    assert sorted(set(ok["sop_instance_uid"])) == sorted(uids)
    assert table["image_key"].nunique() == total

    # The same inputs, uninterrupted, into another store: the same masks and the same rows.
    other = settings.model_copy(update={"store": str(tmp_path / "other-store")})
    other_store = LocalStore(other.store)
    for key in store.list_keys(SOURCE):
        other_store.put_bytes(key, store.get_bytes(key))
    reference = run_inference(other, SOURCE, str(model_dir), config=CONFIG)
    assert reference.images_inferred == total and reference.images_failed == 1
    for uid in uids:
        labels, pixels = _segments(store, resumed, uid)
        reference_labels, reference_pixels = _segments(other_store, reference, uid)
        assert labels == reference_labels
        np.testing.assert_array_equal(pixels, reference_pixels, err_msg=f"SEG of {uid}")
        _check_overlay(store, resumed, uid)
    # Every row the same, exactly, but the network's confidence: a film forwarded in a batch of another
    # size (the remainder after the kill is batched differently) gets probabilities that differ in the
    # last float bits; its masks and measurements do not, its confidence only within 1e-4.
    expected = _table(other_store, reference)
    confidence = [c for c in table.columns if c.startswith(("confidence_", "model_confidence"))]
    pd.testing.assert_frame_equal(table.drop(columns=confidence), expected.drop(columns=confidence))
    pd.testing.assert_frame_equal(table[confidence], expected[confidence], check_exact=False, rtol=1e-4)


def test_a_completion_marker_that_cannot_be_written_is_reported(
    settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The worker in this process (no Ray): results written, marker refused -> logged and returned."""
    import torch

    from orthoseg.inference import InferenceWorker, load_model, model_files, row_key
    from orthoseg.storage import StoreError

    store = LocalStore(settings.store)
    uid = base._write_radiographs(store, count=1)[0]
    model, name, version = load_model(settings, str(base._save_model(tmp_path / "model", settings)))
    prefix = f"predictions/{version}/r1"
    threads = torch.get_num_threads()
    try:
        worker = InferenceWorker(
            settings, store.uri, None, model_files(model), name, version, "r1", prefix, CONFIG
        )
    finally:
        torch.set_num_threads(threads)

    class NoMarkers(LocalStore):
        def put_bytes(self, key: str, data: bytes) -> None:
            if "/rows/" in key:
                raise StoreError("disk full")
            super().put_bytes(key, data)

    worker.output = NoMarkers(settings.store)
    key = f"{SOURCE}/images/{uid}.dcm"
    with caplog.at_level("ERROR", logger="orthoseg.inference"):
        out = worker({"image_key": np.asarray([key], dtype=object)})
    row = json.loads(str(out["row_json"][0]))
    assert row["status"] == "ok" and row["completion_marker_error"] == "StoreError: disk full"
    assert store.exists(join_key(prefix, "seg", f"{uid}.dcm")) and not store.exists(row_key(prefix, key))
    assert "completion marker" in caplog.text and "disk full" in caplog.text
    assert row["image_seconds"] > row["forward_share_seconds"] > 0
