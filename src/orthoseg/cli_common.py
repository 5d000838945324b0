"""What every ``orthoseg`` subcommand shares: the Typer apps, common options and output helpers."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from enum import Enum
from typing import Annotated, Any

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from orthoseg.console import (
    ProgressCallback,
    configure_logging,
    err_console,
    log_file_path,
    output_to_file,
    print_json,
    progress_bar,
    stdout_to_stderr,
)
from orthoseg.settings import Settings

app = typer.Typer(
    name="orthoseg",
    help="Segment and measure post-operative knee radiographs: validate, train, register, promote, infer.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
pipeline_app = typer.Typer(help="Run or compile the Kubeflow pipelines.", no_args_is_help=True)
app.add_typer(pipeline_app, name="pipeline")
registry_app = typer.Typer(help="Read the model registry's promotion audit trail.", no_args_is_help=True)
app.add_typer(registry_app, name="registry")
rayjob_app = typer.Typer(
    help="Run an orthoseg command on Kubernetes as a KubeRay RayJob.", no_args_is_help=True
)
app.add_typer(rayjob_app, name="rayjob")

JsonOption = Annotated[bool, typer.Option("--json", help="Print exactly one JSON object on stdout.")]


class Purpose(str, Enum):
    training = "training"
    inference = "inference"


class PipelineName(str, Enum):
    training = "training"
    inference = "inference"


@app.callback()
def main_callback(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    configure_logging(verbose)


@contextlib.contextmanager
def running(as_json: bool, description: str | None = None) -> Iterator[ProgressCallback]:
    """Keep stdout clean under --json and show a progress bar (on stderr) while work runs."""
    redirect = stdout_to_stderr() if as_json else contextlib.nullcontext()
    with redirect, progress_bar(description or "", enabled=description is not None) as progress:
        yield progress


@contextlib.contextmanager
def logged(command: str, settings: Settings) -> Iterator[Console | None]:
    """Run a long command with its libraries' output in a log file (printed path) and a console for the
    lines a person reads; with ``-v`` everything stays live and the console is stderr's."""
    if logging.getLogger().isEnabledFor(logging.DEBUG):
        yield err_console
        return
    path = log_file_path(settings.work_dir, command)
    err_console.print(f"Logs of every stage: {path} (-v shows them here)", soft_wrap=True, highlight=False)
    try:
        with output_to_file(path) as console:
            yield console
    except BaseException:
        err_console.print(f"[bold red]{command} failed[/]; its log: {path}", soft_wrap=True, highlight=False)
        raise


def emit(result: BaseModel | dict[str, Any], title: str, as_json: bool) -> None:
    payload = result.model_dump(mode="json") if isinstance(result, BaseModel) else result
    if as_json:
        print_json(payload)
        return
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value")
    for key, value in payload.items():
        if isinstance(value, dict) and value and all(not isinstance(v, dict | list) for v in value.values()):
            value = ", ".join(f"{k}={fmt(v)}" for k, v in value.items())
        table.add_row(key, fmt(value))
    Console().print(table)


def fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def run_and_emit(
    as_json: bool, title: str, work: Callable[[ProgressCallback], BaseModel | dict[str, Any]], bar: str | None
) -> None:
    with running(as_json, bar) as progress:
        result = work(progress)
    emit(result, title, as_json)


ProfileOption = Annotated[
    str | None,
    typer.Option(
        help="Training profile: demo (~5 min on 2 CPU cores), standard (about an hour), full (GPU nodes). "
        "Default: ORTHOSEG_PROFILE, else standard. Settings given explicitly win over the profile."
    ),
]


def training_settings(profile: str | None) -> Settings:
    """Settings with a training profile: the option, else ``ORTHOSEG_PROFILE``, else ``standard``."""
    settings = Settings(profile=profile) if profile else Settings()
    return settings if settings.profile else Settings(profile="standard")
