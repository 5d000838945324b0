"""Compile the pipelines to KFP IR YAML for a Kubeflow Pipelines cluster."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from kfp import compiler

from pipelines.definitions import pipelines_for

if TYPE_CHECKING:
    from kfp.dsl.base_component import BaseComponent

    from orthoseg.pipeline_config import PipelineConfig


def cluster_pipelines(config: PipelineConfig | None = None) -> dict[str, BaseComponent]:
    """Both pipelines sized for the cluster: each step's resources, retries, deadline and placement from
    ``config``, default ``Settings().pipeline`` (``ORTHOSEG_PIPELINE__*``)."""
    if config is None:
        from orthoseg.settings import Settings

        config = Settings().pipeline
    return pipelines_for(config)


def compile_pipelines(out_dir: Path, config: PipelineConfig | None = None) -> dict[str, str]:
    """Write ``training.yaml`` and ``inference.yaml`` into ``out_dir``, sized with ``config`` (default
    ``Settings().pipeline``); returns name -> path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, pipeline in cluster_pipelines(config).items():
        path = out_dir / f"{name}.yaml"
        compiler.Compiler().compile(pipeline_func=pipeline, package_path=str(path))
        written[name] = str(path)
    return written
