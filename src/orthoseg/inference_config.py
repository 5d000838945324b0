"""How batch inference runs: actors, batches, CPUs and GPUs per actor, test-time passes, thresholds.

A section of ``Settings`` (``Settings.inference``, ``ORTHOSEG_INFERENCE__*`` variables), so the CLI, the
KFP pipelines (which pass the settings on) and a Python caller set it the same way.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from orthoseg.confidence import ConfidenceConfig
from orthoseg.measure.config import MeasurementConfig


class InferenceConfig(BaseModel):
    """How batch inference runs; ``Settings.inference`` (``ORTHOSEG_INFERENCE__*``) by default.

    Attributes:
        batch_size: radiographs per ``map_batches`` call (small: native films are large in memory).
        concurrency: Ray actors, each holding one copy of the model.
        num_cpus_per_actor: CPUs reserved per actor (also torch's thread count).
        num_gpus_per_actor: GPUs per actor (0 on CPU clusters).
        overlay_max_side_px: longest side of overlay PNGs.
        forward_store_credentials: pass the driver's ``AWS_*`` variables to the workers through the Ray
            runtime environment, for clusters whose workers have no credentials of their own (local Ray,
            workers started before the variables were set). Turn off where workers carry their own
            (IAM roles, Kubernetes secrets), so no secret travels through Ray.
        measurement: thresholds of the measurement rules.
        tta_passes: test-time augmented predictions per film (``orthoseg.confidence``); their agreement
            is the row's ``model_confidence``. 1 gives today's masks and no confidence. Each extra pass
            is one more forward pass and a canvas clean-up. Measured on one CPU thread, 1024 px simulated
            films (``benchmarks/confidence.py --count 4 --passes 4``): demo-size model 0.034 -> 0.061 s
            per film for the prediction (+0.009 s a pass), default network 0.054 -> 0.18 s (+0.043 s a
            pass); with the film's measurements (~0.2 s) the per-film cost grows 1.1x and 1.5x. 4 (one
            pass of each augmentation kind) is the default; 8 costs 2.2x with the default network.
        confidence: the passes' augmentations and the structures that decide an image's confidence.
        min_model_confidence: below this image confidence the row gets the measurement flag
            ``model_confidence:low (<value>)`` and an ``ok`` image becomes ``partial``. Provisional: to
            be calibrated against Dice on labelled real films.
        annotate_next_count: how many of the run's least confident images the summary lists as
            ``annotate_next`` (images whose labels would teach the model most).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    batch_size: int = Field(default=2, ge=1, le=64)
    concurrency: int = Field(default=2, ge=1)
    num_cpus_per_actor: float = Field(default=1.0, gt=0)
    num_gpus_per_actor: float = Field(default=0.0, ge=0)
    overlay_max_side_px: int = Field(default=1024, ge=64, le=8192)
    forward_store_credentials: bool = True
    measurement: MeasurementConfig = MeasurementConfig()
    tta_passes: int = Field(default=4, ge=1, le=8)
    confidence: ConfidenceConfig = ConfidenceConfig()
    min_model_confidence: float = Field(default=0.85, ge=0.0, le=1.0)
    annotate_next_count: int = Field(default=20, ge=0)

    @model_validator(mode="after")
    def _passes_have_augmentations(self) -> InferenceConfig:
        if self.tta_passes > len(self.confidence.augmentations):
            raise ValueError(
                f"tta_passes={self.tta_passes} but confidence has only "
                f"{len(self.confidence.augmentations)} augmentations"
            )
        return self


def with_overrides(config: InferenceConfig, **given: float | int | None) -> InferenceConfig:
    """``config`` with the fields given (not None) replaced, validated again (the CLI's options).

    Raises:
        pydantic.ValidationError: when a value is out of range (a ``ValueError``: the CLI prints it).
    """
    overrides = {key: value for key, value in given.items() if value is not None}
    if not overrides:
        return config
    return InferenceConfig.model_validate({**config.model_dump(), **overrides})
