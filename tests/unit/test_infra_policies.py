"""The rendered cluster manifests are locked down: restricted pods, the pseudonym salt from its Secret
wherever settings are read, a Role limited to what the code calls, and ingress denied except for the flows
the system uses. Every overlay is rendered with `kubectl kustomize` (offline) and checked as the cluster
would see it."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
OVERLAYS = sorted(p.parent.name for p in (INFRA / "overlays").glob("*/kustomization.yaml"))

NAMESPACE = "orthoseg"
PART_OF = {"app.kubernetes.io/part-of": "orthoseg"}
KFP_POD = {"pipelines.kubeflow.org/v2_component": "true"}
RAY_CLUSTER = "orthoseg-ray"
PROJECT_IMAGE = "ghcr.io/orthoseg/orthoseg"
CONFIG_MAP = "orthoseg-config"
SALT_SECRET = "orthoseg-pseudonym"
SALT_KEY = "ORTHOSEG_PSEUDONYM_SALT"
KFP_GROUP = "pipelines.kubeflow.org"

Doc = dict[str, Any]


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[Doc]]:
    """One overlay rendered once for the whole module: (overlay name, its documents)."""
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not on PATH: the overlays cannot be rendered")
    overlay = request.param
    result = subprocess.run(
        ["kubectl", "kustomize", str(INFRA / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return overlay, [d for d in yaml.safe_load_all(result.stdout) if d]


def _one(documents: list[Doc], kind: str, name: str) -> Doc:
    (found,) = [d for d in documents if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def _pod_templates(documents: list[Doc]) -> Iterator[tuple[str, Doc]]:
    """(where, pod template) for every workload: the templates the API server or KubeRay makes pods of."""
    for doc in documents:
        kind, name, spec = doc["kind"], doc["metadata"]["name"], doc.get("spec", {})
        if kind in {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}:
            yield f"{kind}/{name}", spec["template"]
        elif kind == "CronJob":
            yield f"{kind}/{name}", spec["jobTemplate"]["spec"]["template"]
        elif kind == "Pod":
            yield f"{kind}/{name}", doc
        elif kind == "RayCluster":
            yield f"{kind}/{name}/head", spec["headGroupSpec"]["template"]
            for group in spec["workerGroupSpecs"]:
                yield f"{kind}/{name}/{group['groupName']}", group["template"]


def _containers(template: Doc) -> list[Doc]:
    spec = template["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


def test_every_workload_is_found(rendered: tuple[str, list[Doc]]) -> None:
    overlay, documents = rendered
    workers = {"gpu": ["gpu", "cpu"], "local-kind": ["cpu"]}.get(overlay)
    where = [w for w, _ in _pod_templates(documents)]
    assert {
        "Deployment/minio",
        "Job/minio-buckets",
        "StatefulSet/postgres",
        "Deployment/mlflow",
        "CronJob/orthoseg-retrain-nightly",
        "CronJob/orthoseg-infer-hourly",
        f"RayCluster/{RAY_CLUSTER}/head",
    } <= set(where)
    if workers is not None:
        assert [
            w.rsplit("/", 1)[1] for w in where if w.startswith("RayCluster/") and "/head" not in w
        ] == workers


def test_every_pod_is_restricted(rendered: tuple[str, list[Doc]]) -> None:
    _, documents = rendered
    for where, template in _pod_templates(documents):
        pod = template["spec"].get("securityContext", {})
        assert pod.get("runAsNonRoot") is True, where
        assert pod.get("seccompProfile") == {"type": "RuntimeDefault"}, where
        # A numeric user: the project image's USER is a name, which the kubelet cannot check as non-root.
        assert isinstance(pod.get("runAsUser"), int) and pod["runAsUser"] > 0, where
        assert template["spec"].get("hostNetwork") is not True, where
        assert template["spec"].get("hostPID") is not True, where
        for container in _containers(template):
            context = container.get("securityContext", {})
            label = f"{where} container {container['name']}"
            assert context.get("allowPrivilegeEscalation") is False, label
            assert context.get("readOnlyRootFilesystem") is True, label
            assert context.get("capabilities") == {"drop": ["ALL"]}, label
            assert context.get("privileged") is not True, label
            assert context.get("runAsUser", 1) != 0, label
            assert context.get("runAsNonRoot", True) is True, label


def test_writable_paths_are_empty_dirs(rendered: tuple[str, list[Doc]]) -> None:
    _, documents = rendered
    claims = {
        f"StatefulSet/{d['metadata']['name']}": {
            c["metadata"]["name"] for c in d["spec"].get("volumeClaimTemplates", [])
        }
        for d in documents
        if d["kind"] == "StatefulSet"
    }
    for where, template in _pod_templates(documents):
        volumes = {v["name"]: v for v in template["spec"].get("volumes", [])}
        volumes.update({name: {"persistentVolumeClaim": name} for name in claims.get(where, ())})
        for container in _containers(template):
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            assert "/tmp" in mounts, f"{where} {container['name']}: no writable /tmp"
            assert "emptyDir" in volumes[mounts["/tmp"]], where
            for name in mounts.values():
                assert name in volumes, f"{where}: mount of undeclared volume {name}"


def test_project_image_runs_as_the_image_user(rendered: tuple[str, list[Doc]]) -> None:
    # The Dockerfile's base image, rayproject/ray, makes `ray` uid 1000 in group `users` (gid 100).
    assert "FROM rayproject/ray:" in (ROOT / "Dockerfile").read_text()
    _, documents = rendered
    checked = 0
    for where, template in _pod_templates(documents):
        if any(c["image"].startswith(PROJECT_IMAGE) for c in _containers(template)):
            pod = template["spec"]["securityContext"]
            assert (pod["runAsUser"], pod["runAsGroup"], pod["fsGroup"]) == (1000, 100, 100), where
            checked += 1
    assert checked >= 5  # mlflow, two CronJobs, Ray head and at least one worker group


def test_ray_autoscaler_and_logs(rendered: tuple[str, list[Doc]]) -> None:
    _, documents = rendered
    spec = _one(documents, "RayCluster", RAY_CLUSTER)["spec"]
    # KubeRay adds the autoscaler container itself: its settings come from autoscalerOptions.
    options = spec["autoscalerOptions"]
    assert options["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert {"name": "tmp", "mountPath": "/tmp"} in options["volumeMounts"]
    # KubeRay shares /tmp/ray between head and autoscaler as volume `ray-logs` and reuses one mounted there.
    head = spec["headGroupSpec"]["template"]
    (ray_head,) = head["spec"]["containers"]
    assert {"name": "ray-logs", "mountPath": "/tmp/ray"} in ray_head["volumeMounts"]
    assert {"name": "ray-logs", "emptyDir": {}} in head["spec"]["volumes"]


def _reads_settings(container: Doc) -> bool:
    env = container.get("env", [])
    env_from = container.get("envFrom", [])
    return any(
        (e.get("valueFrom") or {}).get("configMapKeyRef", {}).get("name") == CONFIG_MAP for e in env
    ) or any((e.get("configMapRef") or {}).get("name") == CONFIG_MAP for e in env_from)


def _salt_source(container: Doc) -> str | None:
    for entry in container.get("env", []):
        if entry["name"] == SALT_KEY:
            ref = (entry.get("valueFrom") or {}).get("secretKeyRef") or {}
            return f"secret {ref.get('name')} key {ref.get('key')}"
    for entry in container.get("envFrom", []):
        if (entry.get("secretRef") or {}).get("name") == SALT_SECRET:
            return f"secret {SALT_SECRET} key {SALT_KEY}"
    return None


def test_settings_readers_get_the_salt_from_its_secret(rendered: tuple[str, list[Doc]]) -> None:
    overlay, documents = rendered
    readers = []
    for where, template in _pod_templates(documents):
        for container in _containers(template):
            if _reads_settings(container):
                readers.append(where)
                assert _salt_source(container) == f"secret {SALT_SECRET} key {SALT_KEY}", where
                # Never a literal: the salt is a secret.
                assert all("value" not in e for e in container.get("env", []) if e["name"] == SALT_KEY)
    groups = _one(documents, "RayCluster", RAY_CLUSTER)["spec"]["workerGroupSpecs"]
    assert len(readers) == 1 + len(groups), readers  # the Ray head and every worker group


def test_secret_example_documents_the_salt() -> None:
    text = (INFRA / "base" / "secrets.example.yaml").read_text()
    example = {d["metadata"]["name"]: d for d in yaml.safe_load_all(text) if d}
    assert set(example[SALT_SECRET]["stringData"]) == {SALT_KEY}
    header = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    assert re.search(rf"create secret generic {SALT_SECRET} \\\n#\s+--from-literal={SALT_KEY}=", header)
    readme = (INFRA / "README.md").read_text()
    assert f"create secret generic {SALT_SECRET}" in readme


def test_pipeline_steps_get_the_salt_from_its_secret(tmp_path: Path) -> None:
    from orthoseg.validation_config import SALT_ENV
    from pipelines.compile import compile_pipelines
    from pipelines.definitions import SALT_KEY as DEFINITIONS_SALT_KEY
    from pipelines.definitions import SALT_SECRET as DEFINITIONS_SALT_SECRET

    assert (DEFINITIONS_SALT_SECRET, DEFINITIONS_SALT_KEY) == (SALT_SECRET, SALT_ENV)
    assert SALT_KEY == SALT_ENV
    for name, path in compile_pipelines(tmp_path).items():
        spec, platform = yaml.safe_load_all(Path(path).read_text())
        executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
        assert set(executors) == set(spec["deploymentSpec"]["executors"]), name
        for executor, config in executors.items():
            salts = [s for s in config.get("secretAsEnv", []) if s["secretName"] == SALT_SECRET]
            assert len(salts) == 1, f"{name} {executor}"
            assert salts[0]["keyToEnv"] == [{"secretKey": SALT_KEY, "envVar": SALT_KEY}]
            assert salts[0].get("optional", False) is False  # a missing Secret stops the step


def _code_calls_ray_api() -> bool:
    """Whether any code creates or reads KubeRay objects through the Kubernetes API."""
    pattern = re.compile(r"CustomObjectsApi|\bRayJob\b|\brayjobs\b|\brayclusters\b|ray\.io/v1")
    sources = [*(ROOT / "src").rglob("*.py"), *(ROOT / "pipelines").rglob("*.py")]
    sources += list((ROOT / "components").rglob("*.py"))
    return any(pattern.search(path.read_text()) for path in sources)


def test_role_grants_what_the_code_calls(rendered: tuple[str, list[Doc]]) -> None:
    _, documents = rendered
    rules = _one(documents, "Role", "orthoseg-pipeline")["rules"]
    for rule in rules:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"]
        if "secrets" in rule["resources"]:
            assert rule.get("resourceNames"), "no blanket read of the namespace's Secrets"
            assert set(rule["verbs"]) == {"get"}
    ray_rules = [r for r in rules if "ray.io" in r["apiGroups"]]
    if not _code_calls_ray_api():
        assert ray_rules == []
    granted: dict[str, set[str]] = {}
    for rule in rules:
        if KFP_GROUP in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault(resource, set()).update(rule["verbs"])
    # KFP's API server authorises recurring runs as resource `jobs` (common.RbacResourceTypeJobs).
    assert "recurringruns" not in granted
    assert granted["jobs"] >= {"create", "get", "list", "delete"}
    assert granted["runs"] >= {"create", "get", "list"}
    for resource in ("pipelines", "pipelines/versions", "experiments"):
        assert granted[resource] >= {"create", "get", "list"}, resource
    assert set(granted) == {"pipelines", "pipelines/versions", "experiments", "runs", "jobs"}
    binding = _one(documents, "RoleBinding", "orthoseg-pipeline")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "orthoseg-pipeline",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "orthoseg-pipeline", "namespace": NAMESPACE}
    ]


def _policies(documents: list[Doc]) -> dict[str, Doc]:
    return {d["metadata"]["name"]: d["spec"] for d in documents if d["kind"] == "NetworkPolicy"}


def _selects(selector: Doc, labels: dict[str, str]) -> bool:
    """A Kubernetes label selector applied to one pod's labels."""
    if not all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        matched = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[operator]
        if not matched:
            return False
    return True


def test_ingress_is_denied_by_default(rendered: tuple[str, list[Doc]]) -> None:
    _, documents = rendered
    deny = [p for p in _policies(documents).values() if p["podSelector"] == {}]
    assert deny == [{"podSelector": {}, "policyTypes": ["Ingress"]}]


def test_postgres_admits_only_mlflow(rendered: tuple[str, list[Doc]]) -> None:
    _, documents = rendered
    policies = _policies(documents)
    postgres_labels = _one(documents, "StatefulSet", "postgres")["spec"]["template"]["metadata"]["labels"]
    selecting = [
        n for n, p in policies.items() if p["podSelector"] and _selects(p["podSelector"], postgres_labels)
    ]
    assert selecting == ["postgres"]
    mlflow_labels = _one(documents, "Deployment", "mlflow")["spec"]["template"]["metadata"]["labels"]
    assert policies["postgres"]["ingress"] == [
        {
            "from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "mlflow"}}}],
            "ports": [{"protocol": "TCP", "port": 5432}],
        }
    ]
    assert _selects({"matchLabels": {"app.kubernetes.io/name": "mlflow"}}, mlflow_labels)
    for where, template in _pod_templates(documents):
        if "mlflow" not in where:
            assert not _selects(
                {"matchLabels": {"app.kubernetes.io/name": "mlflow"}}, template["metadata"].get("labels", {})
            ), where


def test_minio_admits_orthoseg_and_pipeline_pods(rendered: tuple[str, list[Doc]]) -> None:
    _, documents = rendered
    minio = _policies(documents)["minio"]
    assert _selects(
        minio["podSelector"], _one(documents, "Deployment", "minio")["spec"]["template"]["metadata"]["labels"]
    )
    assert minio["ingress"] == [
        {
            "from": [{"podSelector": {"matchLabels": PART_OF}}, {"podSelector": {"matchLabels": KFP_POD}}],
            "ports": [{"protocol": "TCP", "port": 9000}],
        }
    ]
    # The label the policy admits by reaches every pod template, the RayCluster's included.
    for where, template in _pod_templates(documents):
        assert _selects({"matchLabels": PART_OF}, template["metadata"].get("labels", {})), where


def test_ray_pods_admit_their_cluster_and_pipeline_clients(rendered: tuple[str, list[Doc]]) -> None:
    _, documents = rendered
    policies = _policies(documents)
    same_cluster = {"podSelector": {"matchLabels": {"ray.io/cluster": RAY_CLUSTER}}}
    head, workers = policies["orthoseg-ray-head"], policies["orthoseg-ray-workers"]
    assert head["podSelector"] == {"matchLabels": {"ray.io/cluster": RAY_CLUSTER, "ray.io/node-type": "head"}}
    assert workers["podSelector"] == {
        "matchLabels": {"ray.io/cluster": RAY_CLUSTER, "ray.io/node-type": "worker"}
    }
    assert head["ingress"] == [
        {"from": [same_cluster]},
        {"from": [{"podSelector": {"matchLabels": KFP_POD}}], "ports": [{"protocol": "TCP", "port": 10001}]},
    ]
    assert workers["ingress"] == [{"from": [same_cluster]}]
    # The Ray Client port the policy opens is the one the head listens on and the settings point at.
    (ray_head,) = _one(documents, "RayCluster", RAY_CLUSTER)["spec"]["headGroupSpec"]["template"]["spec"][
        "containers"
    ]
    assert {"name": "client", "containerPort": 10001} in ray_head["ports"]
    address = _one(documents, "ConfigMap", CONFIG_MAP)["data"]["ORTHOSEG_RAY_ADDRESS"]
    assert address.endswith(":10001")


def test_mlflow_admits_the_namespace(rendered: tuple[str, list[Doc]]) -> None:
    _, documents = rendered
    assert _policies(documents)["mlflow"]["ingress"] == [
        {"from": [{"podSelector": {}}], "ports": [{"protocol": "TCP", "port": 5000}]}
    ]
    for spec in _policies(documents).values():
        for rule in spec.get("ingress", []):
            for peer in rule.get("from", []):
                assert "ipBlock" not in peer  # no traffic from outside the cluster
