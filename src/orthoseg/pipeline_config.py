"""Cluster resources and failure handling of each Kubeflow Pipelines step (``Settings.pipeline``).

Only a cluster compilation uses them (``pipelines.definitions``); ``kfp.local`` runs the same graphs
without them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Kubernetes quantities, as Kubeflow Pipelines accepts them (PipelineTask.set_cpu_* / set_memory_*).
CPU_QUANTITY = r"^([0-9]*[.])?[0-9]+m?$"
MEMORY_QUANTITY = r"^[0-9]+(E|Ei|P|Pi|T|Ti|G|Gi|M|Mi|K|Ki)?$"
_MEMORY_UNITS = {
    "": 1,
    **{unit: 1000**power for power, unit in enumerate(("K", "M", "G", "T", "P", "E"), start=1)},
    **{unit: 1024**power for power, unit in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"), start=1)},
}


def cpu_cores(quantity: str) -> float:
    """A CPU quantity (``"2"``, ``"0.5"``, ``"500m"``) in cores."""
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def memory_bytes(quantity: str) -> int:
    """A memory quantity (``"512Mi"``, ``"4Gi"``, ``"1G"``) in bytes."""
    match = re.fullmatch(r"([0-9]+)([A-Za-z]*)", quantity)
    if match is None or match.group(2) not in _MEMORY_UNITS:
        raise ValueError(f"not a memory quantity: {quantity!r}")
    return int(match.group(1)) * _MEMORY_UNITS[match.group(2)]


class StepResources(BaseModel):
    """What one Kubeflow Pipelines step's pod asks of the cluster, and how its failures are handled.

    Only a cluster run uses these; ``kfp.local`` runs the steps on this machine without them.

    Attributes:
        cpu_request: CPUs the scheduler reserves for the pod (Kubernetes quantity: ``"1"``, ``"500m"``).
        cpu_limit: CPUs past which the container is throttled.
        memory_request: memory reserved for the pod (``"2Gi"``, ``"512Mi"``).
        memory_limit: memory past which the container is killed (OOMKilled).
        gpus: accelerators of ``PipelineConfig.gpu_accelerator_type`` for the pod; 0: none. Useful only
            where the step runs the network in its own pod (evaluation, promotion); training and
            inference hand their GPU work to the Ray cluster at ``ORTHOSEG_RAY_ADDRESS``.
        retries: re-runs after a failed attempt (0: the first failure fails the run). Worth it only for
            a step whose failures can be transient (store, MLflow, Ray Client connections) and that is
            safe to run again.
        backoff_s: seconds before the first retry.
        backoff_factor: each further retry waits this many times longer than the one before.
        timeout_s: seconds one attempt may run (the pod's ``activeDeadlineSeconds``), so a hung step
            frees its node and fails the run instead of holding both forever; None: no deadline.
        retry_window_s: seconds from the start of the first attempt after which no retry starts (KFP's
            ``backoff_max_duration``, Argo's ``backoff.maxDuration``, which also cuts a retried pod's
            deadline to what remains of it). None: room for every attempt to run for ``timeout_s``,
            plus the waits between them.
    """

    model_config = ConfigDict(extra="forbid")

    cpu_request: str = Field(default="500m", pattern=CPU_QUANTITY)
    cpu_limit: str = Field(default="1", pattern=CPU_QUANTITY)
    memory_request: str = Field(default="1Gi", pattern=MEMORY_QUANTITY)
    memory_limit: str = Field(default="2Gi", pattern=MEMORY_QUANTITY)
    gpus: int = Field(default=0, ge=0, le=16)
    retries: int = Field(default=0, ge=0, le=10)
    backoff_s: int = Field(default=30, ge=0, le=86400)
    backoff_factor: float = Field(default=2.0, ge=1.0, le=10.0)
    timeout_s: int | None = Field(default=3600, ge=1)
    retry_window_s: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _check_requests_fit_limits(self) -> StepResources:
        # Kubernetes refuses a pod whose request exceeds its limit; say so when the settings load.
        if cpu_cores(self.cpu_request) > cpu_cores(self.cpu_limit):
            raise ValueError(f"cpu_request={self.cpu_request} is larger than cpu_limit={self.cpu_limit}")
        if memory_bytes(self.memory_request) > memory_bytes(self.memory_limit):
            raise ValueError(
                f"memory_request={self.memory_request} is larger than memory_limit={self.memory_limit}"
            )
        if self.retries and self.timeout_s is None and self.retry_window_s is None:
            raise ValueError("retries need timeout_s or retry_window_s to bound the time retrying may take")
        return self

    def retry_window(self) -> int:
        """Seconds from the first attempt's start within which retries may start (``retry_window_s``, or
        every attempt's ``timeout_s`` plus the waits between attempts)."""
        if self.retry_window_s is not None:
            return self.retry_window_s
        if self.timeout_s is None:
            raise ValueError("no retry window without timeout_s")
        waits = sum(self.backoff_s * self.backoff_factor**attempt for attempt in range(self.retries))
        return (self.retries + 1) * self.timeout_s + round(waits)


class Toleration(BaseModel):
    """A Kubernetes toleration every pipeline step's pod carries (to run on tainted, e.g. dedicated, nodes).

    Attributes:
        key: taint key; None with ``operator="Exists"`` tolerates every taint.
        operator: ``Equal`` (the taint's value must be ``value``) or ``Exists`` (any value).
        value: the taint value for ``Equal``.
        effect: the taint effect tolerated; None: all effects.
    """

    model_config = ConfigDict(extra="forbid")

    key: str | None = None
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None


# Pod sizes the steps choose from (Kubernetes quantities: requests, then the limits twice as large).
_TINY = {"cpu_request": "100m", "cpu_limit": "500m", "memory_request": "256Mi", "memory_limit": "512Mi"}
_SMALL = {"cpu_request": "500m", "cpu_limit": "1", "memory_request": "1Gi", "memory_limit": "2Gi"}
_MEDIUM = {"cpu_request": "1", "cpu_limit": "2", "memory_request": "2Gi", "memory_limit": "4Gi"}
_LARGE = {"cpu_request": "2", "cpu_limit": "4", "memory_request": "4Gi", "memory_limit": "8Gi"}

# Each step's defaults; a partial override (one ORTHOSEG_PIPELINE__<STEP>__<FIELD>) keeps the others.
# Timeouts are generous upper bounds per attempt, not estimates.
STEP_DEFAULTS: dict[str, dict[str, Any]] = {
    # Reads the batch and writes the dataset version, in validation.workers reader processes and the
    # parent. Retried: store errors can be transient, and a re-run rewrites nothing that is right
    # already (the dataset version is a content hash; copies skip identical bytes).
    "validation": {**_MEDIUM, "retries": 2, "timeout_s": 4 * 3600},
    # Reads the registry, the store and the champion's model. Retried: it only reads.
    "retrain_gate": {**_SMALL, "retries": 2, "timeout_s": 1800},
    # Logs one line. Not retried: without I/O a failure would only repeat.
    "retrain_skipped": {**_TINY, "retries": 0, "timeout_s": 600},
    # The Ray Train driver: the canvas cache and the training run on the Ray cluster, so the pod needs
    # no GPU; it talks to MLflow and holds the Ray Client connection. One retry, after 5 minutes: a lost
    # pod or a dropped connection ends the step, and the re-run resumes the same run from its latest
    # checkpoint. Worker failures are retried inside Ray Train (train.max_failures); a failure that
    # gets past them is seldom transient, and each attempt can take hours.
    "training": {**_MEDIUM, "retries": 1, "backoff_s": 300, "timeout_s": 24 * 3600},
    # Runs the network in its own pod over the test split at native resolution (set gpus to use one).
    # Retried: it reads the store and MLflow, and a re-run logs the same metrics and artifacts again.
    "evaluation": {**_LARGE, "retries": 2, "backoff_s": 60, "timeout_s": 4 * 3600},
    # Compares numbers. Not retried: a pure function fails the same way twice.
    "quality_gate": {**_TINY, "retries": 0, "timeout_s": 600},
    # MLflow registry calls and the model card's training data summary. Retried: registering a run
    # again returns its existing version.
    "registration": {**_SMALL, "retries": 2, "timeout_s": 1800},
    # Scores the candidate and the champion on the frozen benchmark set in its own pod (set gpus to use
    # one). Retried: the gate reads before it writes, and re-running it on a version already champion
    # changes and records nothing.
    "promotion": {**_LARGE, "retries": 2, "backoff_s": 60, "timeout_s": 4 * 3600},
    # The Ray Data driver: the actors (and their GPUs) are on the Ray cluster; the pod loads the model
    # once, collects the rows and writes the batch's table and report. Retried: a re-run with the same
    # model resumes (finished images are skipped, stale temporary files removed).
    "inference": {**_MEDIUM, "retries": 2, "backoff_s": 60, "timeout_s": 12 * 3600},
}


def fill_section_defaults(data: Any, defaults: Mapping[str, Mapping[str, Any]]) -> Any:
    """``data`` (a settings section's raw input) with each named part given in part completed from that
    part's own defaults, not the generic ones of its model."""
    if not isinstance(data, dict):
        return data
    merged = dict(data)
    for part, part_defaults in defaults.items():
        given = merged.get(part)
        if isinstance(given, BaseModel):
            given = given.model_dump(exclude_unset=True)
        if isinstance(given, dict):
            merged[part] = {**part_defaults, **given}
    return merged


class PipelineConfig(BaseModel):
    """Cluster resources and failure handling of every Kubeflow Pipelines step, applied when the
    pipelines are compiled for a cluster (``orthoseg pipeline compile``, ``orthoseg schedule``, a cluster
    submission); ``kfp.local`` runs ignore them. E.g. ``ORTHOSEG_PIPELINE__TRAINING__MEMORY_LIMIT=8Gi``,
    ``ORTHOSEG_PIPELINE__EVALUATION__GPUS=1``, ``ORTHOSEG_PIPELINE__NODE_SELECTOR='{"pool": "ml"}'``.

    Attributes:
        validation: ``validate_op`` (both pipelines).
        retrain_gate: ``retrain_gate_op``.
        retrain_skipped: ``retrain_skipped_op``.
        training: ``train_op``.
        evaluation: ``evaluate_op``.
        quality_gate: ``quality_gate_op``.
        registration: ``register_op``.
        promotion: ``promote_op``.
        inference: ``infer_op``.
        node_selector: node labels every step's pod must match (JSON object in the variable).
        tolerations: tolerations of every step's pod (JSON list of objects in the variable).
        gpu_accelerator_type: the Kubernetes resource a step's ``gpus`` count is of.
    """

    model_config = ConfigDict(extra="forbid")

    validation: StepResources = StepResources(**STEP_DEFAULTS["validation"])
    retrain_gate: StepResources = StepResources(**STEP_DEFAULTS["retrain_gate"])
    retrain_skipped: StepResources = StepResources(**STEP_DEFAULTS["retrain_skipped"])
    training: StepResources = StepResources(**STEP_DEFAULTS["training"])
    evaluation: StepResources = StepResources(**STEP_DEFAULTS["evaluation"])
    quality_gate: StepResources = StepResources(**STEP_DEFAULTS["quality_gate"])
    registration: StepResources = StepResources(**STEP_DEFAULTS["registration"])
    promotion: StepResources = StepResources(**STEP_DEFAULTS["promotion"])
    inference: StepResources = StepResources(**STEP_DEFAULTS["inference"])
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    gpu_accelerator_type: str = Field(default="nvidia.com/gpu", min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _fill_step_defaults(cls, data: Any) -> Any:
        """A step given in part keeps that step's defaults for the rest (not the generic ones)."""
        return fill_section_defaults(data, STEP_DEFAULTS)

    def step(self, name: str) -> StepResources:
        """The resources of step ``name`` (a key of ``STEP_DEFAULTS``)."""
        if name not in STEP_DEFAULTS:
            raise KeyError(f"unknown pipeline step {name!r}; known: {', '.join(STEP_DEFAULTS)}")
        resources: StepResources = getattr(self, name)
        return resources
