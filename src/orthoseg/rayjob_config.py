"""How ``orthoseg rayjob`` runs one command as a KubeRay RayJob (``Settings.rayjob``, ``ORTHOSEG_RAYJOB__*``).

The shape of the job's own Ray cluster (or the existing RayCluster it runs on), its deadlines and clean-up,
and how the submitting process follows it. ``orthoseg.rayjob`` builds the manifest from these;
``orthoseg.rayjob_follow`` submits and follows it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from orthoseg.pipeline_config import (
    CPU_QUANTITY,
    MEMORY_QUANTITY,
    Toleration,
    fill_section_defaults,
    memory_bytes,
)

# Kubernetes and KubeRay keep these as int32.
INT32_MAX = 2**31 - 1


class RayPodSize(BaseModel):
    """CPU and memory of one Ray pod.

    Attributes:
        cpus: CPUs requested for the pod (Kubernetes quantity: ``"4"``, ``"500m"``); KubeRay also tells
            Ray the pod has this many CPUs. No CPU limit is set, as on ``infra/base/raycluster.yaml``.
        memory: memory requested for the pod and its limit (``"16Gi"``); past it the pod is OOMKilled.
    """

    model_config = ConfigDict(extra="forbid")

    cpus: str = Field(pattern=CPU_QUANTITY)
    memory: str = Field(pattern=MEMORY_QUANTITY)


class RayWorkerGroup(RayPodSize):
    """One worker group of the job's Ray cluster: a fixed number of identical pods (no autoscaling: the
    job asks for what it needs, and the cluster goes when the job ends).

    Attributes:
        replicas: worker pods; 0 leaves the group out of the cluster.
        gpus: accelerators per pod (of ``RayJobConfig.gpu_resource``), as its limit and request.
        shared_memory: size of the pod's ``/dev/shm`` (a memory-backed emptyDir: data loader workers and
            NCCL use it; it counts towards ``memory``).
    """

    replicas: int = Field(ge=0, le=256)
    gpus: int = Field(default=0, ge=0, le=16)
    shared_memory: str = Field(default="4Gi", pattern=MEMORY_QUANTITY)

    @model_validator(mode="after")
    def _shared_memory_fits(self) -> RayWorkerGroup:
        if memory_bytes(self.shared_memory) > memory_bytes(self.memory):
            raise ValueError(f"shared_memory={self.shared_memory} is larger than memory={self.memory}")
        return self


# Each pod's defaults (those of infra/base/raycluster.yaml); a partial override
# (one ORTHOSEG_RAYJOB__<POD>__<FIELD>) keeps the others.
POD_DEFAULTS: dict[str, dict[str, Any]] = {
    "head": {"cpus": "2", "memory": "8Gi"},
    "cpu_workers": {"replicas": 2, "cpus": "4", "memory": "16Gi", "shared_memory": "4Gi"},
    "gpu_workers": {"replicas": 0, "cpus": "8", "memory": "48Gi", "gpus": 1, "shared_memory": "16Gi"},
}


class RayJobConfig(BaseModel):
    """How ``orthoseg rayjob render`` / ``submit`` run one orthoseg command as a KubeRay RayJob, e.g.
    ``ORTHOSEG_RAYJOB__GPU_WORKERS__REPLICAS=2``, ``ORTHOSEG_RAYJOB__EXISTING_CLUSTER=orthoseg-ray``.

    The job's Ray processes get the cluster's addresses from ConfigMap ``orthoseg-config`` and its Secrets,
    like the pods of ``infra/base/raycluster.yaml``; the store and every other setting come from the
    submitting process's ``Settings`` (``orthoseg.rayjob.settings_environment``).

    Attributes:
        pipeline_steps: the training and inference steps of the Kubeflow pipelines run their Ray work as a
            RayJob each (``orthoseg.rayjob_steps``) instead of joining ``Settings.ray_address`` with Ray
            Client from the step's pod.
        namespace: Kubernetes namespace of the RayJob (where ``infra/`` deploys orthoseg).
        name_prefix: start of generated job names (``<prefix>-<command>-<UTC time>-<random>``).
        image: the project image of the head, the CPU workers and the submitter pod.
        gpu_image: the image of the GPU workers (the CUDA build, ``-gpu``).
        ray_version: Ray version in the images (KubeRay's ``rayVersion``).
        existing_cluster: name of a running RayCluster (e.g. ``orthoseg-ray``) to run the job on, through
            KubeRay's ``clusterSelector``; None: the job brings up its own cluster (``head``,
            ``cpu_workers``, ``gpu_workers``) and KubeRay removes it after the job.
        head: the head pod. Tasks never run there (Ray CPUs 0); the job's driver (the command) does.
        cpu_workers: the CPU worker group (Ray Data preprocessing, CPU training and inference).
        gpu_workers: the GPU worker group; only with ``replicas`` > 0 does the cluster have GPUs.
        gpu_resource: the Kubernetes resource a worker's ``gpus`` count is of.
        node_selector: node labels every pod of the job must match.
        tolerations: tolerations of every pod of the job (GPU workers also tolerate ``gpu_resource``
            taints).
        active_deadline_s: seconds one attempt may run, from its start, before KubeRay stops it and marks
            the job failed (``activeDeadlineSeconds``).
        backoff_limit: attempts after a failed one, each on a new cluster (``backoffLimit``); training and
            inference resume from what the store holds. Own cluster only: KubeRay refuses retries on an
            existing cluster, so they are left out there.
        ttl_after_finished_s: seconds a finished job's own cluster is kept (dashboard, logs) before KubeRay
            deletes it (``ttlSecondsAfterFinished``).
        poll_interval_s: seconds between two reads of the job's status while following it.
        status_grace_s: seconds past the last attempt's deadline that the follower still waits for
            KubeRay to report the end, before giving up; also how long it waits for KubeRay to remove a
            failed job of the same name that it replaces.
        delete_finished: whether ``orthoseg rayjob submit`` deletes the RayJob object when it ends:
            ``on_success`` keeps a failed one (its status and, until the TTL, its cluster) to look at,
            ``always`` and ``never`` do what they say. A kept job's cluster still goes after the TTL.
    """

    model_config = ConfigDict(extra="forbid")

    pipeline_steps: bool = False
    namespace: str = Field(default="orthoseg", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)
    name_prefix: str = Field(default="orthoseg", pattern=r"^[a-z]([-a-z0-9]*[a-z0-9])?$", max_length=16)
    image: str = Field(default="ghcr.io/orthoseg/orthoseg:0.1.0", min_length=1)
    gpu_image: str = Field(default="ghcr.io/orthoseg/orthoseg:0.1.0-gpu", min_length=1)
    ray_version: str = Field(default="2.60.0", min_length=1)
    existing_cluster: str | None = Field(default=None, pattern=r"^[a-z]([-a-z0-9]*[a-z0-9])?$", max_length=63)
    head: RayPodSize = RayPodSize(**POD_DEFAULTS["head"])
    cpu_workers: RayWorkerGroup = RayWorkerGroup(**POD_DEFAULTS["cpu_workers"])
    gpu_workers: RayWorkerGroup = RayWorkerGroup(**POD_DEFAULTS["gpu_workers"])
    gpu_resource: str = Field(default="nvidia.com/gpu", min_length=1)
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    active_deadline_s: int = Field(default=24 * 3600, ge=1, le=INT32_MAX)
    backoff_limit: int = Field(default=1, ge=0, le=10)
    ttl_after_finished_s: int = Field(default=600, ge=0, le=INT32_MAX)
    poll_interval_s: float = Field(default=15.0, gt=0, le=600)
    status_grace_s: int = Field(default=600, ge=0, le=86400)
    delete_finished: Literal["always", "on_success", "never"] = "on_success"

    @model_validator(mode="before")
    @classmethod
    def _fill_pod_defaults(cls, data: Any) -> Any:
        """A pod given in part keeps that pod's defaults for the rest."""
        return fill_section_defaults(data, POD_DEFAULTS)

    @model_validator(mode="after")
    def _check_worker_groups(self) -> RayJobConfig:
        if self.cpu_workers.gpus:
            raise ValueError("cpu_workers.gpus must be 0: GPU pods belong in gpu_workers")
        if self.gpu_workers.replicas and not self.gpu_workers.gpus:
            raise ValueError("gpu_workers.gpus must be at least 1 when gpu_workers.replicas > 0")
        if self.existing_cluster is None and not (self.cpu_workers.replicas or self.gpu_workers.replicas):
            # The head runs no tasks: a cluster without workers would wait for resources until the deadline.
            raise ValueError(
                "the job's cluster needs workers: set cpu_workers.replicas or gpu_workers.replicas"
            )
        return self

    def follow_timeout_s(self) -> int:
        """Seconds to follow the job before giving up: every attempt's deadline, plus the grace."""
        attempts = 1 if self.existing_cluster else self.backoff_limit + 1
        return attempts * self.active_deadline_s + self.status_grace_s


def with_overrides(
    config: RayJobConfig,
    cpu_workers: int | None = None,
    gpu_workers: int | None = None,
    existing_cluster: str | None = None,
) -> RayJobConfig:
    """``config`` with the worker counts and the existing cluster given (not None) replaced, validated
    again (the CLI's options).

    Raises:
        pydantic.ValidationError: when a value is out of range (a ``ValueError``: the CLI prints it).
    """
    data = config.model_dump()
    for group, replicas in (("cpu_workers", cpu_workers), ("gpu_workers", gpu_workers)):
        if replicas is not None:
            data[group] = {**data[group], "replicas": replicas}
    if existing_cluster is not None:
        data["existing_cluster"] = existing_cluster
    return RayJobConfig.model_validate(data)
