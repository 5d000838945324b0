"""Terminal output for the CLI: logging set-up, progress bars, tables, and clean ``--json`` output."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator
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
def stdout_to_stderr() -> Iterator[None]:
    """Send everything written to fd 1 (Python prints and child processes alike) to stderr.

    ``--json`` promises one JSON object on stdout and nothing else there; Ray, KFP's local runner
    and other libraries print freely, so the file descriptor itself is redirected while work runs.
    """
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def print_json(payload: dict[str, Any]) -> None:
    """Write exactly one JSON object (and a newline) to stdout."""
    sys.stdout.write(json.dumps(payload, default=str, sort_keys=True) + "\n")
    sys.stdout.flush()
