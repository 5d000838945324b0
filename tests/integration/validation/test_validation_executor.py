"""A reader process that dies mid-batch (as on a decoder crash) costs a retry, never the run or a file."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from orthoseg.storage import LocalStore
from orthoseg.validation import ValidationConfig
from orthoseg.validation.executor import read_all
from orthoseg.validation.inventory import take_inventory
from orthoseg.validation.reader import ReaderContext
from tests.validation_builders import dicom_bytes, dx_dataset


def _parent_pid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def _is_fork_server(pid: int) -> bool:
    try:
        return b"forkserver" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _kill_first_worker(me: int, killed: list[int], deadline_s: float) -> None:
    """SIGKILL the first pool worker (a child of our fork server) as soon as one exists.

    Only children of the multiprocessing fork server count: the test process has other children
    (a session-wide local Ray cluster, for one) that must not be touched.
    """
    end = time.monotonic() + deadline_s
    while time.monotonic() < end and not killed:
        pids = [int(name) for name in os.listdir("/proc") if name.isdigit()]
        servers = {pid for pid in pids if _parent_pid(pid) == me and _is_fork_server(pid)}
        workers = [pid for pid in pids if _parent_pid(pid) in servers]
        if workers:
            os.kill(workers[0], signal.SIGKILL)
            killed.append(workers[0])
        time.sleep(0.02)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to find worker processes")
def test_a_killed_worker_is_survived(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = dicom_bytes(dx_dataset(1, rows=768, columns=768), "JPEG2000Lossless")
    for index in range(10):
        (tmp_path / "images").mkdir(exist_ok=True)
        (tmp_path / "images" / f"{index}.dcm").write_bytes(data)
    store = LocalStore(tmp_path)
    inventory = take_inventory(store)
    context = ReaderContext(store.uri, None, False, ValidationConfig(workers=2), "salt")
    read_all(inventory.images[:1], context, 2)  # start the fork server first: its child is not a worker
    killed: list[int] = []
    killer = threading.Thread(target=_kill_first_worker, args=(os.getpid(), killed, 30.0))
    killer.start()
    with caplog.at_level(logging.WARNING, logger="orthoseg.validation.executor"):
        rows = read_all(inventory.images, context, 2)
    killer.join()
    assert killed, "no worker was seen to kill"
    assert len(rows) == 10 and all(row["pixel_decoded"] for row in rows)
    assert "a reader process died" in caplog.text
