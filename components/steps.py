"""One KFP component per pipeline step. Each parses its inputs, builds Settings, makes one library call.

Results travel between steps as the JSON form of the library's result models (``dict``, without the
fields that are None: KFP parameters cannot hold null), and a step that needs a value reads it from
there, so the pipeline graph never re-implements library logic.
``settings_overrides`` is the ``Settings`` object as JSON: the same configuration the CLI reads from
``ORTHOSEG_*`` variables, validated the same way (unknown keys are an error).
"""

# No `from __future__ import annotations`: KFP reads the real annotation objects.

from typing import NamedTuple

from kfp import dsl

from components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def validate_op(source: str, batch: str, purpose: str, settings_overrides: dict) -> dict:
    """Validate a batch of DICOM files with Great Expectations; accept or quarantine each file."""
    from orthoseg.settings import Settings
    from orthoseg.validation import validate_batch

    # KFP parameters are plain str; validate_batch rejects a purpose other than training or inference.
    report = validate_batch(Settings(**settings_overrides), source, batch, purpose)  # type: ignore[arg-type]
    return report.model_dump(mode="json", exclude_none=True)


# KFP's idiom for several outputs: a NamedTuple built in the annotation, which mypy cannot read as a type.
@dsl.component(base_image=IMAGE, install_kfp_package=False)
def retrain_gate_op(validation: dict, settings_overrides: dict, force: bool) -> NamedTuple(  # type: ignore[valid-type]
    "RetrainGate", decision=dict, should_train=bool, warm_start_from=str
):
    """Decide whether to train: enough annotated images added since the champion's dataset version
    (``promotion.retrain_min_new_images``), or ``force``; and from which weights (the champion's when its
    architecture is the configured one). ``warm_start_from`` is "" for from scratch."""
    from collections import namedtuple

    from orthoseg.retrain import decide_retrain
    from orthoseg.settings import Settings

    settings = Settings(**settings_overrides)
    outcome = decide_retrain(settings, validation.get("dataset_version"), force=force)
    RetrainGate = namedtuple("RetrainGate", ["decision", "should_train", "warm_start_from"])
    return RetrainGate(
        outcome.model_dump(mode="json", exclude_none=True),
        outcome.should_train,
        outcome.warm_start_from or "",
    )


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def retrain_skipped_op(decision: dict) -> dict:
    """Record that the run did not train, and why (stands in for training, evaluation and registration)."""
    import logging

    logging.getLogger("orthoseg.retrain").warning("Not training: %s", decision["reason"])
    return {"skipped": True, "reason": decision["reason"]}


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def train_op(
    validation: dict, settings_overrides: dict, warm_start_from: str = "", job_key: str = ""
) -> dict:
    """Train the segmentation network with Ray Train on the validated dataset version; log to MLflow.
    ``warm_start_from`` (the retrain gate's choice; "" for from scratch) is ``train.init_weights_uri``.
    With ``rayjob.pipeline_steps`` it runs as a RayJob named after ``job_key`` (the pipeline run)."""
    from orthoseg.rayjob_steps import train_step
    from orthoseg.settings import Settings

    settings = Settings(**settings_overrides)
    train = settings.train.model_copy(update={"init_weights_uri": warm_start_from or None})
    settings = settings.model_copy(update={"train": train})
    return train_step(settings, validation.get("dataset_version"), job_key).model_dump(
        mode="json", exclude_none=True
    )


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def evaluate_op(training: dict, settings_overrides: dict) -> dict:
    """Evaluate the trained run on the fixed test split: Dice per structure, logged to the run."""
    from orthoseg.evaluation import evaluate_run
    from orthoseg.settings import Settings

    settings = Settings(**settings_overrides)
    return evaluate_run(settings, training["run_id"], training["dataset_version"]).model_dump(
        mode="json", exclude_none=True
    )


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def quality_gate_op(evaluation: dict, min_dice: float) -> bool:
    """True when the evaluated model clears the quality floor required before any promotion."""
    from orthoseg.evaluation import meets_quality_floor

    return meets_quality_floor(evaluation, min_dice)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def register_op(training: dict, evaluation: dict, settings_overrides: dict) -> dict:
    """Register the run's model in the MLflow registry, tagged with dataset version, code version and Dice."""
    from orthoseg.registry import register_model
    from orthoseg.settings import Settings

    settings = Settings(**settings_overrides)
    return register_model(settings, evaluation["run_id"], training["dataset_version"]).model_dump(
        mode="json", exclude_none=True
    )


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def promote_op(registered: dict, settings_overrides: dict) -> dict:
    """Judge the new version against @champion on the policy's frozen benchmark set: promote it to
    champion, or mark it challenger; the decision is recorded in the registry."""
    from orthoseg.registry import promote_model
    from orthoseg.settings import Settings

    settings = Settings(**settings_overrides)
    return promote_model(settings, str(registered["version"]), via="kfp pipeline").model_dump(
        mode="json", exclude_none=True
    )


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def infer_op(validation: dict, model_ref: str, settings_overrides: dict, job_key: str = "") -> dict:
    """Batch inference with Ray Data on the accepted files of a validated batch: DICOM SEG, overlays,
    measurements and a report under predictions/<model-version>/<run-id>/. With ``rayjob.pipeline_steps``
    the inference runs as a RayJob named after ``job_key`` (the pipeline run)."""
    from orthoseg.inference import validated_batch_source
    from orthoseg.rayjob_steps import infer_step
    from orthoseg.settings import Settings

    settings = Settings(**settings_overrides)
    return infer_step(settings, validated_batch_source(validation), model_ref, job_key).model_dump(
        mode="json", exclude_none=True
    )
