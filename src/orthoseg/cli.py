"""The ``orthoseg`` command line: each subcommand parses arguments and makes one library call.

The cluster subcommands (``pipeline``, ``rayjob``, ``schedule``) live in ``orthoseg.cli_cluster``; what
all share (the apps, options, output helpers) in ``orthoseg.cli_common``.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

import typer
from rich.console import Console

from orthoseg.cli_common import (
    JsonOption,
    ProfileOption,
    Purpose,
    app,
    logged,
    registry_app,
    run_and_emit,
    running,
    training_settings,
)
from orthoseg.console import ProgressCallback, print_json
from orthoseg.settings import Settings


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

    run_and_emit(as_json, "synthetic radiographs", work, "synthesising")


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
    run_and_emit(
        as_json,
        f"validation of {batch}",
        lambda progress: validate_batch(settings, source, batch, purpose.value, progress=progress),
        "validating",
    )


@app.command()
def train(
    dataset: Annotated[str | None, typer.Option(help="Dataset version (default: the latest).")] = None,
    profile: ProfileOption = None,
    epochs: Annotated[int | None, typer.Option(help="Override the number of epochs.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Train with Ray Train on the dataset version; track everything in MLflow."""
    from orthoseg.training import run_training

    settings = training_settings(profile)
    if epochs is not None:
        settings = settings.model_copy(update={"train": settings.train.model_copy(update={"epochs": epochs})})
    run_and_emit(
        as_json, "training", lambda progress: run_training(settings, dataset, progress=progress), "epochs"
    )


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
    settings = training_settings(profile)
    batches = [(source, batch)] if source is not None and batch is not None else None
    run_and_emit(
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
    run_and_emit(as_json, "evaluation", lambda progress: evaluate_run(settings, run_id, dataset), None)


@app.command()
def register(
    run_id: Annotated[str, typer.Option(help="MLflow run id of the evaluated training run.")],
    dataset: Annotated[str | None, typer.Option(help="Dataset version the run trained on.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Register the run's model in the MLflow registry, tagged with dataset and code versions."""
    from orthoseg.registry import register_model

    settings = Settings()
    run_and_emit(
        as_json, "registered model", lambda progress: register_model(settings, run_id, dataset), None
    )


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
        run_and_emit(
            as_json, "rollback", lambda progress: registry.rollback(settings, version, via="cli"), None
        )
    else:
        run_and_emit(
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
    run_and_emit(as_json, "rollback", lambda progress: rollback(settings, version, via="cli"), None)


@registry_app.command("history")
def registry_history(as_json: JsonOption = False) -> None:
    """Every promotion decision (who, when, both models' benchmark numbers, the policy hash), oldest first."""
    from orthoseg.promotion_audit import decision_history, render_history_table

    settings = Settings()
    with running(as_json):
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
    run_and_emit(
        as_json,
        "inference",
        lambda progress: run_inference(settings, source, model, run_id=run_id, progress=progress),
        "inferring",
    )


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
    with running(as_json), logged("demo", settings) as console:
        result = run_demo(settings, profile, console)
    if as_json:
        print_json(result.model_dump(mode="json"))
    else:
        Console().print(render_demo_table(result))


# The cluster subcommands register themselves on the apps; imported here so that `--help` lists them
# after the local ones.
import orthoseg.cli_cluster  # noqa: E402, F401


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
