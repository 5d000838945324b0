"""The ``orthoseg`` subcommands for a cluster: Kubeflow pipelines (local or remote), RayJobs, schedules."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from orthoseg.cli_common import (
    JsonOption,
    PipelineName,
    ProfileOption,
    app,
    emit,
    logged,
    pipeline_app,
    rayjob_app,
    run_and_emit,
    running,
    training_settings,
)
from orthoseg.console import print_json, stage_line
from orthoseg.settings import Settings

TrainForceOption = Annotated[
    bool, typer.Option("--force", help="Train whatever the count of new annotated images (training).")
]


@pipeline_app.command("run")
def pipeline_run(
    name: Annotated[PipelineName, typer.Argument(help="training or inference.")],
    source: Annotated[str, typer.Option(help="Batch folder / store URI (training) or images (inference).")],
    batch: Annotated[str, typer.Option(help="Batch name (training pipeline).")] = "incoming",
    model: Annotated[str, typer.Option(help="Model alias for inference.")] = "champion",
    min_dice: Annotated[float, typer.Option(help="Quality floor for promotion (test mean Dice).")] = 0.0,
    force: TrainForceOption = False,
    profile: ProfileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Run a pipeline locally with kfp.local (the same components a cluster runs). The training pipeline
    trains only when enough annotated images arrived since the champion's dataset version
    (ORTHOSEG_PROMOTION__RETRAIN_MIN_NEW_IMAGES) or with --force; its `retrain` line says which and why."""
    from pipelines.runner import run_inference_pipeline, run_training_pipeline

    settings = training_settings(profile) if name is PipelineName.training else Settings()
    title = f"{name.value} pipeline"
    with running(as_json), logged(f"{name.value}-pipeline", settings) as console:
        with stage_line(console, f"{name.value.capitalize()} pipeline (kfp.local)"):
            if name is PipelineName.training:
                result = run_training_pipeline(settings, source, batch, min_dice=min_dice, force=force)
            else:
                result = run_inference_pipeline(settings, source, batch, model)
    emit(result, title, as_json)


@pipeline_app.command("compile")
def pipeline_compile(
    out: Annotated[Path, typer.Option(help="Folder for the compiled YAML.")] = Path("pipelines/compiled"),
    as_json: JsonOption = False,
) -> None:
    """Compile both pipelines to KFP YAML for a Kubeflow cluster."""
    from pipelines.compile import compile_pipelines

    run_and_emit(as_json, "compiled pipelines", lambda progress: compile_pipelines(out), None)


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
    force: TrainForceOption = False,
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
        run_and_emit(
            as_json, "scheduled", lambda progress: schedule_pipeline(host, name.value, cron, arguments), None
        )
    else:
        run_and_emit(
            as_json, "submitted", lambda progress: submit_pipeline(host, name.value, arguments), None
        )


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
        run_and_emit(
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
    with running(as_json):
        report = sync_schedules(settings, host, dry_run=dry_run)
    if as_json:
        print_json(report.model_dump(mode="json"))
    else:
        Console().print(render_schedule_table(report))
