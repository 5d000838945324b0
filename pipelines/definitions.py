"""The two pipelines, built from ``components``; the same graph runs under kfp.local and on Kubeflow.

``training_pipeline`` and ``inference_pipeline`` are the graphs kfp.local runs. A cluster gets the same
graphs from ``training_pipeline_for`` / ``inference_pipeline_for`` with a ``PipelineConfig``: each step
then also carries its CPU and memory requests and limits, GPUs, retries, deadline, node selector and
tolerations. kfp.local would ignore the resources (with a warning per step) but honour the retries by
sleeping on this machine, so a local run whose step fails for good would wait out the cluster's backoff.
"""

# No `from __future__ import annotations`: KFP reads the real annotation objects.

from typing import NamedTuple

from kfp import dsl, kubernetes
from kfp.dsl.base_component import BaseComponent

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
from orthoseg.pipeline_config import PipelineConfig, StepResources

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


# Which steps KFP may answer from its cache: only those whose output is a function of their inputs alone.
CACHED_STEPS = {
    "validation": False,  # reads the batch and the dataset from the store, which change under one URI
    "retrain_gate": False,  # reads the registry's current champion and the store
    "retrain_skipped": True,  # its output is its input's reason, nothing else
    "training": False,  # reads the store, writes an MLflow run (a re-run returns a finished one anyway)
    "evaluation": False,  # logs metrics and artifacts to the run
    "quality_gate": True,  # a comparison of its two inputs
    "registration": False,  # writes the registry
    "promotion": False,  # reads and moves @champion
    "inference": False,  # resolves the model alias now and writes predictions to the store
}


def _sized(task: dsl.PipelineTask, resources: StepResources, config: PipelineConfig) -> dsl.PipelineTask:
    """The step's cluster resources, failure handling and placement (a cluster run only)."""
    task.set_cpu_request(resources.cpu_request).set_cpu_limit(resources.cpu_limit)
    task.set_memory_request(resources.memory_request).set_memory_limit(resources.memory_limit)
    if resources.gpus:
        task.set_accelerator_type(config.gpu_accelerator_type).set_accelerator_limit(resources.gpus)
    if resources.retries:
        task.set_retry(
            num_retries=resources.retries,
            backoff_duration=f"{resources.backoff_s}s",
            backoff_factor=resources.backoff_factor,
            backoff_max_duration=f"{resources.retry_window()}s",
        )
    if resources.timeout_s is not None:
        kubernetes.set_timeout(task, resources.timeout_s)
    for key, value in sorted(config.node_selector.items()):
        kubernetes.add_node_selector(task, label_key=key, label_value=value)
    for toleration in config.tolerations:
        kubernetes.add_toleration(
            task,
            key=toleration.key,
            operator=toleration.operator,
            value=toleration.value,
            effect=toleration.effect,
        )
    return task


def _step(task: dsl.PipelineTask, name: str, config: PipelineConfig | None) -> dsl.PipelineTask:
    """Everything a step gets besides its inputs: caching, the cluster environment and, for a cluster,
    its resources (``config``; None for kfp.local)."""
    task.set_caching_options(CACHED_STEPS[name])
    _with_cluster_environment(task)
    if config is not None:
        _sized(task, config.step(name), config)
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


def training_pipeline_for(config: PipelineConfig | None) -> BaseComponent:
    """The training pipeline; with ``config``, sized for a cluster (None: as kfp.local runs it)."""

    @dsl.pipeline(
        name="orthoseg-training",
        description="Validate a new batch; when enough annotated images arrived since the champion's "
        "dataset version (or when forced), train on the resulting dataset version (from the champion's "
        "weights when its architecture matches), evaluate, register, and promote the model to @champion "
        "when it clears the quality floor and beats the current champion; otherwise record why it did "
        "not train.",
    )
    def training_pipeline(
        source: str, batch: str, settings_overrides: dict, min_dice: float = 0.0, force: bool = False
    ) -> TrainingOutputs:
        validation = validate_op(
            source=source, batch=batch, purpose="training", settings_overrides=settings_overrides
        )
        gate = retrain_gate_op(
            validation=validation.output, settings_overrides=settings_overrides, force=force
        )
        steps = [(validation, "validation"), (gate, "retrain_gate")]
        with dsl.If(gate.outputs["should_train"] == True, "enough-new-annotations"):  # noqa: E712
            training = train_op(
                validation=validation.output,
                settings_overrides=settings_overrides,
                warm_start_from=gate.outputs["warm_start_from"],
                job_key=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            )
            evaluation = evaluate_op(training=training.output, settings_overrides=settings_overrides)
            registered = register_op(
                training=training.output, evaluation=evaluation.output, settings_overrides=settings_overrides
            )
            floor = quality_gate_op(evaluation=evaluation.output, min_dice=min_dice)
            with dsl.If(floor.output == True, "quality-floor-cleared"):  # noqa: E712 (KFP condition syntax)
                promotion = promote_op(registered=registered.output, settings_overrides=settings_overrides)
            steps += [
                (training, "training"),
                (evaluation, "evaluation"),
                (registered, "registration"),
                (floor, "quality_gate"),
                (promotion, "promotion"),
            ]
        with dsl.Else("too-few-new-annotations"):
            skipped = retrain_skipped_op(decision=gate.outputs["decision"])
            steps.append((skipped, "retrain_skipped"))
        for task, name in steps:
            _step(task, name, config)
        return TrainingOutputs(
            validation=validation.output,
            decision=gate.outputs["decision"],
            training=dsl.OneOf(training.output, skipped.output),
            evaluation=dsl.OneOf(evaluation.output, skipped.output),
            registered=dsl.OneOf(registered.output, skipped.output),
        )

    return training_pipeline


def inference_pipeline_for(config: PipelineConfig | None) -> BaseComponent:
    """The inference pipeline; with ``config``, sized for a cluster (None: as kfp.local runs it)."""

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
            validation=validation.output,
            model_ref=model_ref,
            settings_overrides=settings_overrides,
            job_key=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        )
        _step(validation, "validation", config)
        _step(inference, "inference", config)
        return InferenceOutputs(validation=validation.output, inference=inference.output)

    return inference_pipeline


def pipelines_for(config: PipelineConfig | None) -> dict[str, BaseComponent]:
    """Both pipelines by name (``training``, ``inference``), sized with ``config`` (None: kfp.local)."""
    return {"training": training_pipeline_for(config), "inference": inference_pipeline_for(config)}


# What kfp.local runs (pipelines.runner): no cluster sizing.
training_pipeline = training_pipeline_for(None)
inference_pipeline = inference_pipeline_for(None)
