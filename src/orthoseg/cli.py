"""The ``orthoseg`` command line: each subcommand parses arguments and makes one library call."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from orthoseg.console import (
    ProgressCallback,
    configure_logging,
    err_console,
    log_file_path,
    output_to_file,
    print_json,
    progress_bar,
    stage_line,
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
def _running(as_json: bool, description: str | None = None) -> Iterator[ProgressCallback]:
    """Keep stdout clean under --json and show a progress bar (on stderr) while work runs."""
    redirect = stdout_to_stderr() if as_json else contextlib.nullcontext()
    with redirect, progress_bar(description or "", enabled=description is not None) as progress:
        yield progress


@contextlib.contextmanager
def _logged(command: str, settings: Settings) -> Iterator[Console | None]:
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


def _emit(result: BaseModel | dict[str, Any], title: str, as_json: bool) -> None:
    payload = result.model_dump(mode="json") if isinstance(result, BaseModel) else result
    if as_json:
        print_json(payload)
        return
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value")
    for key, value in payload.items():
        if isinstance(value, dict) and value and all(not isinstance(v, dict | list) for v in value.values()):
            value = ", ".join(f"{k}={_fmt(v)}" for k, v in value.items())
        table.add_row(key, _fmt(value))
    Console().print(table)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _run(
    as_json: bool, title: str, work: Callable[[ProgressCallback], BaseModel | dict[str, Any]], bar: str | None
) -> None:
    with _running(as_json, bar) as progress:
        result = work(progress)
    _emit(result, title, as_json)


@app.command()
def synth(
    out: Annotated[str, typer.Option(help="Store URI to write to (folder or s3://bucket/prefix).")] = "",
    count: Annotated[int, typer.Option(help="Number of radiographs.")] = 24,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives byte-identical files.")] = 0,
    batch: Annotated[str, typer.Option(help="Batch name under incoming/.")] = "synth",
    broken: Annotated[int, typer.Option(help="Deliberately broken files to add.")] = 0,
    image_px: Annotated[int | None, typer.Option(help="Nominal image side in pixels.")] = None,
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 2,
    preview: Annotated[str | None, typer.Option(help="Write a contact sheet PNG at this store key.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Generate synthetic knee radiographs with exact ground truth into incoming/<batch>/."""
    from orthoseg.storage import open_store
    from orthoseg.synth import SynthConfig, generate_dataset, write_preview

    settings = Settings()
    store = open_store(out or settings.store, settings.s3_endpoint_url)
    options: dict[str, Any] = {"count": count, "seed": seed, "batch": batch, "broken_count": broken}
    options["workers"] = workers
    if image_px is not None:
        options["image_px"] = image_px
    config = SynthConfig(**options)

    def work(progress: ProgressCallback) -> dict[str, Any]:
        summary = generate_dataset(store, config, progress=progress).model_dump(mode="json")
        if preview:
            summary["preview_url"] = store.url(write_preview(store, config, preview))
        return summary

    _run(as_json, "synthetic radiographs", work, "synthesising")


@app.command()
def validate(
    source: Annotated[str, typer.Argument(help="Folder or store URI/prefix holding the batch.")],
    batch: Annotated[str, typer.Option(help="Batch name (quarantine and report folders).")],
    purpose: Annotated[Purpose, typer.Option(help="training (labels required, no PHI) or inference.")] = (
        Purpose.training
    ),
    as_json: JsonOption = False,
) -> None:
    """Validate a batch with Great Expectations: accept into a dataset version or quarantine with reasons."""
    from orthoseg.validation import validate_batch

    settings = Settings()
    _run(
        as_json,
        f"validation of {batch}",
        lambda progress: validate_batch(settings, source, batch, purpose.value, progress=progress),
        "validating",
    )


ProfileOption = Annotated[
    str | None,
    typer.Option(
        help="Training profile: demo (~5 min on 2 CPU cores), standard (about an hour), full (GPU nodes). "
        "Default: ORTHOSEG_PROFILE, else standard. Settings given explicitly win over the profile."
    ),
]


def _training_settings(profile: str | None) -> Settings:
    """Settings with a training profile: the option, else ``ORTHOSEG_PROFILE``, else ``standard``."""
    settings = Settings(profile=profile) if profile else Settings()
    return settings if settings.profile else Settings(profile="standard")


@app.command()
def train(
    dataset: Annotated[str | None, typer.Option(help="Dataset version (default: the latest).")] = None,
    profile: ProfileOption = None,
    epochs: Annotated[int | None, typer.Option(help="Override the number of epochs.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Train with Ray Train on the dataset version; track everything in MLflow."""
    from orthoseg.training import run_training

    settings = _training_settings(profile)
    if epochs is not None:
        settings = settings.model_copy(update={"train": settings.train.model_copy(update={"epochs": epochs})})
    _run(as_json, "training", lambda progress: run_training(settings, dataset, progress=progress), "epochs")


@app.command()
def retrain(
    source: Annotated[str | None, typer.Option(help="Incoming training batch to validate first.")] = None,
    batch: Annotated[str | None, typer.Option(help="Its batch name (with --source).")] = None,
    profile: ProfileOption = None,
    force: Annotated[bool, typer.Option("--force", help="Train whatever the count.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count and decide, do not train.")] = False,
    from_scratch: Annotated[
        bool,
        typer.Option("--from-scratch", help="Do not start from the champion's weights (no warm start)."),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Train, evaluate, register and promote only when enough annotated images arrived since the
    champion's dataset version (ORTHOSEG_PROMOTION__RETRAIN_MIN_NEW_IMAGES); else say why and exit 0.
    Training starts from the champion's weights when its architecture matches, unless --from-scratch."""
    from orthoseg.retrain import retrain as run_retrain

    if (source is None) != (batch is None):
        raise typer.BadParameter("--source and --batch go together")
    settings = _training_settings(profile)
    batches = [(source, batch)] if source is not None and batch is not None else None
    _run(
        as_json,
        "retraining",
        lambda progress: run_retrain(
            settings, batches, force=force, dry_run=dry_run, from_scratch=from_scratch
        ),
        None,
    )


@app.command()
def evaluate(
    run_id: Annotated[str, typer.Option(help="MLflow run id of the training run.")],
    dataset: Annotated[str | None, typer.Option(help="Dataset version (default: the latest).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Evaluate a trained run on the fixed test split (Dice per structure), logged to the run."""
    from orthoseg.evaluation import evaluate_run

    settings = Settings()
    _run(as_json, "evaluation", lambda progress: evaluate_run(settings, run_id, dataset), None)


@app.command()
def register(
    run_id: Annotated[str, typer.Option(help="MLflow run id of the evaluated training run.")],
    dataset: Annotated[str | None, typer.Option(help="Dataset version the run trained on.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Register the run's model in the MLflow registry, tagged with dataset and code versions."""
    from orthoseg.registry import register_model

    settings = Settings()
    _run(as_json, "registered model", lambda progress: register_model(settings, run_id, dataset), None)


@app.command()
def promote(
    version: Annotated[str, typer.Argument(help="Registered model version to consider.")],
    rollback: Annotated[
        bool, typer.Option("--rollback", help="Make this version champion without the quality gate.")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Promote even if the gate refuses (recorded as forced).")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Judge a version against @champion on the frozen benchmark set (mlflow/promotion.yaml): promote it,
    or mark it @challenger. Every decision is recorded in the registry."""
    from orthoseg import registry

    settings = Settings()
    if rollback:
        _run(as_json, "rollback", lambda progress: registry.rollback(settings, version, via="cli"), None)
    else:
        _run(
            as_json,
            "promotion",
            lambda progress: registry.promote_model(
                settings, version, force=force, via="cli", progress=progress
            ),
            "scoring on the benchmark set",
        )


@app.command("rollback")
def rollback_command(
    version: Annotated[str | None, typer.Option(help="Version to restore (default: @previous).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Restore @previous (or --version N) as @champion without the gate; recorded in the audit trail."""
    from orthoseg.registry import rollback

    settings = Settings()
    _run(as_json, "rollback", lambda progress: rollback(settings, version, via="cli"), None)


@registry_app.command("history")
def registry_history(as_json: JsonOption = False) -> None:
    """Every promotion decision (who, when, both models' benchmark numbers, the policy hash), oldest first."""
    from orthoseg.promotion_audit import decision_history, render_history_table

    settings = Settings()
    with _running(as_json):
        history = decision_history(settings)
    if as_json:
        print_json(history.model_dump(mode="json", exclude_none=True))
    else:
        Console().print(render_history_table(history))


@app.command()
def infer(
    source: Annotated[str, typer.Argument(help="Folder, store URI/prefix, or dataset:<version>.")],
    model: Annotated[str, typer.Option(help="Alias, version number or 'latest'.")] = "champion",
    run_id: Annotated[str | None, typer.Option(help="Output run id (default: derived from inputs).")] = None,
    actors: Annotated[int | None, typer.Option(help="Ray actors, one model copy each.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Films per batch.")] = None,
    cpus_per_actor: Annotated[float | None, typer.Option(help="CPUs per actor (torch threads).")] = None,
    gpus_per_actor: Annotated[float | None, typer.Option(help="GPUs per actor (0: CPU).")] = None,
    tta_passes: Annotated[int | None, typer.Option(help="Test-time passes per film (confidence).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Batch inference with Ray Data: DICOM SEG, overlays, measurements and a report per image.

    Options given here win over ORTHOSEG_INFERENCE__* and the defaults."""
    from orthoseg.inference import run_inference
    from orthoseg.inference_config import with_overrides

    settings = Settings()
    config = with_overrides(
        settings.inference,
        concurrency=actors,
        batch_size=batch_size,
        num_cpus_per_actor=cpus_per_actor,
        num_gpus_per_actor=gpus_per_actor,
        tta_passes=tta_passes,
    )
    settings = settings.model_copy(update={"inference": config})
    _run(
        as_json,
        "inference",
        lambda progress: run_inference(settings, source, model, run_id=run_id, progress=progress),
        "inferring",
    )


@pipeline_app.command("run")
def pipeline_run(
    name: Annotated[PipelineName, typer.Argument(help="training or inference.")],
    source: Annotated[str, typer.Option(help="Batch folder / store URI (training) or images (inference).")],
    batch: Annotated[str, typer.Option(help="Batch name (training pipeline).")] = "incoming",
    model: Annotated[str, typer.Option(help="Model alias for inference.")] = "champion",
    min_dice: Annotated[float, typer.Option(help="Quality floor for promotion (test mean Dice).")] = 0.0,
    force: Annotated[
        bool, typer.Option("--force", help="Train whatever the count of new annotated images (training).")
    ] = False,
    profile: ProfileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Run a pipeline locally with kfp.local (the same components a cluster runs). The training pipeline
    trains only when enough annotated images arrived since the champion's dataset version
    (ORTHOSEG_PROMOTION__RETRAIN_MIN_NEW_IMAGES) or with --force; its `retrain` line says which and why."""
    from pipelines.runner import run_inference_pipeline, run_training_pipeline

    settings = _training_settings(profile) if name is PipelineName.training else Settings()
    title = f"{name.value} pipeline"
    with _running(as_json), _logged(f"{name.value}-pipeline", settings) as console:
        with stage_line(console, f"{name.value.capitalize()} pipeline (kfp.local)"):
            if name is PipelineName.training:
                result = run_training_pipeline(settings, source, batch, min_dice=min_dice, force=force)
            else:
                result = run_inference_pipeline(settings, source, batch, model)
    _emit(result, title, as_json)


@pipeline_app.command("compile")
def pipeline_compile(
    out: Annotated[Path, typer.Option(help="Folder for the compiled YAML.")] = Path("pipelines/compiled"),
    as_json: JsonOption = False,
) -> None:
    """Compile both pipelines to KFP YAML for a Kubeflow cluster."""
    from pipelines.compile import compile_pipelines

    _run(as_json, "compiled pipelines", lambda progress: compile_pipelines(out), None)


@pipeline_app.command("submit")
def pipeline_submit(
    name: Annotated[PipelineName, typer.Argument(help="training or inference.")],
    host: Annotated[
        str, typer.Option(help="Kubeflow Pipelines API, e.g. http://ml-pipeline.kubeflow.svc:8888.")
    ],
    source: Annotated[str, typer.Option(help="s3:// prefix of the batch.")],
    batch: Annotated[str, typer.Option(help="Batch name.")],
    model: Annotated[str, typer.Option(help="Model alias for inference.")] = "champion",
    min_dice: Annotated[float, typer.Option(help="Quality floor for promotion.")] = 0.0,
    cron: Annotated[str | None, typer.Option(help="Create a recurring run instead (6-field cron).")] = None,
    profile: Annotated[
        str | None, typer.Option(help="Training profile for the run (default: the cluster's configuration).")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Train whatever the count of new annotated images (training).")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Submit (or, with --cron, schedule) a pipeline on a Kubeflow cluster; settings come from the cluster.
    A training run trains only when its retrain gate finds enough new annotated images, or with --force."""
    from pipelines.remote import pipeline_arguments, schedule_pipeline, submit_pipeline

    try:
        arguments = pipeline_arguments(
            name.value, source, batch, model, min_dice, profile=profile, force=force
        )
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    if cron:
        _run(
            as_json, "scheduled", lambda progress: schedule_pipeline(host, name.value, cron, arguments), None
        )
    else:
        _run(as_json, "submitted", lambda progress: submit_pipeline(host, name.value, arguments), None)


RayJobCommandOption = Annotated[
    str,
    typer.Option(
        "--command",
        help='The orthoseg command the job runs, e.g. "orthoseg train --profile standard --json".',
    ),
]
RayJobNameOption = Annotated[
    str | None, typer.Option(help="The RayJob's name (default: <prefix>-<subcommand>-<UTC time>-<random>).")
]
CpuWorkersOption = Annotated[
    int | None, typer.Option(help="CPU worker pods (default: ORTHOSEG_RAYJOB__CPU_WORKERS__REPLICAS).")
]
GpuWorkersOption = Annotated[
    int | None, typer.Option(help="GPU worker pods (default: ORTHOSEG_RAYJOB__GPU_WORKERS__REPLICAS).")
]
ClusterOption = Annotated[
    str | None,
    typer.Option(help="Run on this existing RayCluster (e.g. orthoseg-ray) instead of a cluster of its own."),
]


def _rayjob_manifest(
    command: str, name: str | None, cpu_workers: int | None, gpu_workers: int | None, cluster: str | None
) -> tuple[Settings, dict[str, Any]]:
    """Settings with the options applied, and the RayJob built from them."""
    from orthoseg.rayjob import build_rayjob
    from orthoseg.rayjob_config import with_overrides

    settings = Settings()
    config = with_overrides(
        settings.rayjob, cpu_workers=cpu_workers, gpu_workers=gpu_workers, existing_cluster=cluster
    )
    settings = settings.model_copy(update={"rayjob": config})
    return settings, build_rayjob(settings, command, name=name)


@rayjob_app.command("render")
def rayjob_render(
    command: RayJobCommandOption,
    name: RayJobNameOption = None,
    cpu_workers: CpuWorkersOption = None,
    gpu_workers: GpuWorkersOption = None,
    cluster: ClusterOption = None,
) -> None:
    """Print the RayJob that runs the command, as YAML for `kubectl apply -f -`. The job gets this shell's
    store (s3:// only) and the ORTHOSEG_* settings given here; the cluster's addresses and secrets come
    from its ConfigMap and Secrets."""
    from orthoseg.rayjob import manifest_yaml

    _, manifest = _rayjob_manifest(command, name, cpu_workers, gpu_workers, cluster)
    typer.echo(manifest_yaml(manifest), nl=False)


@rayjob_app.command("submit")
def rayjob_submit(
    command: RayJobCommandOption,
    name: RayJobNameOption = None,
    cpu_workers: CpuWorkersOption = None,
    gpu_workers: GpuWorkersOption = None,
    cluster: ClusterOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create the RayJob (through the in-cluster service account, else the kubeconfig), stream its driver's
    log to stderr, wait for its end (ORTHOSEG_RAYJOB__ACTIVE_DEADLINE_S) and clean up. A RayJob of that
    name that is running or succeeded is followed instead; one that failed is replaced."""
    from orthoseg.console import err_console
    from orthoseg.rayjob_follow import RayJobFailed, kubernetes_apis, submit_rayjob

    settings, manifest = _rayjob_manifest(command, name, cpu_workers, gpu_workers, cluster)
    custom_api, core_api = kubernetes_apis()
    try:
        _run(
            as_json,
            "rayjob",
            lambda progress: submit_rayjob(custom_api, core_api, manifest, settings.rayjob),
            None,
        )
    except (RayJobFailed, TimeoutError) as error:
        err_console.print("[bold red]error:[/]", escape(str(error)))
        raise typer.Exit(1) from error


@app.command()
def schedule(
    host: Annotated[
        str, typer.Option(help="Kubeflow Pipelines API, e.g. http://ml-pipeline.kubeflow.svc:8888.")
    ],
    retrain_cron: Annotated[str | None, typer.Option(help="6-field cron, seconds first.")] = None,
    infer_cron: Annotated[str | None, typer.Option(help="6-field cron, seconds first.")] = None,
    experiment: Annotated[str | None, typer.Option(help="KFP experiment of the recurring runs.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Read the server, print the plan.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Create or update the recurring runs (retraining, nightly inference; max_concurrency 1), idempotently.
    Defaults: ORTHOSEG_SCHEDULE__* (weekly '0 0 2 * * 0', nightly '0 0 1 * * *')."""
    from orthoseg.schedule import render_schedule_table, sync_schedules, with_overrides

    settings = with_overrides(
        Settings(), retrain_cron=retrain_cron, infer_cron=infer_cron, experiment=experiment
    )
    with _running(as_json):
        report = sync_schedules(settings, host, dry_run=dry_run)
    if as_json:
        print_json(report.model_dump(mode="json"))
    else:
        Console().print(render_schedule_table(report))


@app.command()
def demo(
    profile: Annotated[
        str, typer.Option(help="Data set size: 'small' (default) or 'tiny' (tests).")
    ] = "small",
    as_json: JsonOption = False,
) -> None:
    """Synthesise data, run the training pipeline then the inference pipeline, and summarise.

    One line per stage; the pipelines' own output (executor logs, Ray, MLflow) goes to a log file under
    ``<work_dir>/logs/`` whose path is printed; ``-v`` shows it live instead."""
    from orthoseg.demo import render_demo_table, run_demo

    settings = Settings()
    with _running(as_json), _logged("demo", settings) as console:
        result = run_demo(settings, profile, console)
    if as_json:
        print_json(result.model_dump(mode="json"))
    else:
        Console().print(render_demo_table(result))


def main() -> None:
    """Console-script entry point: expected failures print one line a person can act on (exit 2)."""
    import sys

    from orthoseg.console import err_console
    from orthoseg.registry import RegistryError
    from orthoseg.storage import StoreError

    try:
        app()
    # What a person can act on (a missing object or model, a bad setting or file); anything else is a bug
    # and keeps its traceback (a KeyError is a LookupError too, so only the registry's is caught).
    except (StoreError, ValueError, RegistryError, FileNotFoundError, PermissionError) as error:
        if logging.getLogger().isEnabledFor(logging.DEBUG):
            raise
        err_console.print(f"[bold red]error:[/] {error}")
        sys.exit(2)


if __name__ == "__main__":
    main()
