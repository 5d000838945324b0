"""The training and inference pipeline steps, run where their Ray work belongs.

Locally, and on a cluster by default, a step joins Ray itself (a local cluster, or ``Settings.ray_address``).
With ``Settings.rayjob.pipeline_steps`` a step on a cluster instead submits the same ``orthoseg`` command as
a KubeRay RayJob with every setting pinned (``orthoseg.rayjob``), follows it to its end, and then reads
the result the job left in MLflow and the store: training returns the finished run of the same name, and
inference finds every image done and only writes the run's table and report. The job's name is derived
from ``job_key`` (the pipeline run), so a retried step follows or replaces its own job instead of starting
the work twice.

Nothing here can be exercised without a cluster running KubeRay: the manifests are validated against
KubeRay's schema in the tests, and the following loop against a fake API (``orthoseg.rayjob_follow``).
"""

from __future__ import annotations

import hashlib
import logging
from typing import TYPE_CHECKING

from orthoseg.rayjob import MAX_NAME_LENGTH, build_rayjob, check_job_name

if TYPE_CHECKING:
    from orthoseg.inference import InferenceSummary
    from orthoseg.settings import Settings
    from orthoseg.training import TrainingResult

logger = logging.getLogger(__name__)


def step_job_name(prefix: str, step: str, job_key: str) -> str:
    """A RayJob name that is the same for every attempt of one step of one pipeline run.

    Args:
        prefix: ``RayJobConfig.name_prefix``.
        step: ``train`` or ``infer``.
        job_key: what identifies the work (the pipeline run id, or the inputs).
    """
    digest = hashlib.sha256(job_key.encode()).hexdigest()
    name = f"{prefix}-{step}-{digest}"[:MAX_NAME_LENGTH].rstrip("-")
    check_job_name(name)
    return name


def _run_job(settings: Settings, command: list[str], name: str) -> None:
    from orthoseg.rayjob_follow import kubernetes_apis, submit_rayjob

    manifest = build_rayjob(settings, command, name=name, pin_settings=True)
    custom_api, core_api = kubernetes_apis()
    outcome = submit_rayjob(custom_api, core_api, manifest, settings.rayjob)
    logger.info(
        "RayJob %s/%s ended %s in %.0f s",
        outcome.namespace,
        outcome.name,
        outcome.job_status,
        outcome.seconds,
    )


def train_step(settings: Settings, dataset_version: str | None, job_key: str = "") -> TrainingResult:
    """Train on ``dataset_version`` (None: the newest), here or as a RayJob (``rayjob.pipeline_steps``).

    Raises:
        orthoseg.rayjob_follow.RayJobFailed: when the job fails (KubeRay's reason and message).
        TimeoutError: when the job outlives its deadlines.
    """
    from orthoseg.dataset import resolve_dataset_version
    from orthoseg.training import run_training

    if not settings.rayjob.pipeline_steps:
        return run_training(settings, dataset_version)
    version = resolve_dataset_version(settings, dataset_version)
    command = ["orthoseg", "train", "--dataset", version, "--json"]
    if settings.profile:
        command += ["--profile", settings.profile]
    name = step_job_name(settings.rayjob.name_prefix, "train", job_key or f"{version}|{command}")
    _run_job(settings, command, name)
    return run_training(settings, version)  # the job's finished run, returned without training


def infer_step(settings: Settings, source: str, model_ref: str, job_key: str = "") -> InferenceSummary:
    """Infer ``source`` with the model ``model_ref``, here or as a RayJob (``rayjob.pipeline_steps``).

    The model reference is resolved to a version before the job starts, so the job and this step read
    and write the same run even when the champion changes meanwhile.

    Raises:
        orthoseg.rayjob_follow.RayJobFailed: when the job fails (KubeRay's reason and message).
        TimeoutError: when the job outlives its deadlines.
    """
    from orthoseg.inference import run_inference
    from orthoseg.registry import resolve_model

    if not settings.rayjob.pipeline_steps:
        return run_inference(settings, source, model_ref)
    version, _ = resolve_model(settings, model_ref)
    run_key = hashlib.sha256(f"{source}|{version}|{job_key}".encode()).hexdigest()[:16]
    command = ["orthoseg", "infer", source, "--model", version, "--run-id", run_key, "--json"]
    _run_job(settings, command, step_job_name(settings.rayjob.name_prefix, "infer", run_key))
    return run_inference(settings, source, version, run_id=run_key)  # every image done: table and report
