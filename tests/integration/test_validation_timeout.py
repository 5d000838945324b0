"""A decoder that hangs costs its file and one reader process, never the batch (real pool and limit)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from orthoseg.settings import Settings
from orthoseg.storage import LocalStore
from orthoseg.validation import ValidationConfig, validate_batch
from orthoseg.validation.executor import read_all
from orthoseg.validation.inventory import take_inventory
from orthoseg.validation.reader import ReaderContext
from tests.dicom_factory import make_dx, to_bytes
from tests.integration.hanging_decoder import HANG_MARKER

PLUGIN = "tests.integration.hanging_decoder"
LIMIT_S = 3.0  # seconds: generous for 50 kB films on a loaded 2-core machine, short for a test


def _film(index: int, hang: bool = False) -> bytes:
    rng = np.random.default_rng(index)
    pixels = np.clip(
        1500 + 900 * np.sin(np.arange(160) / 9)[None, :] + rng.normal(0, 40, (160, 160)), 0, 4095
    )
    ds = make_dx(pixels, uid=f"1.2.826.0.1.3680043.8.498.93.{index}")
    if hang:
        ds.ImageComments = HANG_MARKER.decode()
    return to_bytes(ds)


def _batch(root: Path, names: list[str], hanging: str) -> Path:
    (root / "images").mkdir(parents=True)
    for index, name in enumerate(names):
        (root / "images" / name).write_bytes(_film(index, hang=name == hanging))
    return root


def _live_children() -> list[int]:
    """Processes whose parent is a child of this process (pool workers of the fork server)."""

    def parent(pid: int) -> int:
        try:
            return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            return -1

    pids = [int(name) for name in os.listdir("/proc") if name.isdigit()]
    children = {pid for pid in pids if parent(pid) == os.getpid()}
    return [pid for pid in pids if parent(pid) in children]


def _sleeping(pid: int) -> bool:
    try:
        return b"sleep" in Path(f"/proc/{pid}/wchan").read_bytes()
    except OSError:
        return False


@pytest.mark.timeout(120)
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to look for workers")
def test_a_hung_file_is_timed_out_and_the_rest_of_its_task_is_read(tmp_path: Path) -> None:
    names = [f"{i}.dcm" for i in range(5)]
    store = LocalStore(_batch(tmp_path, names, hanging="1.dcm"))
    config = ValidationConfig(workers=2, file_time_limit_s=LIMIT_S, decoder_plugins=(PLUGIN,))
    context = ReaderContext(store.uri, None, False, config, "salt")
    started = time.monotonic()
    # Three files per task: the hung file is in the middle of its task; the file after it must be read too.
    rows = {row["file_key"]: row for row in read_all(take_inventory(store).images, context, 2, chunk_size=3)}
    elapsed = time.monotonic() - started
    hung = rows["images/1.dcm"]
    assert hung["timed_out"] is True and hung["time_limit_s"] == LIMIT_S
    assert hung["read_error"].startswith("decoding exceeded 3 s")
    assert hung["readable"] is None and hung["pixel_decoded"] is None
    assert all(rows[f"images/{name}"]["pixel_decoded"] is True for name in names if name != "1.dcm")
    assert elapsed < 60, f"took {elapsed:.0f} s"
    # The hung process was killed, not left behind sleeping.
    assert not [pid for pid in _live_children() if _sleeping(pid)]


@pytest.mark.timeout(180)
def test_validate_batch_quarantines_the_hung_file_and_accepts_the_others(tmp_path: Path) -> None:
    source = _batch(tmp_path / "incoming" / "hang", ["a.dcm", "b_hangs.dcm", "c.dcm", "d.dcm"], "b_hangs.dcm")
    settings = Settings(store=str(tmp_path / "store"), work_dir=str(tmp_path / "work"))
    config = ValidationConfig.from_settings(
        settings, workers=2, file_time_limit_s=LIMIT_S, decoder_plugins=(PLUGIN,), pseudonym_salt="s"
    )
    started = time.monotonic()
    summary = validate_batch(settings, str(source), "hang", "inference", config=config)
    elapsed = time.monotonic() - started
    assert summary.accepted == 3 and summary.quarantined == 1 and summary.images_accepted == 3
    assert summary.reasons_by_kind == {"decode_timeout": 1}
    store = LocalStore(tmp_path / "store")
    document: dict[str, Any] = json.loads(store.get_bytes("quarantine/hang/images/b_hangs.dcm.reasons.json"))
    (reason,) = document["reasons"]
    assert reason["kind"] == "decode_timeout" and reason["severity"] == "critical"
    assert reason["detail"].startswith("decoding exceeded 3 s") and "replaced" in reason["detail"]
    assert reason["facts"] == {"time_limit_s": 3}
    assert "within 3 s" in reason["message"]
    assert (
        store.get_bytes("quarantine/hang/images/b_hangs.dcm") == (source / "images/b_hangs.dcm").read_bytes()
    )
    assert elapsed < 120, f"took {elapsed:.0f} s"
