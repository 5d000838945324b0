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
    settings: Settings, source: str, batch: str, min_dice: float = 0.0, force: bool = False
) -> dict[str, Any]:
    """Run validate → retrain gate → (train → evaluate → register → promote) locally; returns what the
    run produced, with ``retrain`` saying whether it trained and why.

    Training runs only when enough annotated images arrived since the champion's dataset version
    (``promotion.retrain_min_new_images``) or ``force``; otherwise ``training``, ``evaluation`` and
    ``registered`` hold ``{"skipped": true, "reason": ...}``.
    """
    _init_local(settings)
    source_uri = source if "://" in source else str(Path(source).resolve())
    run = training_pipeline(
        source=source_uri,
        batch=batch,
        settings_overrides=settings_payload(settings),
        min_dice=min_dice,
        force=force,
    )
    outputs = dict(run.outputs)
    summary = retrain_summary(outputs)
    logger.info("Training pipeline: %s", summary)
    return {"pipeline": "training", "source": source_uri, "batch": batch, "retrain": summary, **outputs}


def trained(outputs: dict[str, Any]) -> bool:
    """Whether a training pipeline run trained a model (its retrain gate let it)."""
    return not outputs["training"].get("skipped", False)


def retrain_summary(outputs: dict[str, Any]) -> str:
    """The retrain gate's decision in one line: ``trained: N new annotated images ≥ threshold T; ...``
    or ``skipped: <why>``."""
    decision = outputs["decision"]
    if not trained(outputs):
        return f"skipped: {decision['reason']}"
    count, threshold = int(float(decision["new_annotated_images"])), int(float(decision["threshold"]))
    comparison = "<" if count < threshold else "≥"
    forced = " (forced)" if decision.get("forced") else ""
    since = (
        f"since champion v{decision['champion_version']}"
        if decision.get("champion_version")
        else "(no champion)"
    )
    start = decision.get("warm_start_reason", "")
    version = outputs["registered"].get("version")
    return (
        f"trained{forced}: {count} new annotated images {since} {comparison} threshold {threshold}; "
        f"{start}; registered version {version}"
    )


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
