"""Compile the pipelines to KFP IR YAML for a Kubeflow Pipelines cluster."""

from __future__ import annotations

from pathlib import Path

from kfp import compiler

from pipelines.definitions import inference_pipeline, training_pipeline


def compile_pipelines(out_dir: Path) -> dict[str, str]:
    """Write ``training.yaml`` and ``inference.yaml`` into ``out_dir``; returns name -> path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, pipeline in (("training", training_pipeline), ("inference", inference_pipeline)):
        path = out_dir / f"{name}.yaml"
        compiler.Compiler().compile(pipeline_func=pipeline, package_path=str(path))
        written[name] = str(path)
    return written
