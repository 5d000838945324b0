"""The RayJob path: manifests built from several settings are valid ``ray.io/v1`` RayJobs by KubeRay's own
schema (vendored in infra/schemas/), restricted and wired like infra/'s Ray pods, and the submit-and-follow
loop reaches every end (success, failure, deadline) against a fake of the Kubernetes API server."""

from __future__ import annotations

import copy
import json
import shlex
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from kubernetes.client import V1ObjectMeta, V1Pod, V1PodList, V1PodStatus
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from orthoseg.rayjob import (
    JOB_OWN_SETTINGS,
    MAX_NAME_LENGTH,
    SUBMITTER_CONTAINER,
    build_rayjob,
    command_argv,
    job_name,
    manifest_yaml,
    settings_environment,
)
from orthoseg.rayjob_config import RayJobConfig, with_overrides
from orthoseg.rayjob_follow import RayJobFailed, submit_rayjob
from orthoseg.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
SCHEMA = INFRA / "schemas" / "kuberay-v1.7.0" / "rayjob.schema.json"
STORE = "s3://orthoseg/store"
NOW = datetime(2026, 3, 1, 12, 30, 45, tzinfo=timezone.utc)
TRAIN = "orthoseg train --profile standard --json"

Doc = dict[str, Any]

# Settings the job is built from: CPU only, GPU workers, an existing RayCluster, and a store with more
# settings given (a profile, training values, another GPU resource, placement).
CASES: dict[str, dict[str, Any]] = {
    "cpu_only": {},
    "gpu_workers": {"rayjob": {"gpu_workers": {"replicas": 2, "gpus": 2}, "cpu_workers": {"replicas": 1}}},
    "existing_cluster": {"rayjob": {"existing_cluster": "orthoseg-ray"}},
    "s3_store_and_settings": {
        "store": "s3://clinic-bucket/orthoseg/prod",
        "profile": "full",
        "train": {"epochs": 3},
        "inference": {"tta_passes": 2},
        "rayjob": {
            "gpu_workers": {"replicas": 1},
            "gpu_resource": "amd.com/gpu",
            "node_selector": {"pool": "ml"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}],
            "active_deadline_s": 7200,
            "ttl_after_finished_s": 0,
            "backoff_limit": 3,
        },
    },
}


@pytest.fixture(autouse=True)
def _no_orthoseg_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings come from the test's arguments alone, not the environment the tests run in."""
    import os

    for name in [n for n in os.environ if n.startswith("ORTHOSEG_")]:
        monkeypatch.delenv(name)


def _settings(case: str) -> Settings:
    return Settings(**{"store": STORE, **copy.deepcopy(CASES[case])})


def _build(case: str, command: str = TRAIN) -> Doc:
    return build_rayjob(_settings(case), command, now=NOW)


# --- the schema --------------------------------------------------------------------------------------


def _strict(schema: Any) -> Any:
    """KubeRay's schema with unknown fields refused, as the API server's strict field validation
    (kubectl's default) refuses them; fields that keep unknown content (x-kubernetes-preserve-unknown-fields)
    stay open."""
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    strict = {key: _strict(value) for key, value in schema.items()}
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        strict["additionalProperties"] = False
    return strict


def _format_checker() -> jsonschema.FormatChecker:
    """The OpenAPI integer formats Kubernetes enforces (int32 fields overflow otherwise unnoticed)."""
    checker = jsonschema.FormatChecker()

    @checker.checks("int32")
    def _int32(value: object) -> bool:
        return not isinstance(value, int) or -(2**31) <= value < 2**31

    @checker.checks("int64")
    def _int64(value: object) -> bool:
        return not isinstance(value, int) or -(2**63) <= value < 2**63

    return checker


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    schema = json.loads(SCHEMA.read_text())
    return jsonschema.Draft7Validator(_strict(schema), format_checker=_format_checker())


def _errors(validator: jsonschema.Draft7Validator, manifest: Doc) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(manifest)]


def test_vendored_schema_is_kuberays_rayjob() -> None:
    schema = json.loads(SCHEMA.read_text())
    spec = schema["properties"]["spec"]["properties"]
    assert {"entrypoint", "rayClusterSpec", "clusterSelector", "submitterPodTemplate"} <= set(spec)
    assert {"activeDeadlineSeconds", "backoffLimit", "ttlSecondsAfterFinished"} <= set(spec)
    readme = (SCHEMA.parent / "README.md").read_text()
    for fact in ("ray-project/kuberay", "v1.7.0", "ray.io_rayjobs.yaml", "Apache"):
        assert fact in readme


@pytest.mark.parametrize("case", CASES)
def test_built_manifests_are_valid_rayjobs(case: str, validator: jsonschema.Draft7Validator) -> None:
    manifest = _build(case)
    assert (manifest["apiVersion"], manifest["kind"]) == ("ray.io/v1", "RayJob")
    assert _errors(validator, manifest) == []
    # What `orthoseg rayjob render` prints is the same object, in YAML kubectl reads.
    assert yaml.safe_load(manifest_yaml(manifest)) == manifest
    assert "&id" not in manifest_yaml(manifest)  # no YAML anchors


def _set(manifest: Doc, path: str, value: Any) -> Doc:
    broken = copy.deepcopy(manifest)
    *parents, last = path.split("/")
    node: Any = broken
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    node[last] = value
    return broken


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("spec/activeDeadlineSeconds", "86400"),  # a string where KubeRay wants an integer
        ("spec/activeDeadlineSeconds", 2**31),  # past int32
        ("spec/shutdownAfterJobFinishes", "true"),
        ("spec/rayClusterSpec/workerGroupSpecs/0/rayStartParams/num-cpus", 4),  # params are strings
        ("spec/rayClusterSpec/headGroupSpec/template/spec/containers/0/ports/0/containerPort", "6379"),
        ("spec/ttlSecondAfterFinished", 600),  # a misspelt field
        ("spec/rayClusterSpec/workerGroupSpecs/0/template/spec/securityContext/runAsNonRoot", "yes"),
    ],
)
def test_a_broken_manifest_fails_validation(
    path: str, value: Any, validator: jsonschema.Draft7Validator
) -> None:
    manifest = _build("cpu_only")
    assert _errors(validator, manifest) == []
    errors = _errors(validator, _set(manifest, path, value))
    assert errors, f"{path}={value!r} passed the schema"
    assert any(error.startswith(path.rsplit("/", 1)[0]) for error in errors), errors


# --- what the built objects hold ------------------------------------------------------------------------


def _pod_templates(manifest: Doc) -> Iterator[tuple[str, Doc]]:
    spec = manifest["spec"]
    yield "submitter", spec["submitterPodTemplate"]
    cluster = spec.get("rayClusterSpec")
    if cluster:
        yield "head", cluster["headGroupSpec"]["template"]
        for group in cluster["workerGroupSpecs"]:
            yield group["groupName"], group["template"]


def _containers(template: Doc) -> list[Doc]:
    return [*template["spec"].get("initContainers", []), *template["spec"]["containers"]]


@pytest.mark.parametrize("case", CASES)
def test_every_pod_and_container_is_restricted(case: str) -> None:
    manifest = _build(case)
    for where, template in _pod_templates(manifest):
        pod = template["spec"]
        assert pod["securityContext"] == {
            "runAsUser": 1000,
            "runAsGroup": 100,
            "runAsNonRoot": True,
            "fsGroup": 100,
            "seccompProfile": {"type": "RuntimeDefault"},
        }, where
        assert not pod.get("hostNetwork") and not pod.get("hostPID"), where
        volumes = {v["name"]: v for v in pod["volumes"]}
        for container in _containers(template):
            assert container["securityContext"] == {
                "allowPrivilegeEscalation": False,
                "readOnlyRootFilesystem": True,
                "capabilities": {"drop": ["ALL"]},
            }, where
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            # The root filesystem is read-only: every writable path is an emptyDir, as on raycluster.yaml.
            assert {"/tmp", "/home/ray/.cache", "/home/ray/.config"} <= set(mounts), where
            for name in mounts.values():
                assert "emptyDir" in volumes[name], f"{where}: {name}"
            if where != "submitter":
                assert "/home/ray/.orthoseg" in mounts, where
        if where == "head":
            (head,) = _containers(template)
            assert {"name": "ray-logs", "mountPath": "/tmp/ray"} in head["volumeMounts"]


def _all_resources(manifest: Doc) -> list[tuple[str, Doc]]:
    return [(w, c.get("resources", {})) for w, t in _pod_templates(manifest) for c in _containers(t)]


def test_gpu_limits_only_when_asked() -> None:
    cpu_only = _build("cpu_only")
    groups = cpu_only["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    assert [g["groupName"] for g in groups] == ["cpu"]
    assert "gpu" not in json.dumps(_all_resources(cpu_only)).lower()
    assert groups[0]["rayStartParams"] == {}

    gpus = _build("gpu_workers")["spec"]["rayClusterSpec"]
    cpu, gpu = gpus["workerGroupSpecs"]
    assert (cpu["groupName"], gpu["groupName"]) == ("cpu", "gpu")
    assert "gpu" not in json.dumps(cpu["template"]["spec"]["containers"][0]["resources"]).lower()
    (worker,) = gpu["template"]["spec"]["containers"]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert worker["resources"]["requests"]["nvidia.com/gpu"] == 2
    assert gpu["rayStartParams"] == {"num-gpus": "2"}
    assert (gpu["replicas"], gpu["minReplicas"], gpu["maxReplicas"]) == (2, 2, 2)
    assert worker["image"] == RayJobConfig().gpu_image  # the CUDA build
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in gpu["template"]["spec"][
        "tolerations"
    ]
    assert "tolerations" not in cpu["template"]["spec"]
    assert "gpu" not in json.dumps(gpus["headGroupSpec"]).lower()

    other = _build("s3_store_and_settings")["spec"]["rayClusterSpec"]["workerGroupSpecs"][1]
    assert other["template"]["spec"]["containers"][0]["resources"]["limits"]["amd.com/gpu"] == 1


def _env(container: Doc) -> dict[str, Doc]:
    return {e["name"]: e for e in container.get("env", [])}


@pytest.mark.parametrize("case", CASES)
def test_secrets_and_cluster_addresses_come_from_the_cluster(case: str) -> None:
    settings = _settings(case).model_copy(update={"pseudonym_salt": "do-not-print-me"})
    manifest = build_rayjob(settings, TRAIN, now=NOW)
    assert "do-not-print-me" not in manifest_yaml(manifest)
    for where, template in _pod_templates(manifest):
        (container,) = _containers(template)
        if where == "submitter":
            # `ray job submit` needs neither the settings nor a secret.
            assert "env" not in container and "envFrom" not in container
            continue
        env = _env(container)
        assert env["ORTHOSEG_PSEUDONYM_SALT"] == {
            "name": "ORTHOSEG_PSEUDONYM_SALT",
            "valueFrom": {"secretKeyRef": {"name": "orthoseg-pseudonym", "key": "ORTHOSEG_PSEUDONYM_SALT"}},
        }, where
        for key in ("ORTHOSEG_S3_ENDPOINT_URL", "ORTHOSEG_MLFLOW_URI"):
            assert env[key]["valueFrom"] == {"configMapKeyRef": {"name": "orthoseg-config", "key": key}}, (
                where
            )
        assert all("value" not in e for e in env.values()), where
        assert container["envFrom"] == [{"secretRef": {"name": "orthoseg-s3"}}], where


def test_names_match_the_cluster_deployment() -> None:
    """The ConfigMap, Secrets and image the job names are the ones infra/ and the pipelines use."""
    from orthoseg import rayjob
    from pipelines import definitions

    assert (rayjob.CONFIG_MAP, rayjob.S3_SECRET) == (definitions.CONFIG_MAP, definitions.S3_SECRET)
    assert (rayjob.SALT_SECRET, rayjob.SALT_KEY) == (definitions.SALT_SECRET, definitions.SALT_KEY)
    assert set(rayjob.CLUSTER_ADDRESS_KEYS) <= set(definitions.CONFIG_KEYS)
    configmap = yaml.safe_load((INFRA / "base" / "configmap.yaml").read_text())
    assert set(rayjob.CLUSTER_ADDRESS_KEYS) <= set(configmap["data"])
    cluster = yaml.safe_load((INFRA / "base" / "raycluster.yaml").read_text())["spec"]
    config = RayJobConfig()
    assert cluster["headGroupSpec"]["template"]["spec"]["containers"][0]["image"] == config.image
    assert cluster["rayVersion"] == config.ray_version
    gpu_patch = yaml.safe_load((INFRA / "overlays" / "gpu" / "raycluster-gpu.yaml").read_text())
    assert {"op": "replace", "path": "/spec/workerGroupSpecs/0/template/spec/containers/0/image"} | {
        "value": config.gpu_image
    } in gpu_patch


def test_deadlines_retries_and_cleanup() -> None:
    config = RayJobConfig()
    own = _build("cpu_only")["spec"]
    assert own["shutdownAfterJobFinishes"] is True
    assert own["ttlSecondsAfterFinished"] == config.ttl_after_finished_s
    assert own["activeDeadlineSeconds"] == config.active_deadline_s == 24 * 3600
    assert own["backoffLimit"] == config.backoff_limit
    assert "clusterSelector" not in own
    given = _build("s3_store_and_settings")["spec"]
    assert (given["activeDeadlineSeconds"], given["ttlSecondsAfterFinished"], given["backoffLimit"]) == (
        7200,
        0,
        3,
    )
    # On an existing cluster, KubeRay refuses retries and removes nothing (a TTL needs the shutdown).
    shared = _build("existing_cluster")["spec"]
    assert shared["clusterSelector"] == {"ray.io/cluster": "orthoseg-ray"}
    assert shared["activeDeadlineSeconds"] == config.active_deadline_s
    for field in ("rayClusterSpec", "shutdownAfterJobFinishes", "ttlSecondsAfterFinished", "backoffLimit"):
        assert field not in shared
    # The follower outlasts every attempt's deadline, and only those.
    assert config.follow_timeout_s() == 2 * 24 * 3600 + config.status_grace_s
    assert _settings("existing_cluster").rayjob.follow_timeout_s() == 24 * 3600 + config.status_grace_s


def _job_env(manifest: Doc) -> dict[str, str]:
    env = yaml.safe_load(manifest["spec"]["runtimeEnvYAML"])["env_vars"]
    assert all(isinstance(value, str) for value in env.values())
    return env


@pytest.mark.parametrize("case", CASES)
def test_ray_train_checkpoints_go_under_the_s3_store(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The job's processes get the submitting settings' store, and training there keeps its checkpoints in
    that bucket (orthoseg.training.run.checkpoint_storage, read with the job's own environment)."""
    from orthoseg.storage import S3Store, join_key, store_from_settings
    from orthoseg.training.run import CHECKPOINT_PREFIX, checkpoint_storage

    settings = _settings(case)
    env = _job_env(build_rayjob(settings, TRAIN, now=NOW))
    assert env["ORTHOSEG_STORE"] == settings.store
    assert env["ORTHOSEG_RAY_ADDRESS"] == "auto"  # the driver joins the job's own Ray cluster
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("ORTHOSEG_S3_ENDPOINT_URL", "http://minio.orthoseg.svc:9000")  # from the ConfigMap
    in_job = Settings()
    store = store_from_settings(in_job)
    assert isinstance(store, S3Store)
    path, filesystem = checkpoint_storage(in_job)
    assert path == join_key(store.bucket, store.prefix, CHECKPOINT_PREFIX)
    assert f"s3://{path}".startswith(settings.store + "/")
    assert type(filesystem).__name__ == "S3FileSystem"


def test_a_local_store_is_refused() -> None:
    with pytest.raises(ValueError, match="s3://"):
        build_rayjob(Settings(store="/data/orthoseg"), TRAIN)


def test_settings_travel_to_the_job(monkeypatch: pytest.MonkeyPatch) -> None:
    given = Settings(
        store=STORE,
        profile="demo",
        train={"epochs": 3, "init_weights_uri": "models:/orthoseg-knee/4"},
        augment={"flip_probability": 0.0},
        inference={"tta_passes": 2},
        model_name="knee-test",
        pseudonym_salt="do-not-print-me",
        mlflow_uri="http://localhost:5000",  # a workstation's port-forward: never the job's
        rayjob={"gpu_workers": {"replicas": 1}},
    )
    # Nothing given, nothing to pass on: the job has the defaults too.
    assert settings_environment(Settings(store=STORE)) == {}
    env = settings_environment(given)
    assert "do-not-print-me" not in json.dumps(env)
    assert {f"ORTHOSEG_{name.upper()}" for name in JOB_OWN_SETTINGS}.isdisjoint(env)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    in_job = Settings()
    fields = set(Settings.model_fields) - JOB_OWN_SETTINGS
    assert in_job.model_dump(include=fields) == given.model_dump(include=fields)
    assert in_job.train.init_weights_uri == "models:/orthoseg-knee/4"


def test_pinned_settings_make_the_job_train_the_same_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """A pipeline step that reads the job's training run back finds it by its configuration: with pinned
    settings the job's configuration is the step's, whatever profile ``orthoseg train`` applies."""
    from orthoseg.training.run import ray_run_name

    step = Settings(store=STORE, train={"init_weights_uri": "models:/orthoseg-knee/3"})
    for pinned, same in ((True, True), (False, False)):
        env = _job_env(build_rayjob(step, TRAIN, name="orthoseg-train-x", pin_settings=pinned))
        with monkeypatch.context() as patch:
            for name, value in env.items():
                patch.setenv(name, value)
            in_job = Settings(profile="standard")  # what `orthoseg train --profile standard` builds
        assert (ray_run_name(in_job, "v1") == ray_run_name(step, "v1")) is same


def test_the_command_and_the_name() -> None:
    with pytest.raises(ValueError, match="orthoseg command"):
        command_argv("python -c 'import os'")
    with pytest.raises(ValueError, match="orthoseg command"):
        command_argv("orthoseg")
    odd = ["orthoseg", "infer", "s3://archive/knees with space/", "--model", "champion;rm -rf /", "--json"]
    manifest = build_rayjob(Settings(store=STORE), odd, name="orthoseg-infer-1")
    # One level of shell quoting: the submitter's shell gives `ray job submit` these words back.
    assert shlex.split(manifest["spec"]["entrypoint"]) == odd
    assert manifest["metadata"]["name"] == "orthoseg-infer-1"
    assert manifest["metadata"]["namespace"] == "orthoseg"

    longest = job_name("p" * 16, ["orthoseg", "--verbose", "Pipeline_Run_Training"], NOW)
    assert longest.startswith("pppppppppppppppp-pipeline-r-260301-123045-")
    assert len(longest) <= MAX_NAME_LENGTH
    assert job_name("orthoseg", command_argv(TRAIN), NOW).startswith("orthoseg-train-260301-123045-")
    assert job_name("orthoseg", command_argv(TRAIN)) != job_name("orthoseg", command_argv(TRAIN))
    for bad in ("Train", "1-train", "train-", "t" * (MAX_NAME_LENGTH + 1), "train_1"):
        with pytest.raises(ValueError, match="RayJob name"):
            build_rayjob(Settings(store=STORE), TRAIN, name=bad)


def test_the_settings_section(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORTHOSEG_RAYJOB__GPU_WORKERS__REPLICAS", "2")
    monkeypatch.setenv("ORTHOSEG_RAYJOB__EXISTING_CLUSTER", "orthoseg-ray")
    config = Settings().rayjob
    assert (config.gpu_workers.replicas, config.gpu_workers.gpus, config.gpu_workers.memory) == (2, 1, "48Gi")
    assert config.existing_cluster == "orthoseg-ray"
    assert config.cpu_workers == RayJobConfig().cpu_workers
    with pytest.raises(ValidationError, match="cpu_workers.gpus"):
        RayJobConfig(cpu_workers={"gpus": 1})
    with pytest.raises(ValidationError, match="needs workers"):
        RayJobConfig(cpu_workers={"replicas": 0})
    with pytest.raises(ValidationError, match="shared_memory"):
        RayJobConfig(cpu_workers={"shared_memory": "32Gi"})
    with pytest.raises(ValidationError, match="memory"):
        RayJobConfig(head={"memory": "lots"})
    assert with_overrides(RayJobConfig(), gpu_workers=1).gpu_workers.replicas == 1
    with pytest.raises(ValidationError):
        with_overrides(RayJobConfig(), cpu_workers=-1)


def test_cli_renders_the_manifest(validator: jsonschema.Draft7Validator) -> None:
    from typer.testing import CliRunner

    from orthoseg.cli import app

    result = CliRunner().invoke(
        app,
        ["rayjob", "render", "--command", TRAIN, "--name", "orthoseg-train-cli", "--gpu-workers", "1"],
        env={"ORTHOSEG_STORE": STORE, "ORTHOSEG_TRAIN__EPOCHS": "2"},
    )
    assert result.exit_code == 0, result.output
    manifest = yaml.safe_load(result.stdout)
    assert _errors(validator, manifest) == []
    assert manifest["metadata"]["name"] == "orthoseg-train-cli"
    assert [g["groupName"] for g in manifest["spec"]["rayClusterSpec"]["workerGroupSpecs"]] == ["cpu", "gpu"]
    assert json.loads(_job_env(manifest)["ORTHOSEG_TRAIN"]) == {"epochs": 2}


# --- the cluster side: network policies and the Role -------------------------------------------------


def _selects(selector: Doc, labels: dict[str, str]) -> bool:
    if not all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        assert expression["operator"] == "In"
        if labels.get(expression["key"]) not in expression["values"]:
            return False
    return True


def _admits(policy: Doc, source: dict[str, str], port: int) -> bool:
    for rule in policy.get("ingress", []):
        ports = [p["port"] for p in rule.get("ports", [])]
        if ports and port not in ports:
            continue
        for peer in rule.get("from", []):
            if "namespaceSelector" not in peer and _selects(peer.get("podSelector", {}), source):
                return True
    return False


def test_network_policies_let_the_jobs_pods_work() -> None:
    """The namespace denies ingress by default; the job's pods (with the labels KubeRay adds) reach each
    other, MinIO, and a shared cluster's dashboard, and the operator reaches their head's dashboard."""
    documents = list(yaml.safe_load_all((INFRA / "base" / "network-policies.yaml").read_text()))
    policies = {d["metadata"]["name"]: d["spec"] for d in documents if d}
    own = _build("cpu_only")
    labels = {where: template["metadata"]["labels"] for where, template in _pod_templates(own)}
    cluster = {"ray.io/cluster": "orthoseg-train-260301-123045-ab12-x7k2p"}
    head = {**labels["head"], **cluster, "ray.io/node-type": "head"}
    worker = {**labels["cpu"], **cluster, "ray.io/node-type": "worker"}
    submitter = labels["submitter"]

    def admitted(target: dict[str, str], source: dict[str, str], port: int) -> bool:
        selecting = [p for p in policies.values() if p["podSelector"] and _selects(p["podSelector"], target)]
        return any(_admits(p, source, port) for p in selecting)

    minio = {"app.kubernetes.io/name": "minio", "app.kubernetes.io/part-of": "orthoseg"}
    for source in (head, worker, submitter):
        assert admitted(minio, source, 9000)
        assert admitted(head, source, 6379) and admitted(head, source, 8265)
    assert admitted(worker, head, 12345) and admitted(worker, worker, 12345)
    shared_head = {"ray.io/cluster": "orthoseg-ray", "ray.io/node-type": "head"}
    assert admitted(shared_head, submitter, 8265)
    assert not admitted(shared_head, submitter, 6379)
    # The operator, wherever it is installed, polls the job's status on the head's dashboard.
    operator = policies["kuberay-operator-to-ray-heads"]
    assert operator["ingress"] == [
        {
            "from": [
                {
                    "namespaceSelector": {},
                    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "kuberay-operator"}},
                }
            ],
            "ports": [{"protocol": "TCP", "port": 8265}],
        }
    ]
    assert _selects(operator["podSelector"], head) and _selects(operator["podSelector"], shared_head)
    assert not _selects(operator["podSelector"], worker)


# Every Kubernetes API call the follower makes, as RBAC sees it: (API group, resource, verb).
API_CALLS = {
    "create_namespaced_custom_object": ("ray.io", "rayjobs", "create"),
    "get_namespaced_custom_object": ("ray.io", "rayjobs", "get"),
    "delete_namespaced_custom_object": ("ray.io", "rayjobs", "delete"),
    "list_namespaced_pod": ("", "pods", "list"),
    "read_namespaced_pod_log": ("", "pods/log", "get"),
}


def _role_grants(group: str, resource: str, verb: str) -> bool:
    documents = yaml.safe_load_all((INFRA / "base" / "rbac.yaml").read_text())
    (role,) = [d for d in documents if d and d["kind"] == "Role"]
    return any(
        group in rule["apiGroups"] and resource in rule["resources"] and verb in rule["verbs"]
        for rule in role["rules"]
    )


# --- submitting and following, against a fake API server ------------------------------------------


class FakeTime:
    """A clock and a sleep that advances it, so deadlines pass without waiting."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class FakeLogResponse:
    """A streamed (``_preload_content=False``) log response: chunks that split lines anywhere."""

    def __init__(self, text: str) -> None:
        data = text.encode()
        self._chunks = [data[i : i + 7] for i in range(0, len(data), 7)]
        self.released = False

    def stream(self, amt: int | None = None, decode_content: bool | None = None) -> Iterator[bytes]:
        yield from self._chunks

    def close(self) -> None:
        pass

    def release_conn(self) -> None:
        self.released = True


class FakeKubernetes:
    """The Kubernetes API server as far as the follower uses it (the CustomObjectsApi and CoreV1Api methods
    it calls): RayJobs by name, each read of one moving its status along ``statuses`` (the last one
    stays), the submitter Job's pod labelled as Kubernetes labels a Job's pods, and that pod's log."""

    def __init__(
        self, statuses: list[Doc | ApiException], log: str = "", existing: dict[str, Doc] | None = None
    ) -> None:
        self.statuses = list(statuses)
        self.log = log
        self.objects: dict[str, Doc] = copy.deepcopy(existing or {})
        self.calls: list[str] = []
        self.created: list[Doc] = []
        self.deleted: list[str] = []

    def create_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, body: Doc
    ) -> Doc:
        self.calls.append("create_namespaced_custom_object")
        assert (group, version, plural) == ("ray.io", "v1", "rayjobs")
        name = body["metadata"]["name"]
        if name in self.objects:
            raise ApiException(status=409, reason="AlreadyExists")
        self.objects[name] = copy.deepcopy(body)
        self.created.append(body)
        return body

    def get_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str
    ) -> Doc:
        self.calls.append("get_namespaced_custom_object")
        assert (group, version, plural) == ("ray.io", "v1", "rayjobs")
        if name not in self.objects:
            raise ApiException(status=404, reason="NotFound")
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        if isinstance(status, ApiException):
            raise status
        self.objects[name]["status"] = status
        return copy.deepcopy(self.objects[name])

    def delete_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str, **options: Any
    ) -> Doc:
        self.calls.append("delete_namespaced_custom_object")
        if name not in self.objects:
            raise ApiException(status=404, reason="NotFound")
        del self.objects[name]
        self.deleted.append(name)
        return {"status": "Success"}

    def list_namespaced_pod(self, namespace: str, label_selector: str) -> V1PodList:
        self.calls.append("list_namespaced_pod")
        key, _, job = label_selector.partition("=")
        assert key == "batch.kubernetes.io/job-name"
        pods = [
            V1Pod(
                metadata=V1ObjectMeta(name=f"{job}-x7k2p", creation_timestamp=NOW),
                status=V1PodStatus(phase="Succeeded"),
            )
        ]
        return V1PodList(items=pods if self.log else [])

    def read_namespaced_pod_log(self, name: str, namespace: str, **options: Any) -> FakeLogResponse:
        self.calls.append("read_namespaced_pod_log")
        assert options["container"] == SUBMITTER_CONTAINER and options["follow"] is True
        return FakeLogResponse(self.log)


RUNNING = {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING", "dashboardURL": "head-svc:8265"}
SUCCEEDED = {
    "jobDeploymentStatus": "Complete",
    "jobStatus": "SUCCEEDED",
    "jobId": "orthoseg-train-x-abcde",
    "rayClusterName": "orthoseg-train-x-7hq2m",
    "dashboardURL": "orthoseg-train-x-head-svc.orthoseg.svc.cluster.local:8265",
}
APP_FAILED = {
    "jobDeploymentStatus": "Failed",
    "jobStatus": "FAILED",
    "reason": "AppFailed",
    "message": "Job entrypoint command failed with exit code 1",
}
DRIVER_LOG = (
    "Waiting for Ray Dashboard GCS to become healthy ...\n"
    "INFO orthoseg.training.run: epoch 1/3\n"
    '{"run_id": "3f2a", "dataset_version": "v1", "epochs": 3}\n'
    "Job 'orthoseg-train-x-abcde' succeeded\n"
)


def _config(**given: Any) -> RayJobConfig:
    return RayJobConfig(**{"poll_interval_s": 5.0, "active_deadline_s": 60, "status_grace_s": 30, **given})


def _manifest(name: str = "orthoseg-train-x") -> Doc:
    return build_rayjob(Settings(store=STORE), TRAIN, name=name)


def test_submit_follows_a_job_to_success() -> None:
    api, time = (
        FakeKubernetes([{}, {"jobDeploymentStatus": "Initializing"}, RUNNING, SUCCEEDED], DRIVER_LOG),
        FakeTime(),
    )
    lines: list[str] = []
    outcome = submit_rayjob(api, api, _manifest(), _config(), lines.append, time.clock, time.sleep)
    assert api.created == [_manifest()]
    assert (outcome.deployment_status, outcome.job_status) == ("Complete", "SUCCEEDED")
    assert (outcome.job_id, outcome.ray_cluster) == ("orthoseg-train-x-abcde", "orthoseg-train-x-7hq2m")
    assert outcome.dashboard_url == SUCCEEDED["dashboardURL"]
    assert lines == DRIVER_LOG.splitlines()  # the driver's log, whole lines, in order
    assert outcome.result == {"run_id": "3f2a", "dataset_version": "v1", "epochs": 3}
    assert outcome.deleted and api.deleted == ["orthoseg-train-x"]  # delete_finished: on_success
    assert not outcome.attached
    assert time.sleeps == [5.0, 5.0, 5.0]
    assert outcome.seconds == 15.0
    for call in set(api.calls):
        assert call in API_CALLS, f"{call}: map it to its RBAC permission here and grant it in rbac.yaml"
        assert _role_grants(*API_CALLS[call]), f"infra/base/rbac.yaml does not grant {API_CALLS[call]}"


def test_a_failed_job_raises_with_its_message_and_is_kept() -> None:
    api, time = FakeKubernetes([RUNNING, APP_FAILED]), FakeTime()
    with pytest.raises(RayJobFailed, match="orthoseg/orthoseg-train-x failed") as failure:
        submit_rayjob(api, api, _manifest(), _config(), None, time.clock, time.sleep)
    assert "AppFailed" in str(failure.value) and "exit code 1" in str(failure.value)
    assert failure.value.name == "orthoseg-train-x"
    assert api.deleted == []  # kept to look at; KubeRay removes its cluster after the TTL
    api, time = FakeKubernetes([RUNNING, APP_FAILED]), FakeTime()
    with pytest.raises(RayJobFailed):
        submit_rayjob(api, api, _manifest(), _config(delete_finished="always"), None, time.clock, time.sleep)
    assert api.deleted == ["orthoseg-train-x"]


def test_a_job_past_its_deadline_raises_and_stops_being_followed() -> None:
    api, time = FakeKubernetes([{"jobDeploymentStatus": "Initializing"}, RUNNING]), FakeTime()
    config = _config(backoff_limit=1)  # two attempts of 60 s, and 30 s of grace
    with pytest.raises(TimeoutError, match=r"orthoseg/orthoseg-train-x did not end within 150 s") as late:
        submit_rayjob(api, api, _manifest(), config, None, time.clock, time.sleep)
    assert "Running" in str(late.value)
    assert time.now - 1000.0 == pytest.approx(150.0)
    assert max(time.sleeps) <= config.poll_interval_s
    assert api.deleted == []


def test_transient_api_errors_are_read_again_and_a_vanished_job_is_an_error() -> None:
    api, time = FakeKubernetes([RUNNING, ApiException(status=503), SUCCEEDED]), FakeTime()
    assert (
        submit_rayjob(api, api, _manifest(), _config(), None, time.clock, time.sleep).job_status
        == "SUCCEEDED"
    )

    class Vanishing(FakeKubernetes):
        def get_namespaced_custom_object(self, *args: Any) -> Doc:
            self.objects.clear()
            return super().get_namespaced_custom_object(*args)

    api, time = Vanishing([RUNNING]), FakeTime()
    with pytest.raises(RayJobFailed, match="no longer exists"):
        submit_rayjob(api, api, _manifest(), _config(), None, time.clock, time.sleep)
    api, time = FakeKubernetes([ApiException(status=403, reason="Forbidden")]), FakeTime()
    with pytest.raises(ApiException):
        submit_rayjob(api, api, _manifest(), _config(), None, time.clock, time.sleep)


def test_a_job_of_the_same_name_is_followed_or_replaced() -> None:
    """A retried pipeline step passes the same name: a running (or succeeded) job is followed, not started
    twice; one that failed is deleted and started again."""
    existing = {"orthoseg-train-x": _manifest()}
    api, time = FakeKubernetes([RUNNING, SUCCEEDED], existing=existing), FakeTime()
    outcome = submit_rayjob(api, api, _manifest(), _config(), None, time.clock, time.sleep)
    assert outcome.attached and api.created == []

    api, time = FakeKubernetes([APP_FAILED, RUNNING, SUCCEEDED], existing=existing), FakeTime()
    outcome = submit_rayjob(api, api, _manifest(), _config(), None, time.clock, time.sleep)
    assert not outcome.attached
    assert api.created == [_manifest()]
    assert api.deleted == ["orthoseg-train-x", "orthoseg-train-x"]  # the failed one, then this one (success)
