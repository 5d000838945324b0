"""Every step of the compiled pipelines carries its configured CPU, memory, GPUs, retries, deadline,
caching and placement (offline: the compiled KFP IR, no cluster)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from orthoseg.pipeline_config import PipelineConfig
from orthoseg.settings import Settings

Doc = dict[str, Any]

# (cpu request, cpu limit, memory request, memory limit) of each executor with the default settings.
DEFAULT_RESOURCES = {
    "exec-validate-op": ("1", "2", "2Gi", "4Gi"),
    "exec-retrain-gate-op": ("500m", "1", "1Gi", "2Gi"),
    "exec-retrain-skipped-op": ("100m", "500m", "256Mi", "512Mi"),
    "exec-train-op": ("1", "2", "2Gi", "4Gi"),
    "exec-evaluate-op": ("2", "4", "4Gi", "8Gi"),
    "exec-quality-gate-op": ("100m", "500m", "256Mi", "512Mi"),
    "exec-register-op": ("500m", "1", "1Gi", "2Gi"),
    "exec-promote-op": ("2", "4", "4Gi", "8Gi"),
    "exec-infer-op": ("1", "2", "2Gi", "4Gi"),
}
PIPELINE_EXECUTORS = {
    "training": set(DEFAULT_RESOURCES) - {"exec-infer-op"},
    "inference": {"exec-validate-op", "exec-infer-op"},
}
# (retries, first wait, factor, retry window): the window is every attempt's deadline plus the waits.
DEFAULT_RETRIES = {
    "exec-validate-op": (2, "30s", 2.0, f"{3 * 14400 + 30 + 60}s"),
    "exec-retrain-gate-op": (2, "30s", 2.0, f"{3 * 1800 + 30 + 60}s"),
    "exec-train-op": (1, "300s", 2.0, f"{2 * 86400 + 300}s"),
    "exec-evaluate-op": (2, "60s", 2.0, f"{3 * 14400 + 60 + 120}s"),
    "exec-register-op": (2, "30s", 2.0, f"{3 * 1800 + 30 + 60}s"),
    "exec-promote-op": (2, "60s", 2.0, f"{3 * 14400 + 60 + 120}s"),
    "exec-infer-op": (2, "60s", 2.0, f"{3 * 43200 + 60 + 120}s"),
}
DEFAULT_DEADLINES = {
    "exec-validate-op": "14400",
    "exec-retrain-gate-op": "1800",
    "exec-retrain-skipped-op": "600",
    "exec-train-op": "86400",
    "exec-evaluate-op": "14400",
    "exec-quality-gate-op": "600",
    "exec-register-op": "1800",
    "exec-promote-op": "14400",
    "exec-infer-op": "43200",
}
# Only pure functions of their inputs may be answered from KFP's cache.
CACHED = {"exec-retrain-skipped-op", "exec-quality-gate-op"}


@pytest.fixture(autouse=True)
def _no_pipeline_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The defaults, whatever the caller's shell sets."""
    for name in list(os.environ):
        if name.upper().startswith("ORTHOSEG_PIPELINE"):
            monkeypatch.delenv(name)


def _compiled(folder: Path, config: PipelineConfig | None = None) -> dict[str, tuple[Doc, Doc]]:
    """Both pipelines as the project compiles them: name -> (pipeline spec, platform spec)."""
    from pipelines.compile import compile_pipelines

    documents = {}
    for name, path in compile_pipelines(folder, config).items():
        spec, platform = yaml.safe_load_all(Path(path).read_text())
        documents[name] = (spec, platform)
    return documents


def _tasks(spec: Doc) -> dict[str, Doc]:
    """Every container task of every DAG (the root and the condition branches), by executor."""
    components = spec["components"]
    dags = [spec["root"]["dag"], *(c["dag"] for c in components.values() if "dag" in c)]
    tasks = {}
    for dag in dags:
        for task in dag["tasks"].values():
            component = components[task["componentRef"]["name"]]
            if "executorLabel" in component:
                tasks[component["executorLabel"]] = task
    return tasks


def _resources(spec: Doc) -> dict[str, Doc]:
    return {
        name: e["container"].get("resources", {}) for name, e in spec["deploymentSpec"]["executors"].items()
    }


def _platform(platform: Doc) -> dict[str, Doc]:
    return platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def test_every_executor_has_its_cpu_and_memory(tmp_path: Path) -> None:
    for name, (spec, _) in _compiled(tmp_path).items():
        resources = _resources(spec)
        assert set(resources) == PIPELINE_EXECUTORS[name]
        for executor, got in resources.items():
            cpu_request, cpu_limit, memory_request, memory_limit = DEFAULT_RESOURCES[executor]
            assert got["resourceCpuRequest"] == cpu_request, executor
            assert got["resourceCpuLimit"] == cpu_limit, executor
            assert got["resourceMemoryRequest"] == memory_request, executor
            assert got["resourceMemoryLimit"] == memory_limit, executor
            # Training and inference hand their GPU work to the Ray cluster; no step asks for one.
            assert "accelerator" not in got, executor


def test_retries_only_on_steps_that_may_fail_transiently_and_can_rerun(tmp_path: Path) -> None:
    for name, (spec, _) in _compiled(tmp_path).items():
        tasks = _tasks(spec)
        assert set(tasks) == PIPELINE_EXECUTORS[name]
        for executor, task in tasks.items():
            policy = task.get("retryPolicy")
            if executor not in DEFAULT_RETRIES:
                assert policy is None, executor
                continue
            retries, backoff, factor, window = DEFAULT_RETRIES[executor]
            assert policy == {
                "maxRetryCount": retries,
                "backoffDuration": backoff,
                "backoffFactor": factor,
                "backoffMaxDuration": window,
            }, executor
    assert {"exec-retrain-skipped-op", "exec-quality-gate-op"}.isdisjoint(DEFAULT_RETRIES)


def test_only_pure_steps_are_cached(tmp_path: Path) -> None:
    for name, (spec, _) in _compiled(tmp_path).items():
        for executor, task in _tasks(spec).items():
            cached = task.get("cachingOptions", {}).get("enableCache", False)
            assert cached is (executor in CACHED), f"{name} {executor}"


def test_every_pod_has_a_deadline_and_no_placement_by_default(tmp_path: Path) -> None:
    for name, (_, platform) in _compiled(tmp_path).items():
        executors = _platform(platform)
        assert set(executors) == PIPELINE_EXECUTORS[name]
        for executor, config in executors.items():
            assert config["activeDeadlineSeconds"] == DEFAULT_DEADLINES[executor], executor
            assert "nodeSelector" not in config, executor
            assert "tolerations" not in config, executor
            assert config["configMapAsEnv"][0]["configMapName"] == "orthoseg-config", executor


def test_environment_changes_the_compiled_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORTHOSEG_PIPELINE__TRAINING__CPU_REQUEST", "3")
    monkeypatch.setenv("ORTHOSEG_PIPELINE__TRAINING__CPU_LIMIT", "6")
    monkeypatch.setenv("ORTHOSEG_PIPELINE__TRAINING__MEMORY_LIMIT", "16Gi")
    monkeypatch.setenv("ORTHOSEG_PIPELINE__EVALUATION__GPUS", "1")
    monkeypatch.setenv("ORTHOSEG_PIPELINE__GPU_ACCELERATOR_TYPE", "amd.com/gpu")
    monkeypatch.setenv("ORTHOSEG_PIPELINE__REGISTRATION__RETRIES", "0")
    monkeypatch.setenv("ORTHOSEG_PIPELINE__QUALITY_GATE__RETRIES", "3")
    monkeypatch.setenv("ORTHOSEG_PIPELINE__QUALITY_GATE__RETRY_WINDOW_S", "900")
    monkeypatch.setenv("ORTHOSEG_PIPELINE__INFERENCE__TIMEOUT_S", "600")
    monkeypatch.setenv("ORTHOSEG_PIPELINE__NODE_SELECTOR", '{"pool": "ml", "zone": "a"}')
    monkeypatch.setenv(
        "ORTHOSEG_PIPELINE__TOLERATIONS",
        '[{"key": "dedicated", "value": "ml", "effect": "NoSchedule"}, {"operator": "Exists"}]',
    )
    compiled = _compiled(tmp_path)

    training, training_platform = compiled["training"]
    resources = _resources(training)
    train = resources["exec-train-op"]
    assert (train["resourceCpuRequest"], train["resourceCpuLimit"]) == ("3", "6")
    # One field given: the step's other defaults stay (not the generic ones).
    assert (train["resourceMemoryRequest"], train["resourceMemoryLimit"]) == ("2Gi", "16Gi")
    assert resources["exec-evaluate-op"]["accelerator"] == {
        "count": "1",
        "resourceCount": "1",
        "resourceType": "amd.com/gpu",
        "type": "amd.com/gpu",
    }
    assert "accelerator" not in train
    assert resources["exec-validate-op"]["resourceCpuLimit"] == "2"
    tasks = _tasks(training)
    assert tasks["exec-train-op"]["retryPolicy"]["maxRetryCount"] == 1
    assert tasks["exec-train-op"]["retryPolicy"]["backoffDuration"] == "300s"
    assert "retryPolicy" not in tasks["exec-register-op"]
    assert tasks["exec-quality-gate-op"]["retryPolicy"] == {
        "maxRetryCount": 3,
        "backoffDuration": "30s",
        "backoffFactor": 2.0,
        "backoffMaxDuration": "900s",
    }

    inference, inference_platform = compiled["inference"]
    assert _platform(inference_platform)["exec-infer-op"]["activeDeadlineSeconds"] == "600"
    assert _tasks(inference)["exec-infer-op"]["retryPolicy"]["backoffMaxDuration"] == f"{3 * 600 + 180}s"
    for platform in (training_platform, inference_platform):
        for executor, config in _platform(platform).items():
            assert config["nodeSelector"] == {"labels": {"pool": "ml", "zone": "a"}}, executor
            assert config["tolerations"] == [
                {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"},
                {"operator": "Exists"},
            ], executor


def test_an_explicit_config_wins_over_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORTHOSEG_PIPELINE__VALIDATION__MEMORY_LIMIT", "8Gi")
    config = PipelineConfig(validation={"memory_limit": "6Gi", "retries": 0})
    spec, _ = _compiled(tmp_path, config)["inference"]
    assert _resources(spec)["exec-validate-op"]["resourceMemoryLimit"] == "6Gi"
    assert _resources(spec)["exec-validate-op"]["resourceMemoryRequest"] == "2Gi"
    assert "retryPolicy" not in _tasks(spec)["exec-validate-op"]


def test_local_graph_is_the_same_graph_without_cluster_sizing(tmp_path: Path) -> None:
    """kfp.local runs the unsized graph: it would honour retries by sleeping on this machine."""
    from kfp import compiler

    from pipelines.definitions import inference_pipeline, training_pipeline

    cluster = _compiled(tmp_path / "cluster")
    for name, pipeline in (("training", training_pipeline), ("inference", inference_pipeline)):
        path = tmp_path / f"local-{name}.yaml"
        compiler.Compiler().compile(pipeline_func=pipeline, package_path=str(path))
        spec, platform = yaml.safe_load_all(path.read_text())
        assert set(_resources(spec)) == PIPELINE_EXECUTORS[name]
        assert all(not resources for resources in _resources(spec).values())
        tasks = _tasks(spec)
        assert all("retryPolicy" not in task for task in tasks.values())
        assert all("activeDeadlineSeconds" not in config for config in _platform(platform).values())
        cached = {e for e, t in tasks.items() if t.get("cachingOptions", {}).get("enableCache")}
        assert cached == CACHED & PIPELINE_EXECUTORS[name]
        cluster_spec, _ = cluster[name]
        assert spec["root"]["dag"]["tasks"].keys() == cluster_spec["root"]["dag"]["tasks"].keys()
        assert spec["components"].keys() == cluster_spec["components"].keys()


@pytest.mark.parametrize(
    ("step", "match"),
    [
        ({"cpu_request": "4", "cpu_limit": "2"}, "cpu_request=4 is larger than cpu_limit=2"),
        ({"memory_request": "8Gi", "memory_limit": "4096Mi"}, "memory_request=8Gi is larger"),
        ({"memory_limit": "4GB"}, "memory_limit"),
        ({"cpu_limit": "two"}, "cpu_limit"),
        ({"retries": 1, "timeout_s": None}, "retries need timeout_s or retry_window_s"),
        ({"gpus": -1}, "gpus"),
    ],
)
def test_bad_step_settings_fail_when_loaded(step: dict[str, Any], match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        Settings(pipeline={"training": step})


def test_unknown_steps_and_fields_are_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="extra"):
        Settings(pipeline={"trainer": {"cpu_limit": "2"}})
    monkeypatch.setenv("ORTHOSEG_PIPELINE__TRAINING__CPUS", "2")
    with pytest.raises(ValidationError, match="cpus"):
        Settings()
    with pytest.raises(KeyError, match="unknown pipeline step"):
        PipelineConfig().step("trainer")
