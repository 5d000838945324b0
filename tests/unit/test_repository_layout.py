"""The repository's non-Python deliverables stay well-formed: infra/ manifests, mlflow/, Dockerfile."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
MLFLOW_DIR = ROOT / "mlflow"
DOCKERFILE = ROOT / "Dockerfile"
SERVER_SH = MLFLOW_DIR / "server.sh"

YAML_FILES = sorted([*INFRA.rglob("*.yaml"), *INFRA.rglob("*.yml")])
KUSTOMIZATIONS = sorted(INFRA.rglob("kustomization.yaml"))
OVERLAYS = sorted(p.parent for p in KUSTOMIZATIONS if p.parent.parent.name == "overlays")


@pytest.mark.parametrize("folder", [MLFLOW_DIR, INFRA], ids=lambda p: p.name)
def test_no_python_under_non_package_folders(folder: Path) -> None:
    # mlflow/ as a package would shadow the real `mlflow`; infra/ is manifests only.
    assert folder.is_dir()
    assert sorted(p.relative_to(ROOT) for p in folder.rglob("*.py")) == []
    assert not (folder / "__init__.py").exists()


def test_infra_has_base_and_overlays() -> None:
    assert (INFRA / "base" / "kustomization.yaml").is_file()
    assert {p.name for p in OVERLAYS} >= {"gpu", "local-kind"}


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(INFRA)))
def test_every_yaml_parses(path: Path) -> None:
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert documents, f"{path} holds no YAML document"
    for document in documents:
        assert isinstance(document, (dict, list))


def _references(kustomization: dict) -> list[str]:
    refs = list(kustomization.get("resources") or [])
    for patch in kustomization.get("patches") or []:
        if isinstance(patch, dict) and "path" in patch:
            refs.append(patch["path"])
    refs.extend(kustomization.get("patchesStrategicMerge") or [])
    return refs


@pytest.mark.parametrize("path", KUSTOMIZATIONS, ids=lambda p: str(p.parent.relative_to(INFRA)))
def test_kustomization_references_exist(path: Path) -> None:
    kustomization = yaml.safe_load(path.read_text())
    refs = _references(kustomization)
    assert refs
    for ref in refs:
        target = (path.parent / ref).resolve()
        assert target.exists(), f"{path.relative_to(ROOT)} lists missing {ref}"
        if target.is_dir():
            assert (target / "kustomization.yaml").is_file(), f"{ref} is not a kustomization"


def test_base_kustomization_namespace_and_secrets() -> None:
    base = yaml.safe_load((INFRA / "base" / "kustomization.yaml").read_text())
    assert base["namespace"] == "orthoseg"
    # Secrets are created with kubectl, never applied from the repository.
    assert "secrets.example.yaml" not in base["resources"]
    for path in YAML_FILES:
        if path.name == "secrets.example.yaml":
            continue
        for document in yaml.safe_load_all(path.read_text()):
            assert not (isinstance(document, dict) and document.get("kind") == "Secret"), path


def test_configmap_matches_pipeline_keys() -> None:
    from pipelines.definitions import CONFIG_KEYS, CONFIG_MAP, S3_SECRET

    configmap = yaml.safe_load((INFRA / "base" / "configmap.yaml").read_text())
    assert configmap["metadata"]["name"] == CONFIG_MAP
    assert set(configmap["data"]) == set(CONFIG_KEYS)
    example = list(yaml.safe_load_all((INFRA / "base" / "secrets.example.yaml").read_text()))
    s3 = next(d for d in example if d["metadata"]["name"] == S3_SECRET)
    assert set(s3["stringData"]) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_overlay_renders(overlay: Path) -> None:
    result = subprocess.run(
        ["kubectl", "kustomize", str(overlay)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    documents = list(yaml.safe_load_all(result.stdout))
    assert all(d["metadata"].get("namespace") == "orthoseg" for d in documents if d["kind"] != "Namespace")
    (ray,) = [d for d in documents if d["kind"] == "RayCluster"]
    groups = {g["groupName"]: g for g in ray["spec"]["workerGroupSpecs"]}
    if overlay.name == "gpu":
        image = groups["gpu"]["template"]["spec"]["containers"][0]["image"]
        assert image.endswith("-gpu")
    if overlay.name == "local-kind":
        assert "gpu" not in groups


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]


def test_dockerfile_installs_project_without_runtime_pip() -> None:
    instructions = _dockerfile_instructions()
    runs = [arg for op, arg in instructions if op == "RUN"]
    assert any(re.search(r"pip install\b[^;&]*\s\.(\s|$)", run) for run in runs), "project not installed"
    assert any(op == "FROM" and "rayproject/ray:" in arg for op, arg in instructions)
    # Non-root at run time; no pip when a container starts; no credentials baked in.
    users = [arg for op, arg in instructions if op == "USER"]
    assert users and users[-1] not in {"root", "0", "0:0"}
    # By number: Kubernetes can only check runAsNonRoot for a numeric user (infra/ pins 1000:100 too).
    assert re.fullmatch(r"[1-9]\d*:\d+", users[-1]), users[-1]
    for op, arg in instructions:
        if op in {"CMD", "ENTRYPOINT"}:
            assert "pip" not in arg
        if op in {"ENV", "ARG"}:
            assert not re.search(r"(SECRET|PASSWORD|ACCESS_KEY|TOKEN)", arg, re.IGNORECASE), arg
    assert (ROOT / ".dockerignore").is_file()
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".orthoseg", ".git"} <= set(ignored)


def test_components_rely_on_the_image() -> None:
    # Everything a step needs is in the image; KFP must not pip-install at run time.
    for path in sorted((ROOT / "components").rglob("*.py")):
        source = path.read_text()
        assert "packages_to_install" not in source, path
        for decorator in re.findall(r"@dsl\.component\(([^)]*)\)", source):
            assert "install_kfp_package=False" in decorator, path


def test_mlflow_server_script() -> None:
    assert SERVER_SH.is_file()
    assert os.access(SERVER_SH, os.X_OK), "mlflow/server.sh must be executable"
    text = SERVER_SH.read_text()
    assert text.startswith("#!")
    assert "set -euo pipefail" in text
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    result = subprocess.run(
        [str(SERVER_SH)], capture_output=True, text=True, env=env, timeout=30, check=False
    )
    assert result.returncode != 0
    assert "MLFLOW_BACKEND_STORE_URI" in result.stderr
    assert "MLFLOW_ARTIFACTS_DESTINATION" in result.stderr
