"""Reading files in parallel worker processes, surviving a worker that dies on a hostile file.

Each worker process gets the ``ReaderContext`` once, opens its own store client and caps its own address
space, so a decoder that crashes or allocates without bound takes down one worker, never the run: the
files it held are retried, then read alone, and a file that kills its reader alone is recorded as such.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import resource
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from orthoseg.progress import ProgressCallback
from orthoseg.storage import ObjectStore, open_store
from orthoseg.validation.inventory import InputFile
from orthoseg.validation.reader import ReaderContext, empty_row, read_image

logger = logging.getLogger(__name__)


CRASH_REASON = "the reader process died on this file (decoder crash or memory limit); the file was read alone"

# Imported once in the fork server, so every worker starts with them loaded (highdicom reads labels).
_PRELOAD = ["orthoseg.validation.reader", "orthoseg.seg_io", "highdicom", "PIL.PngImagePlugin"]
_WORKER: dict[str, Any] = {}


def _limit_memory(limit_bytes: int | None) -> None:
    if limit_bytes is None:
        return
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = limit_bytes if hard == resource.RLIM_INFINITY else min(limit_bytes, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))


def _init_worker(ctx: ReaderContext) -> None:
    # Runs once in each worker process: cap memory, open this process's own store client.
    _limit_memory(ctx.config.worker_memory_limit_bytes)
    os.environ.update(ctx.environment)
    _WORKER["ctx"] = ctx
    _WORKER["store"] = open_store(ctx.source_uri, endpoint_url=ctx.endpoint_url)


def _read_chunk(files: list[InputFile]) -> list[dict[str, Any]]:
    return [read_image(_WORKER["store"], file, _WORKER["ctx"]) for file in files]


def _ping() -> bool:
    return True


def _workers_start(ctx: ReaderContext) -> bool:
    """Whether a worker process can start and run at all (a file is only blamed if this holds)."""
    try:
        with _pool(1, ctx) as pool:
            return bool(pool.submit(_ping).result())
    except BrokenProcessPool:
        return False


def _crashed_row(file: InputFile) -> dict[str, Any]:
    row = empty_row(file.key)
    row.update(is_link=file.is_link, size_bytes=file.size_bytes, readable=False, read_error=CRASH_REASON)
    return row


def _pool(workers: int, ctx: ReaderContext) -> ProcessPoolExecutor:
    # forkserver: workers start from a clean, single-threaded server with the reader preloaded, which is
    # safe next to threads (boto3, Ray, GX) in the parent and cheap for every later pool.
    mp_context = multiprocessing.get_context("forkserver")
    mp_context.set_forkserver_preload(_PRELOAD)
    return ProcessPoolExecutor(
        max_workers=workers, mp_context=mp_context, initializer=_init_worker, initargs=(ctx,)
    )


def _run_round(
    chunks: list[list[InputFile]],
    workers: int,
    ctx: ReaderContext,
    on_rows: Callable[[list[dict[str, Any]]], None],
) -> list[list[InputFile]]:
    """Run chunks in one pool; returns the chunks lost to a broken pool."""
    lost: list[list[InputFile]] = []
    with _pool(workers, ctx) as pool:
        futures: dict[Future[list[dict[str, Any]]], list[InputFile]] = {
            pool.submit(_read_chunk, chunk): chunk for chunk in chunks
        }
        for future in as_completed(futures):
            try:
                on_rows(future.result())
            except BrokenProcessPool:
                lost.append(futures[future])
    return lost


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
        ctx: what the reader needs.
        workers: worker processes.
        in_process: read here, sequentially (no crash isolation: for header-only reads and baselines).
        progress: called with (files done, files total).
        chunk_size: files per task (larger for cheap header-only reads, to amortise inter-process calls).
    """
    total = len(files)
    rows: dict[str, dict[str, Any]] = {}

    def collect(new_rows: list[dict[str, Any]]) -> None:
        for row in new_rows:
            rows[row["file_key"]] = row
        if progress is not None:
            progress(len(rows), total)

    if in_process or total == 0:
        store: ObjectStore = open_store(ctx.source_uri, endpoint_url=ctx.endpoint_url)
        for file in files:
            collect([read_image(store, file, ctx)])
        return [rows[f.key] for f in files]

    chunks = [list(files[i : i + chunk_size]) for i in range(0, total, chunk_size)]
    lost = _run_round(chunks, min(workers, len(chunks)), ctx, collect)
    if lost and not rows and not _workers_start(ctx):
        raise RuntimeError(
            "validation worker processes die on start; when calling validate_batch from a script, put the "
            "call under `if __name__ == '__main__':` (worker processes import the main module)"
        )
    if lost:
        suspects = [file for chunk in lost for file in chunk]
        logger.warning("a reader process died; retrying %d files one per task", len(suspects))
        lost = _run_round([[f] for f in suspects], min(workers, len(suspects)), ctx, collect)
    for chunk in lost:
        # Alone in its own process: a second death is the file's doing.
        if _run_round([chunk], 1, ctx, collect):
            logger.warning("%s kills its reader process; recorded as unreadable", chunk[0].key)
            collect([_crashed_row(chunk[0])])
    return [rows[f.key] for f in files]
