"""Terminal output for the CLI: logging set-up, progress bars, tables, and clean ``--json`` output."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from orthoseg.progress import ProgressCallback

# Everything human-facing goes to stderr, so stdout carries only what a command is asked to print.
err_console = Console(stderr=True)


def configure_logging(verbose: bool = False) -> None:
    """Log to stderr through rich; quiet the chattiest third-party loggers unless verbose."""
    level = logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(
        level=level,
        format="%(message)s",
        handlers=[RichHandler(console=err_console, show_path=False, rich_tracebacks=True)],
        force=True,
    )
    if not verbose:
        for name in ("ray", "mlflow", "alembic", "great_expectations", "urllib3", "botocore", "kfp", "root"):
            logging.getLogger(name).setLevel(logging.WARNING)


@contextlib.contextmanager
def progress_bar(description: str, enabled: bool = True) -> Iterator[ProgressCallback]:
    """A rich progress bar on stderr; yields a ``(done, total)`` callback for library functions."""
    if not enabled:
        yield lambda done, total: None
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err_console, transient=False) as progress:
        task = progress.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        yield update


@contextlib.contextmanager
def _descriptors_to(target: int, descriptors: tuple[int, ...]) -> Iterator[None]:
    """Point the file descriptors ``descriptors`` at ``target`` while work runs (child processes too)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(fd) for fd in descriptors]
    try:
        for fd in descriptors:
            os.dup2(target, fd)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, copy in zip(descriptors, saved, strict=True):
            os.dup2(copy, fd)
            os.close(copy)


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send everything written to fd 1 (Python prints and child processes alike) to stderr.

    ``--json`` promises one JSON object on stdout and nothing else there; Ray, KFP's local runner
    and other libraries print freely, so the file descriptor itself is redirected while work runs.
    """
    with _descriptors_to(2, (1,)), contextlib.redirect_stdout(sys.stderr):
        yield


def print_json(payload: dict[str, Any]) -> None:
    """Write exactly one JSON object (and a newline) to stdout."""
    sys.stdout.write(json.dumps(payload, default=str, sort_keys=True) + "\n")
    sys.stdout.flush()


def log_file_path(work_dir: str, command: str) -> Path:
    """Where a long command's logs go: ``<work_dir>/logs/<command>-<local time>.log``."""
    return Path(work_dir) / "logs" / f"{command}-{datetime.now().strftime('%Y%m%d-%H%M%S')}.log"


@contextlib.contextmanager
def output_to_file(path: Path) -> Iterator[Console]:
    """Send everything written to fds 1 and 2 to ``path`` while work runs; yield a console on the terminal.

    KFP's local runner echoes every step's executor output and Ray forwards its workers' logs: hundreds of
    lines a person does not want on screen but needs after a failure. The file descriptors themselves are
    redirected, so Python prints, log records and child processes all land in the file; the yielded
    console writes to the terminal's stderr, for the lines a person reads.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    terminal = os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8", errors="replace")
    # Python-level streams too, wherever sys.stdout and sys.stderr point now (a test's capture, say).
    stream = open(1, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)  # noqa: SIM115
    with terminal, open(path, "ab", buffering=0) as log, _descriptors_to(log.fileno(), (1, 2)):
        try:
            with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
                yield Console(file=terminal)
        finally:
            stream.flush()


@contextlib.contextmanager
def stage_line(console: Console | None, label: str) -> Iterator[None]:
    """One line per stage: a spinner with the elapsed time while it runs (on a terminal), then the label with
    how long it took. A marker goes to stderr too (the log file, under ``output_to_file``), so the log shows
    where each stage starts. No-op without a console."""
    if console is None:
        yield
        return
    print(f"===== {label}", file=sys.stderr, flush=True)
    started = time.perf_counter()
    with console.status(label):
        yield
    seconds = time.perf_counter() - started
    took = f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"
    console.print(f"[green]✓[/] {label} [dim]({took})[/]", soft_wrap=True)
