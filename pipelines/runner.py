"""Run the pipelines on one machine with ``kfp.local`` (subprocesses in the current environment)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from kfp import local

from orthoseg.settings import Settings
from pipelines.definitions import inference_pipeline, training_pipeline

logger = logging.getLogger(__name__)


def _init_local(settings: Settings) -> None:
    root = Path(settings.work_dir).resolve() / "kfp"
    root.mkdir(parents=True, exist_ok=True)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True)


def settings_payload(settings: Settings) -> dict[str, Any]:
    """The settings as the pipelines' ``settings_overrides`` parameter (paths made absolute).

    Secrets are left out: pipeline parameters are stored in plain text, so steps read secrets from
    their environment (inherited locally, a Kubernetes Secret on a cluster).
    """
    payload = settings.model_dump(mode="json", exclude={"pseudonym_salt"}, exclude_none=True)
    for key in ("store", "work_dir"):
        value = str(payload[key])
        if "://" not in value:
            payload[key] = str(Path(value).resolve())
    policy = Path(payload["promotion"]["policy_path"])
    if not policy.is_absolute() and policy.is_file():  # else the step finds it in the source checkout
        payload["promotion"]["policy_path"] = str(policy.resolve())
    uri = str(payload["mlflow_uri"])
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        payload["mlflow_uri"] = "sqlite:///" + str(Path(uri[len("sqlite:///") :]).resolve())
    return payload


def run_training_pipeline(
    settings: Settings, source: str, batch: str, min_dice: float = 0.0
) -> dict[str, Any]:
    """Run validate → train → evaluate → register → promote locally; returns what the run produced."""
    _init_local(settings)
    source_uri = source if "://" in source else str(Path(source).resolve())
    run = training_pipeline(
        source=source_uri, batch=batch, settings_overrides=settings_payload(settings), min_dice=min_dice
    )
    return {"pipeline": "training", "source": source_uri, "batch": batch, **dict(run.outputs)}


def run_inference_pipeline(
    settings: Settings, source: str, batch: str = "inference", model_ref: str = "champion"
) -> dict[str, Any]:
    """Run validate (inference) → infer locally."""
    _init_local(settings)
    source_uri = source if "://" in source else str(Path(source).resolve())
    run = inference_pipeline(
        source=source_uri, batch=batch, settings_overrides=settings_payload(settings), model_ref=model_ref
    )
    return {
        "pipeline": "inference",
        "source": source_uri,
        "batch": batch,
        "model_ref": model_ref,
        **dict(run.outputs),
    }
