"""Submit or schedule the compiled pipelines on a Kubeflow Pipelines cluster (the cluster deployment)."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from pipelines.compile import cluster_pipelines, compile_pipelines

logger = logging.getLogger(__name__)

PIPELINES = ("training", "inference")
EXPERIMENT = "orthoseg"
SERVICE_ACCOUNT = "orthoseg-pipeline"


def pipeline_arguments(
    name: str,
    source: str,
    batch: str,
    model_ref: str,
    min_dice: float,
    profile: str | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Arguments for a cluster run: settings come from the ConfigMap and Secret, so overrides hold at most
    the training profile (whose values fill what the cluster's configuration leaves unset). ``force``
    (training only) trains whatever the count of new annotated images; without it the run's retrain
    gate decides."""
    if name not in PIPELINES:
        raise ValueError(f"unknown pipeline {name!r}; choose one of {', '.join(PIPELINES)}")
    if force and name != "training":
        raise ValueError("force applies to the training pipeline only (it overrides the retrain gate)")
    if profile is not None:
        from orthoseg.profiles import PROFILES

        if profile not in PROFILES:
            raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    overrides = {"profile": profile} if profile and name == "training" else {}
    arguments: dict[str, Any] = {"source": source, "batch": batch, "settings_overrides": overrides}
    if name == "training":
        arguments["min_dice"] = min_dice
        arguments["force"] = force
    else:
        arguments["model_ref"] = model_ref
    return arguments


def submit_pipeline(host: str, name: str, arguments: dict[str, Any]) -> dict[str, str]:
    """Start one run of a pipeline, sized by ``Settings().pipeline``, on the cluster at ``host``; returns
    its run id."""
    import kfp

    client = kfp.Client(host=host)
    result = client.create_run_from_pipeline_func(
        cluster_pipelines()[name],
        arguments=arguments,
        experiment_name=EXPERIMENT,
        service_account=SERVICE_ACCOUNT,
    )
    logger.info("Submitted %s pipeline run %s", name, result.run_id)
    return {"pipeline": name, "run_id": str(result.run_id), "host": host}


def schedule_pipeline(host: str, name: str, cron: str, arguments: dict[str, Any]) -> dict[str, str]:
    """Create a recurring run (KFP cron syntax, six fields with seconds) of a compiled pipeline."""
    import kfp

    client = kfp.Client(host=host)
    experiment = client.create_experiment(EXPERIMENT)
    with tempfile.TemporaryDirectory() as folder:
        package = compile_pipelines(Path(folder))[name]
        job = client.create_recurring_run(
            experiment_id=experiment.experiment_id,
            job_name=f"orthoseg-{name}",
            cron_expression=cron,
            params=arguments,
            pipeline_package_path=package,
            service_account=SERVICE_ACCOUNT,
            no_catchup=True,
        )
    return {"pipeline": name, "recurring_run_id": str(job.recurring_run_id), "cron": cron, "host": host}
