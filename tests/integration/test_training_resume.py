"""Fault tolerance: a Ray Train worker killed mid-run costs a restart from the last checkpoint, no epoch."""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from orthoseg.settings import Settings
from orthoseg.storage import store_from_settings
from orthoseg.training import CHECKPOINT_PREFIX, run_training
from orthoseg.training.checkpoint import read_summary
from tests.integration._dataset_helpers import write_dataset_version

pytestmark = pytest.mark.usefixtures("ray_cluster")
logger = logging.getLogger(__name__)


def _parent_pid(pid: int) -> int:
    """The parent of a process (0 when it is gone): field 4 of ``/proc/<pid>/stat``, after the name."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def _descends_from(pid: int, ancestor: int) -> bool:
    while pid > 1:
        if pid == ancestor:
            return True
        pid = _parent_pid(pid)
    return False


def _train_worker_pids() -> list[int]:
    """This test's Ray Train workers (Ray names them ``ray::RayTrainWorker...``).

    Only descendants of this process: the session's local Ray cluster runs under it, and a training that
    another program runs on the same machine must never be the one killed.
    """
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if command.startswith("ray::RayTrainWorker") and _descends_from(int(entry.name), os.getpid()):
            pids.append(int(entry.name))
    return sorted(pids)


def test_a_worker_killed_mid_run_resumes_from_the_last_checkpoint(settings: Settings) -> None:
    settings = settings.model_copy(
        update={"train": settings.train.model_copy(update={"epochs": 4, "max_failures": 2})}
    )
    version = write_dataset_version(store_from_settings(settings), count=12, seed=3)
    killed: list[int] = []

    def kill_a_worker_after_epoch_two(done: int, total: int) -> None:
        if done == 2 and not killed:
            pids = _train_worker_pids()
            assert pids, "no Ray Train worker process found to kill"
            os.kill(pids[-1], signal.SIGKILL)
            killed.append(pids[-1])

    started = time.perf_counter()
    result = run_training(settings, version, progress=kill_a_worker_after_epoch_two)
    seconds = time.perf_counter() - started
    logger.info("training with one killed worker took %.1f s", seconds)

    assert killed, "the run finished before a worker could be killed"
    assert not Path(f"/proc/{killed[0]}").exists()
    # The last attempt restored the latest checkpoint Ray had registered (not epoch 0) and finished.
    assert result.epochs == 4
    assert 1 <= result.resumed_from_epoch < 4
    run_folder = Path(settings.store) / CHECKPOINT_PREFIX / result.ray_run_name
    latest = sorted(run_folder.glob("epoch_*"))[-1]
    summary = read_summary(latest)
    assert summary["epoch"] == 4
    assert [entry["epoch"] for entry in summary["history"]] == [1, 2, 3, 4]
    # Every epoch reached MLflow exactly once.
    history = MlflowClient(settings.mlflow_uri).get_metric_history(result.run_id, "train_loss")
    assert sorted(m.step for m in history) == [1, 2, 3, 4]
