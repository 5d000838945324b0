"""The two pipelines, built from ``components``; the same graph runs under kfp.local and on Kubeflow."""

# No `from __future__ import annotations`: KFP reads the real annotation objects.

from typing import NamedTuple

from kfp import dsl, kubernetes

from components.steps import (
    evaluate_op,
    infer_op,
    promote_op,
    quality_gate_op,
    register_op,
    train_op,
    validate_op,
)

# On a cluster, every step reads ORTHOSEG_* from this ConfigMap and S3 credentials from this Secret
# (infra/ creates both); kfp.local ignores these and steps inherit the caller's environment.
CONFIG_MAP = "orthoseg-config"
S3_SECRET = "orthoseg-s3"
CONFIG_KEYS = ("ORTHOSEG_STORE", "ORTHOSEG_S3_ENDPOINT_URL", "ORTHOSEG_MLFLOW_URI", "ORTHOSEG_RAY_ADDRESS")


def _with_cluster_environment(task: dsl.PipelineTask) -> dsl.PipelineTask:
    kubernetes.use_config_map_as_env(
        task, config_map_name=CONFIG_MAP, config_map_key_to_env={k: k for k in CONFIG_KEYS}
    )
    kubernetes.use_secret_as_env(
        task,
        secret_name=S3_SECRET,
        secret_key_to_env={
            "AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY",
        },
    )
    return task


class TrainingOutputs(NamedTuple):
    validation: dict
    training: dict
    evaluation: dict
    registered: dict


class InferenceOutputs(NamedTuple):
    validation: dict
    inference: dict


@dsl.pipeline(
    name="orthoseg-training",
    description="Validate a new batch, train on the resulting dataset version, evaluate, register, and "
    "promote the model to @champion when it clears the quality floor and beats the current champion.",
)
def training_pipeline(
    source: str, batch: str, settings_overrides: dict, min_dice: float = 0.0
) -> TrainingOutputs:
    validation = validate_op(
        source=source, batch=batch, purpose="training", settings_overrides=settings_overrides
    )
    training = train_op(validation=validation.output, settings_overrides=settings_overrides)
    evaluation = evaluate_op(training=training.output, settings_overrides=settings_overrides)
    registered = register_op(
        training=training.output, evaluation=evaluation.output, settings_overrides=settings_overrides
    )
    gate = quality_gate_op(evaluation=evaluation.output, min_dice=min_dice)
    with dsl.If(gate.output == True, "quality-floor-cleared"):  # noqa: E712 (KFP condition syntax)
        promotion = promote_op(registered=registered.output, settings_overrides=settings_overrides)
    for task in (validation, training, evaluation, registered, gate, promotion):
        task.set_caching_options(False)
        _with_cluster_environment(task)
    return TrainingOutputs(
        validation=validation.output,
        training=training.output,
        evaluation=evaluation.output,
        registered=registered.output,
    )


@dsl.pipeline(
    name="orthoseg-inference",
    description="Validate a batch for inference (PHI allowed, never logged) and segment and measure "
    "every accepted radiograph with the @champion model.",
)
def inference_pipeline(
    source: str, batch: str, settings_overrides: dict, model_ref: str = "champion"
) -> InferenceOutputs:
    validation = validate_op(
        source=source, batch=batch, purpose="inference", settings_overrides=settings_overrides
    )
    inference = infer_op(
        validation=validation.output, model_ref=model_ref, settings_overrides=settings_overrides
    )
    for task in (validation, inference):
        task.set_caching_options(False)
        _with_cluster_environment(task)
    return InferenceOutputs(validation=validation.output, inference=inference.output)
