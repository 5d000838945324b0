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
    retrain_gate_op,
    retrain_skipped_op,
    train_op,
    validate_op,
)

# On a cluster, every step reads ORTHOSEG_* from this ConfigMap, S3 credentials from one Secret and the
# pseudonym salt from another (infra/ documents both Secrets); kfp.local ignores these and steps inherit
# the caller's environment.
CONFIG_MAP = "orthoseg-config"
S3_SECRET = "orthoseg-s3"
SALT_SECRET = "orthoseg-pseudonym"
SALT_KEY = "ORTHOSEG_PSEUDONYM_SALT"
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
    kubernetes.use_secret_as_env(task, secret_name=SALT_SECRET, secret_key_to_env={SALT_KEY: SALT_KEY})
    return task


class TrainingOutputs(NamedTuple):
    """Present whether the run trained or not: when the retrain gate skipped training, ``training``,
    ``evaluation`` and ``registered`` are ``{"skipped": true, "reason": ...}``."""

    validation: dict
    decision: dict
    training: dict
    evaluation: dict
    registered: dict


class InferenceOutputs(NamedTuple):
    validation: dict
    inference: dict


@dsl.pipeline(
    name="orthoseg-training",
    description="Validate a new batch; when enough annotated images arrived since the champion's dataset "
    "version (or when forced), train on the resulting dataset version (from the champion's weights when "
    "its architecture matches), evaluate, register, and promote the model to @champion when it clears "
    "the quality floor and beats the current champion; otherwise record why it did not train.",
)
def training_pipeline(
    source: str, batch: str, settings_overrides: dict, min_dice: float = 0.0, force: bool = False
) -> TrainingOutputs:
    validation = validate_op(
        source=source, batch=batch, purpose="training", settings_overrides=settings_overrides
    )
    gate = retrain_gate_op(validation=validation.output, settings_overrides=settings_overrides, force=force)
    tasks = [validation, gate]
    with dsl.If(gate.outputs["should_train"] == True, "enough-new-annotations"):  # noqa: E712
        training = train_op(
            validation=validation.output,
            settings_overrides=settings_overrides,
            warm_start_from=gate.outputs["warm_start_from"],
        )
        evaluation = evaluate_op(training=training.output, settings_overrides=settings_overrides)
        registered = register_op(
            training=training.output, evaluation=evaluation.output, settings_overrides=settings_overrides
        )
        floor = quality_gate_op(evaluation=evaluation.output, min_dice=min_dice)
        with dsl.If(floor.output == True, "quality-floor-cleared"):  # noqa: E712 (KFP condition syntax)
            promotion = promote_op(registered=registered.output, settings_overrides=settings_overrides)
        tasks += [training, evaluation, registered, floor, promotion]
    with dsl.Else("too-few-new-annotations"):
        skipped = retrain_skipped_op(decision=gate.outputs["decision"])
        tasks.append(skipped)
    for task in tasks:
        task.set_caching_options(False)
        _with_cluster_environment(task)
    return TrainingOutputs(
        validation=validation.output,
        decision=gate.outputs["decision"],
        training=dsl.OneOf(training.output, skipped.output),
        evaluation=dsl.OneOf(evaluation.output, skipped.output),
        registered=dsl.OneOf(registered.output, skipped.output),
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
