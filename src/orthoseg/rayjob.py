"""The KubeRay ``RayJob`` (``ray.io/v1``) that runs one orthoseg command on Kubernetes.

Instead of a Ray Client connection from a long-lived process to a long-lived RayCluster, a RayJob brings
up a Ray cluster for one command (or runs it on an existing RayCluster), runs the command as the Ray job's
driver on the head, and lets KubeRay stop and remove everything when it ends or passes its deadline.

What the job's processes know comes from two places, kept apart on purpose:

- where the cluster's services are (S3 endpoint, MLflow) and the secrets (S3 credentials, pseudonym
  salt): the pods' environment, from ConfigMap ``orthoseg-config`` and Secrets ``orthoseg-s3`` and
  ``orthoseg-pseudonym``, as ``infra/base/raycluster.yaml``'s pods get them;
- what the job does: the Ray job's runtime environment, with the submitting process's store (which must
  be ``s3://``: Ray Train keeps its checkpoints under it, ``orthoseg.training.run.checkpoint_storage``,
  and every pod must reach them) and every other setting it was given (``settings_environment``).

``orthoseg.rayjob_follow`` submits the manifest and follows the job.
"""

from __future__ import annotations

import copy
import json
import re
import secrets
import shlex
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

import yaml

from orthoseg.rayjob_config import RayJobConfig, RayPodSize, RayWorkerGroup
from orthoseg.settings import Settings

RAYJOB_GROUP = "ray.io"
RAYJOB_VERSION = "v1"
RAYJOB_PLURAL = "rayjobs"
RAYJOB_API_VERSION = f"{RAYJOB_GROUP}/{RAYJOB_VERSION}"

# The cluster deployment's ConfigMap and Secrets (infra/base/; pipelines/definitions.py names the same).
CONFIG_MAP = "orthoseg-config"
S3_SECRET = "orthoseg-s3"
SALT_SECRET = "orthoseg-pseudonym"
SALT_KEY = "ORTHOSEG_PSEUDONYM_SALT"
# Addresses as the cluster resolves them, never the submitting machine's (a workstation reaches MinIO and
# MLflow through port-forwards).
CLUSTER_ADDRESS_KEYS = ("ORTHOSEG_S3_ENDPOINT_URL", "ORTHOSEG_MLFLOW_URI")
# Settings the job sets itself (store, Ray address), takes from the cluster (addresses, secrets) or that
# mean nothing inside it (local scratch, the submitter's own RayJob, KFP and schedule settings).
JOB_OWN_SETTINGS = frozenset(
    {"store", "s3_endpoint_url", "mlflow_uri", "ray_address", "pseudonym_salt", "work_dir"}
    | {"rayjob", "pipeline", "schedule"}
)

# Pods are told apart by these labels (infra/base/network-policies.yaml admits the job's pods by them).
PART_OF = {"app.kubernetes.io/part-of": "orthoseg"}
COMPONENT_LABEL = "app.kubernetes.io/component"
RAY_POD_COMPONENT = "rayjob"
SUBMITTER_COMPONENT = "rayjob-submitter"
SUBMITTER_CONTAINER = "ray-job-submitter"

# KubeRay appends 6 characters to a RayJob's name for its RayCluster, whose name may have 53.
MAX_NAME_LENGTH = 47
_DNS_1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")

# The project image's user `ray` (uid 1000, group `users`, gid 100), as on every pod of infra/.
_POD_SECURITY: dict[str, Any] = {
    "runAsUser": 1000,
    "runAsGroup": 100,
    "runAsNonRoot": True,
    "fsGroup": 100,
    "seccompProfile": {"type": "RuntimeDefault"},
}
_CONTAINER_SECURITY: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}
# The root filesystem is read-only: emptyDirs where Ray and orthoseg write (Ray's /tmp/ray, orthoseg's
# work_dir under ~/.orthoseg, ~/.cache, ~/.config), as on infra/base/raycluster.yaml.
_HOME = "/home/ray"
_SCRATCH_MOUNTS = (("tmp", "/tmp"), ("cache", f"{_HOME}/.cache"), ("config", f"{_HOME}/.config"))
_HEAD_MOUNTS = (*_SCRATCH_MOUNTS, ("ray-logs", "/tmp/ray"), ("work", f"{_HOME}/.orthoseg"))
_WORKER_MOUNTS = (*_SCRATCH_MOUNTS, ("work", f"{_HOME}/.orthoseg"))
_HEAD_PORTS = (("gcs", 6379), ("dashboard", 8265), ("client", 10001))
_NO_FOLDING = 1 << 20  # YAML line width: long values (JSON settings) stay on one line
# `ray job submit` and nothing else (KubeRay's default size for the submitter).
_SUBMITTER_RESOURCES = {
    "requests": {"cpu": "500m", "memory": "256Mi"},
    "limits": {"cpu": "1", "memory": "1Gi"},
}


def command_argv(command: str | Sequence[str]) -> list[str]:
    """The command's words (a string is split as a shell would); it must be an ``orthoseg`` command,
    since the job's environment is made for one."""
    argv = shlex.split(command) if isinstance(command, str) else [str(word) for word in command]
    if len(argv) < 2 or argv[0] != "orthoseg":
        raise ValueError(
            f"a RayJob runs one orthoseg command (e.g. 'orthoseg train --json'), not {command!r}"
        )
    return argv


def job_name(prefix: str, argv: Sequence[str], now: datetime | None = None) -> str:
    """A new job's name: ``<prefix>-<subcommand>-<UTC yymmdd-hhmmss>-<4 random hex>``."""
    subcommand = next((word for word in argv[1:] if not word.startswith("-")), "command")
    word = re.sub(r"[^a-z0-9]+", "-", subcommand.lower()).strip("-")[:10].strip("-") or "command"
    stamp = (now or datetime.now(timezone.utc)).strftime("%y%m%d-%H%M%S")
    return f"{prefix}-{word}-{stamp}-{secrets.token_hex(2)}"


def check_job_name(name: str) -> None:
    """Refuse a name KubeRay would refuse (a DNS-1035 label of at most 47 characters)."""
    if len(name) > MAX_NAME_LENGTH or not _DNS_1035_LABEL.match(name):
        raise ValueError(
            f"RayJob name {name!r} must be lower-case letters, digits and '-', start with a letter, end "
            f"with a letter or digit, and have at most {MAX_NAME_LENGTH} characters"
        )


def shared_store(settings: Settings) -> str:
    """The store, which every pod of a cluster must reach: Ray Train keeps its checkpoints there."""
    if not settings.store.startswith("s3://"):
        raise ValueError(
            f"a RayJob needs a store every pod reaches (ORTHOSEG_STORE=s3://bucket/prefix), not "
            f"{settings.store!r}: Ray Train's checkpoints and the datasets live in the store"
        )
    return settings.store


def settings_environment(settings: Settings, pin_defaults: bool = False) -> dict[str, str]:
    """``ORTHOSEG_*`` variables that give the job's processes the settings ``settings`` was given, so the
    job trains or infers as this process would.

    Only the settings given explicitly travel (the job has the defaults too), so the command's own
    options, such as ``--profile``, still fill the rest; a profile in ``settings`` travels as its values,
    which win over the command's. ``pin_defaults`` sends every value, defaults included: the job's
    settings then equal ``settings`` whatever the command's options (a pipeline step that finds the job's
    training run again by its configuration needs that). Left out: ``JOB_OWN_SETTINGS`` (the job's store
    and Ray address are set by ``build_rayjob``; the cluster's addresses and secrets come from its
    ConfigMap and Secrets), and top-level settings that are None (a variable cannot say None).
    """
    given = settings.model_dump(mode="json", exclude_unset=not pin_defaults, exclude=set(JOB_OWN_SETTINGS))
    return {
        f"ORTHOSEG_{key.upper()}": value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        for key, value in sorted(given.items())
        if value is not None
    }


def _mounts(names: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"name": name, "mountPath": path} for name, path in names]


def _empty_dirs(names: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
    return [{"name": name, "emptyDir": {}} for name, _ in names]


def _pod_environment() -> dict[str, Any]:
    """The container environment of every Ray pod: the cluster's addresses, the salt, S3 credentials."""
    env: list[dict[str, Any]] = [
        {"name": key, "valueFrom": {"configMapKeyRef": {"name": CONFIG_MAP, "key": key}}}
        for key in CLUSTER_ADDRESS_KEYS
    ]
    env.append({"name": SALT_KEY, "valueFrom": {"secretKeyRef": {"name": SALT_SECRET, "key": SALT_KEY}}})
    return {"env": env, "envFrom": [{"secretRef": {"name": S3_SECRET}}]}


def _resources(size: RayPodSize, gpus: int = 0, gpu_resource: str = "") -> dict[str, Any]:
    requests: dict[str, Any] = {"cpu": size.cpus, "memory": size.memory}
    limits: dict[str, Any] = {"memory": size.memory}
    if gpus:
        requests[gpu_resource] = limits[gpu_resource] = gpus
    return {"requests": requests, "limits": limits}


def _pod_template(
    config: RayJobConfig,
    component: str,
    containers: list[dict[str, Any]],
    volumes: list[dict[str, Any]],
    extra: dict[str, Any] | None = None,
    gpu_tolerations: bool = False,
) -> dict[str, Any]:
    """A restricted pod template on the configured nodes."""
    spec: dict[str, Any] = {
        **(extra or {}),
        "securityContext": copy.deepcopy(_POD_SECURITY),
        "containers": containers,
        "volumes": volumes,
    }
    if config.node_selector:
        spec["nodeSelector"] = dict(sorted(config.node_selector.items()))
    tolerations = [t.model_dump(exclude_none=True) for t in config.tolerations]
    if gpu_tolerations:
        tolerations.append({"key": config.gpu_resource, "operator": "Exists", "effect": "NoSchedule"})
    if tolerations:
        spec["tolerations"] = tolerations
    return {"metadata": {"labels": {**PART_OF, COMPONENT_LABEL: component}}, "spec": spec}


def _container(
    name: str, image: str, resources: dict[str, Any], mounts: list[dict[str, str]]
) -> dict[str, Any]:
    return {
        "name": name,
        "image": image,
        "securityContext": copy.deepcopy(_CONTAINER_SECURITY),
        "resources": resources,
        "volumeMounts": mounts,
    }


def _head_group(config: RayJobConfig) -> dict[str, Any]:
    container = _container("ray-head", config.image, _resources(config.head), _mounts(_HEAD_MOUNTS))
    container.update(_pod_environment())
    container["ports"] = [{"name": name, "containerPort": port} for name, port in _HEAD_PORTS]
    return {
        "serviceType": "ClusterIP",
        # No tasks on the head: they go to the workers. The job's driver runs here all the same.
        "rayStartParams": {"dashboard-host": "0.0.0.0", "num-cpus": "0"},
        "template": _pod_template(config, RAY_POD_COMPONENT, [container], _empty_dirs(_HEAD_MOUNTS)),
    }


def _worker_group(config: RayJobConfig, name: str, group: RayWorkerGroup, image: str) -> dict[str, Any]:
    mounts = [{"name": "dshm", "mountPath": "/dev/shm"}, *_mounts(_WORKER_MOUNTS)]
    container = _container("ray-worker", image, _resources(group, group.gpus, config.gpu_resource), mounts)
    container.update(_pod_environment())
    volumes = [
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": group.shared_memory}},
        *_empty_dirs(_WORKER_MOUNTS),
    ]
    return {
        "groupName": name,
        "replicas": group.replicas,
        "minReplicas": group.replicas,
        "maxReplicas": group.replicas,
        # Ray is told the pod's GPUs whatever the resource's name (KubeRay reads only some names itself).
        "rayStartParams": {"num-gpus": str(group.gpus)} if group.gpus else {},
        "template": _pod_template(
            config, RAY_POD_COMPONENT, [container], volumes, gpu_tolerations=group.gpus > 0
        ),
    }


def _cluster_spec(config: RayJobConfig) -> dict[str, Any]:
    groups = [
        _worker_group(config, name, group, image)
        for name, group, image in (
            ("cpu", config.cpu_workers, config.image),
            ("gpu", config.gpu_workers, config.gpu_image),
        )
        if group.replicas
    ]
    return {
        "rayVersion": config.ray_version,
        "headGroupSpec": _head_group(config),
        "workerGroupSpecs": groups,
    }


def _submitter_template(config: RayJobConfig) -> dict[str, Any]:
    """The pod that runs ``ray job submit`` and then follows the driver's log (KubeRay fills in the
    command): restricted like the Ray pods, without their environment or secrets."""
    mounts = _mounts(_SCRATCH_MOUNTS)
    container = _container(SUBMITTER_CONTAINER, config.image, copy.deepcopy(_SUBMITTER_RESOURCES), mounts)
    return _pod_template(
        config,
        SUBMITTER_COMPONENT,
        [container],
        _empty_dirs(_SCRATCH_MOUNTS),
        extra={"restartPolicy": "Never"},
    )


def build_rayjob(
    settings: Settings,
    command: str | Sequence[str],
    name: str | None = None,
    now: datetime | None = None,
    pin_settings: bool = False,
) -> dict[str, Any]:
    """The RayJob manifest that runs ``command`` (an ``orthoseg ...`` command line) with ``settings``.

    Args:
        settings: ``settings.rayjob`` shapes the job; ``settings.store`` (``s3://``) and the settings given
            explicitly travel to the job's processes (``settings_environment``).
        command: e.g. ``"orthoseg train --profile standard --json"``.
        name: the job's name; None: a new one (``job_name``).
        now: the time in a generated name (tests); None: now.
        pin_settings: send every setting, defaults included (``settings_environment``'s ``pin_defaults``).

    Raises:
        ValueError: for a command other than orthoseg's, a local store, or a name KubeRay would refuse.
    """
    config = settings.rayjob
    argv = command_argv(command)
    name = name or job_name(config.name_prefix, argv, now)
    check_job_name(name)
    job_env = {"ORTHOSEG_STORE": shared_store(settings), "ORTHOSEG_RAY_ADDRESS": "auto"}
    job_env.update(settings_environment(settings, pin_defaults=pin_settings))
    spec: dict[str, Any] = {
        # One level of shell quoting: the submitter's shell removes it, `ray job submit` re-quotes.
        "entrypoint": shlex.join(argv),
        "runtimeEnvYAML": yaml.safe_dump({"env_vars": job_env}, sort_keys=True, width=_NO_FOLDING),
        "submissionMode": "K8sJobMode",
        "submitterPodTemplate": _submitter_template(config),
        "activeDeadlineSeconds": config.active_deadline_s,
    }
    if config.existing_cluster:
        # KubeRay neither retries nor removes a cluster it did not create.
        spec["clusterSelector"] = {"ray.io/cluster": config.existing_cluster}
    else:
        spec["rayClusterSpec"] = _cluster_spec(config)
        spec["shutdownAfterJobFinishes"] = True
        spec["ttlSecondsAfterFinished"] = config.ttl_after_finished_s
        spec["backoffLimit"] = config.backoff_limit
    return {
        "apiVersion": RAYJOB_API_VERSION,
        "kind": "RayJob",
        "metadata": {
            "name": name,
            "namespace": config.namespace,
            "labels": {**PART_OF, COMPONENT_LABEL: RAY_POD_COMPONENT},
        },
        "spec": spec,
    }


class _ManifestDumper(yaml.SafeDumper):
    """Plain YAML for ``kubectl``: every mapping written out (no anchors and aliases), and multi-line
    strings (the runtime environment) as literal blocks."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_text(dumper: yaml.SafeDumper, text: str) -> yaml.Node:
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style="|" if "\n" in text else None)


_ManifestDumper.add_representer(str, _represent_text)


def manifest_yaml(manifest: dict[str, Any]) -> str:
    """The manifest as YAML for ``kubectl apply -f -``."""
    return yaml.dump(
        manifest, Dumper=_ManifestDumper, width=_NO_FOLDING, sort_keys=False, default_flow_style=False
    )
