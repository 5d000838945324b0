"""Reading files in parallel worker processes, surviving a worker that dies or hangs on a hostile file.

Each worker process gets the ``ReaderContext`` once, opens its own store client and caps its own address
space, so a decoder that crashes or allocates without bound takes down one worker, never the run. Workers
send one row per file, so this process always knows which file each worker holds and since when:

- a worker that dies (decoder crash, memory limit, killed) is replaced; the file it held is read once more
  and, if it kills that reader too, recorded as such (``CRASH_REASON``); the rest of its task goes back to
  the queue;
- a worker that holds one file longer than ``ValidationConfig.file_time_limit_s`` (a decoder that hangs in
  native code never returns, so no in-process timer can stop it) is killed and replaced, and the file is
  recorded as timed out (``timed_out``, refused by the suite); the rest of its task goes back to the queue.
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing
import os
import resource
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any, cast

from orthoseg.progress import ProgressCallback
from orthoseg.storage import ObjectStore, open_store
from orthoseg.validation.inventory import InputFile
from orthoseg.validation.reader import ReaderContext, empty_row, read_image

logger = logging.getLogger(__name__)


CRASH_REASON = (
    "the reader process died twice while reading this file (decoder crash or memory limit); each time it was "
    "the file in hand"
)
TIMEOUT_REASON = (
    "decoding exceeded {limit:g} s (the time limit per file, ORTHOSEG_VALIDATION__FILE_TIME_LIMIT_S); the "
    "reader process was stopped and replaced"
)
START_FAILURE = (
    "validation worker processes die on start; when calling validate_batch from a script, put the call "
    "under `if __name__ == '__main__':` (worker processes import the main module)"
)

# Imported once in the fork server, so every worker starts with them loaded (highdicom reads labels).
_PRELOAD = ["orthoseg.validation.reader", "orthoseg.seg_io", "highdicom", "PIL.PngImagePlugin"]
# Workers that die before they are ready, with none ever ready, before the run gives up.
_MAX_START_FAILURES = 3
# A worker not ready this long after it was started (seconds; at least the file time limit) is replaced.
_START_LIMIT_S = 60.0
# Longest wait for a worker message before the time limits are looked at again (seconds).
_POLL_S = 5.0
# Tasks a worker holds at once: the next one is already there when it finishes one (no idle round trip).
_TASKS_IN_FLIGHT = 2
_WORKER: dict[str, Any] = {}


def _limit_memory(limit_bytes: int | None) -> None:
    if limit_bytes is None:
        return
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = limit_bytes if hard == resource.RLIM_INFINITY else min(limit_bytes, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))


def import_decoder_plugins(modules: Sequence[str]) -> None:
    """Import ``ValidationConfig.decoder_plugins`` (modules registering pydicom decoders) in this process."""
    for module in modules:
        importlib.import_module(module)


def _init_worker(ctx: ReaderContext) -> None:
    # Runs once in each worker process: cap memory, load decoder plugins, open this process's store client.
    _limit_memory(ctx.config.worker_memory_limit_bytes)
    os.environ.update(ctx.environment)
    import_decoder_plugins(ctx.config.decoder_plugins)
    _WORKER["ctx"] = ctx
    _WORKER["store"] = open_store(
        ctx.source_uri, endpoint_url=ctx.endpoint_url, max_attempts=ctx.s3_max_attempts
    )


def _serve(conn: Connection, ctx: ReaderContext) -> None:
    """A worker's life: start, then read each task's files, sending one row per file as it is done."""
    try:
        _init_worker(ctx)
    except Exception as error:  # a configuration problem (a plugin that does not import), not a file's
        conn.send(("failed", f"{type(error).__name__}: {error}"))
        return
    conn.send(("ready", None))
    while True:
        try:
            task = conn.recv()
        except EOFError:
            return
        if task is None:
            return
        for file in task:
            conn.send(("row", read_image(_WORKER["store"], file, ctx)))


def _failed_row(file: InputFile, reason: str) -> dict[str, Any]:
    row = empty_row(file.key)
    row.update(is_link=file.is_link, size_bytes=file.size_bytes)
    row["read_error"] = reason
    return row


def _crashed_row(file: InputFile) -> dict[str, Any]:
    row = _failed_row(file, CRASH_REASON)
    row["readable"] = False
    return row


def _timed_out_row(file: InputFile, limit_s: float) -> dict[str, Any]:
    # Not "unreadable": nothing is known of the file's contents; the suite refuses it as timed out.
    row = _failed_row(file, TIMEOUT_REASON.format(limit=limit_s))
    row["timed_out"], row["time_limit_s"] = True, float(limit_s)
    return row


@dataclass(eq=False)
class _Slot:
    """One worker process and the files of its current task (the first is the one in hand)."""

    process: BaseProcess
    conn: Connection
    started: float = field(default_factory=time.monotonic)
    ready: bool = False
    pending: list[InputFile] = field(default_factory=list)
    since: float = 0.0


class _Supervisor:
    """Worker processes fed from one queue of tasks, each worker watched against the per-file time limit."""

    def __init__(
        self, ctx: ReaderContext, workers: int, on_row: Callable[[dict[str, Any]], None], chunk_size: int = 1
    ) -> None:
        self.ctx = ctx
        self.max_pending = _TASKS_IN_FLIGHT * max(1, chunk_size)
        self.limit_s = float(ctx.config.file_time_limit_s)
        self.on_row = on_row
        self.queue: deque[list[InputFile]] = deque()
        self.deaths: Counter[str] = Counter()
        self.ever_ready = False
        self.start_failures = 0
        # forkserver: workers start from a clean, single-threaded server with the reader preloaded, which is
        # safe next to threads (boto3, Ray, GX) in the parent and cheap for every later worker.
        self.mp = multiprocessing.get_context("forkserver")
        self.mp.set_forkserver_preload(_PRELOAD)
        self.slots = [self._start() for _ in range(workers)]

    def _start(self) -> _Slot:
        parent, child = self.mp.Pipe(duplex=True)
        process = self.mp.Process(target=_serve, args=(child, self.ctx), daemon=True)
        process.start()
        child.close()  # so that the worker's death reads as end-of-file here
        return _Slot(process, parent)

    def _stop(self, slot: _Slot) -> None:
        if slot.process.is_alive():
            slot.process.kill()
        slot.process.join(timeout=10)
        slot.conn.close()

    def _replace(self, slot: _Slot) -> None:
        self._stop(slot)
        self.slots[self.slots.index(slot)] = self._start()

    def _on_death(self, slot: _Slot) -> None:
        slot.process.join(timeout=10)
        if not slot.pending:
            logger.warning(
                "a reader process died %s (exit code %s); starting another",
                "idle" if slot.ready else "while starting",
                slot.process.exitcode,
            )
        if not slot.ready:
            self.start_failures += 1
            allowed = _MAX_START_FAILURES * (4 * len(self.slots) if self.ever_ready else 1)
            if self.start_failures >= allowed:
                raise RuntimeError(START_FAILURE)
        if slot.pending:
            file, rest = slot.pending[0], slot.pending[1:]
            if rest:
                self.queue.appendleft(rest)
            self.deaths[file.key] += 1
            if self.deaths[file.key] >= 2:
                logger.warning("%s kills its reader process; recorded as unreadable", file.key)
                self.on_row(_crashed_row(file))
            else:
                logger.warning("a reader process died on %s; reading it once more", file.key)
                self.queue.appendleft([file])
        slot.pending = []
        self._replace(slot)

    def _on_messages(self, slot: _Slot) -> None:
        """Everything the worker has sent so far (one wait, many rows)."""
        while True:
            try:
                kind, payload = slot.conn.recv()
            except (EOFError, OSError):
                self._on_death(slot)
                return
            self._on_message(slot, kind, payload)
            try:
                if not slot.conn.poll():
                    return
            except (EOFError, OSError):
                self._on_death(slot)
                return

    def _on_message(self, slot: _Slot, kind: str, payload: Any) -> None:
        if kind == "ready":
            slot.ready = self.ever_ready = True
        elif kind == "failed":
            raise RuntimeError(f"validation reader processes cannot start: {payload}")
        elif kind == "row":
            if not slot.pending or payload["file_key"] != slot.pending[0].key:
                raise RuntimeError(f"reader sent a row for {payload['file_key']!r} it was not given")
            slot.pending.pop(0)
            slot.since = time.monotonic()
            self.on_row(payload)

    def _hand_out(self) -> None:
        for slot in list(self.slots):
            while slot.ready and self.queue and len(slot.pending) < self.max_pending:
                task = self.queue.popleft()
                if not slot.pending:
                    slot.since = time.monotonic()  # the first file of this task is in hand from now
                slot.pending.extend(task)
                try:
                    slot.conn.send(task)
                except OSError:  # the worker is gone: the task goes back, what it held is handled as a death
                    del slot.pending[len(slot.pending) - len(task) :]
                    self.queue.appendleft(task)
                    self._on_death(slot)
                    break

    def _stop_overdue(self) -> None:
        now = time.monotonic()
        for slot in list(self.slots):
            if not slot.ready and now - slot.started > max(_START_LIMIT_S, self.limit_s):
                logger.warning("a reader process did not start in time; stopping it")
                slot.process.kill()
                self._on_death(slot)
                continue
            if slot.pending and now - slot.since > self.limit_s:
                file, rest = slot.pending[0], slot.pending[1:]
                logger.warning(
                    "%s: reading took over %g s; stopping its reader process", file.key, self.limit_s
                )
                slot.pending = []
                self._replace(slot)
                if rest:
                    self.queue.appendleft(rest)
                self.on_row(_timed_out_row(file, self.limit_s))

    def run(self, tasks: list[list[InputFile]]) -> None:
        """Read every task's files; returns when each file has its row."""
        self.queue.extend(tasks)
        try:
            while self.queue or any(slot.pending for slot in self.slots):
                self._hand_out()
                busy = [slot.since + self.limit_s for slot in self.slots if slot.pending]
                busy += [
                    slot.started + max(_START_LIMIT_S, self.limit_s) for slot in self.slots if not slot.ready
                ]
                timeout = _POLL_S if not busy else max(0.0, min(min(busy) - time.monotonic(), _POLL_S))
                by_conn = {slot.conn: slot for slot in self.slots}
                for conn in wait(list(by_conn), timeout=timeout):
                    # wait() returns some of the connections it was given; typeshed widens them.
                    self._on_messages(by_conn[cast(Connection, conn)])
                self._stop_overdue()
        finally:
            self.close()

    def close(self) -> None:
        """Ask idle workers to leave; kill any that do not (or that are still busy)."""
        for slot in self.slots:
            try:
                if not slot.pending:
                    slot.conn.send(None)
            except OSError:
                pass
        deadline = time.monotonic() + 5
        for slot in self.slots:
            slot.process.join(timeout=max(0.0, deadline - time.monotonic()))
            self._stop(slot)


def read_all(
    files: Sequence[InputFile],
    ctx: ReaderContext,
    workers: int,
    in_process: bool = False,
    progress: ProgressCallback | None = None,
    chunk_size: int = 1,
) -> list[dict[str, Any]]:
    """Read every file into its row (order of ``files``), in ``workers`` processes or in this one.

    Args:
        files: image candidates.
        ctx: what the reader needs (``ctx.config.file_time_limit_s`` bounds each file in a worker).
        workers: worker processes.
        in_process: read here, sequentially (no crash isolation and no time limit: for header-only reads
            and baselines).
        progress: called with (files done, files total).
        chunk_size: files per task (larger for cheap header-only reads, to amortise inter-process calls).

    Raises:
        RuntimeError: when worker processes cannot start at all (not a file's doing).
    """
    total = len(files)
    rows: dict[str, dict[str, Any]] = {}

    def collect(row: dict[str, Any]) -> None:
        rows[row["file_key"]] = row
        if progress is not None:
            progress(len(rows), total)

    if in_process or total == 0:
        import_decoder_plugins(ctx.config.decoder_plugins)
        store: ObjectStore = open_store(
            ctx.source_uri, endpoint_url=ctx.endpoint_url, max_attempts=ctx.s3_max_attempts
        )
        for file in files:
            collect(read_image(store, file, ctx))
        return [rows[f.key] for f in files]

    chunks = [list(files[i : i + chunk_size]) for i in range(0, total, chunk_size)]
    _Supervisor(ctx, min(workers, len(chunks)), collect, chunk_size).run(chunks)
    return [rows[f.key] for f in files]
