"""One typed configuration for every stage, read from ``ORTHOSEG_*`` environment variables."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from orthoseg.augment import AugmentConfig
from orthoseg.inference_config import InferenceConfig
from orthoseg.model import Architecture, NetworkConfig
from orthoseg.pipeline_config import PipelineConfig
from orthoseg.profiles import PROFILES, profile_defaults
from orthoseg.rayjob_config import RayJobConfig
from orthoseg.schedule import validate_cron
from orthoseg.validation_config import ValidationConfig

# Validation's variables before it became a section (``ORTHOSEG_VALIDATION_WORKERS``); refused by Settings.
FLAT_VALIDATION_PREFIX = "ORTHOSEG_VALIDATION_"


class PreprocessConfig(BaseModel):
    """How a radiograph is brought onto the network's canvas (saved with every model).

    Attributes:
        spacing_mm: canvas pixel size in millimetres (isotropic).
        canvas_px: canvas side in pixels (square): the training window, and the smallest canvas.
        clip_percentiles: intensity window, as lower and upper percentiles of the native image.
        large_films: what happens to a film whose field is larger than the canvas (clinical cassettes
            are 24x30 to 35x43 cm, standing films longer): ``extend`` keeps ``spacing_mm`` and grows
            the canvas (in steps of ``canvas_multiple``, up to ``max_canvas_px`` per side), so the
            network sees bones at the scale it was trained on; training then cuts a ``canvas_px``
            window around the labelled anatomy. ``shrink`` scales the whole film onto the square
            canvas (bones appear smaller than in training).
        max_canvas_px: largest canvas side with ``extend``; beyond it the spacing grows.
        canvas_multiple: extended canvas sides are multiples of this (the network's downsampling
            factor must divide it).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    spacing_mm: float = Field(default=1.0, gt=0.01, le=10.0)
    canvas_px: int = Field(default=256, ge=32, le=4096)
    clip_percentiles: tuple[float, float] = (0.5, 99.5)
    large_films: Literal["extend", "shrink"] = "extend"
    max_canvas_px: int = Field(default=1536, ge=32, le=8192)
    canvas_multiple: int = Field(default=32, ge=1, le=512)

    @model_validator(mode="after")
    def _check_canvas_sizes(self) -> PreprocessConfig:
        if self.canvas_px % self.canvas_multiple:
            raise ValueError(
                f"canvas_px={self.canvas_px} must be a multiple of canvas_multiple={self.canvas_multiple}"
            )
        if self.max_canvas_px < self.canvas_px:
            raise ValueError(f"max_canvas_px={self.max_canvas_px} is smaller than canvas_px={self.canvas_px}")
        return self


class TrainConfig(BaseModel):
    """Hyper-parameters of one training run (also the Ray workers' loop configuration).

    Attributes:
        epochs: passes over the training split.
        batch_size: images per optimiser step on each worker.
        learning_rate: peak AdamW learning rate, reached after the warm-up.
        min_learning_rate_ratio: the cosine schedule ends at ``learning_rate`` times this.
        warmup_epochs: linear warm-up from zero, in epochs (fractions allowed).
        weight_decay: AdamW decoupled weight decay.
        architecture: ``unet``, ``dynunet`` or ``segresnet`` (``orthoseg.model``).
        network_channels: feature channels per network level.
        num_res_units: residual units per level (``unet``).
        deep_supervision: train ``dynunet`` with extra coarser outputs.
        loss: ``dice_bce`` (soft Dice + binary cross-entropy) or ``dice_focal`` (soft Dice + focal loss).
        dice_over_batch: soft Dice over the whole batch per structure rather than per image, so a
            structure absent from one image (cement, components on a native knee) still has a gradient.
        structure_loss_weights: weight of each named structure's Dice and pixel loss (others 1.0; the
            weights are normalised to a mean of 1, so the loss keeps its scale). Thin structures that
            cover few pixels (the cement mantle, the tibial tray) learn faster when weighted up.
        num_workers: Ray Train workers (data-parallel, one process each).
        cpus_per_worker: CPUs Ray reserves for each worker (also its torch thread count on CPU).
        use_gpu: one GPU per worker (NCCL); else CPU (gloo).
        mixed_precision: bfloat16 autocast on GPUs that have it (float16 with loss scaling otherwise).
        channels_last: NHWC memory layout on GPU (faster convolutions); ignored on CPU.
        shuffle_buffer_images: rows mixed in each worker's local shuffle buffer (memory ~0.4 MB each at
            256 px); shards are also visited in a new order every epoch.
        cache_shard_images: images per canvas-cache shard file.
        window_context_rows: canvas rows of film kept above and below each training window in the
            cache; every epoch cuts the window at a random height within them, so the ends of long
            films and revision stems are seen in training as they are at inference (0: a fixed window).
        shaft_window_probability: chance a training window shows one side of the knee joint only (the
            leg below it or the thigh above it; ``orthoseg.preprocessing.cut_shaft_window``), so films
            of the shafts without the knee are read as tibia and fibula, or femur (needs
            ``window_context_rows``). Off in every profile: a ``standard`` run with 0.1 did not change
            how a real lower-leg film is read, and its synthetic figures were no better.
        max_failures: worker-group restarts (from the latest checkpoint) before the run fails.
        seed: initialisation and augmentation seed.
        checkpoint_every_epochs: checkpoint (and report metrics) every this many epochs.
        init_weights_uri: MLflow model URI (``models:/orthoseg-knee/3``, ``runs:/<run id>/model``) or local
            model folder whose weights start the run (a warm start: a retrained model begins where the
            champion is instead of re-learning the anatomy, and reaches its Dice in fewer epochs). Used
            only when that model's network configuration equals this one's; otherwise the run starts
            from scratch, with a warning and the reason in the run's ``orthoseg.warm_start`` tag. A
            resumed run continues from its own checkpoint instead. None: random initialisation.
    """

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(default=12, ge=1)
    batch_size: int = Field(default=4, ge=1)
    learning_rate: float = Field(default=2e-3, gt=0)
    min_learning_rate_ratio: float = Field(default=0.01, ge=0.0, le=1.0)
    warmup_epochs: float = Field(default=0.0, ge=0.0)
    weight_decay: float = Field(default=1e-5, ge=0)
    architecture: Architecture = "unet"
    network_channels: tuple[int, ...] = (16, 32, 64, 128)
    num_res_units: int = Field(default=1, ge=0, le=4)
    deep_supervision: bool = False
    loss: Literal["dice_bce", "dice_focal"] = "dice_bce"
    dice_over_batch: bool = True
    structure_loss_weights: dict[str, float] = Field(default_factory=dict)
    num_workers: int = Field(default=2, ge=1)
    cpus_per_worker: float = Field(default=1.0, gt=0)
    use_gpu: bool = False
    mixed_precision: bool = True
    channels_last: bool = True
    shuffle_buffer_images: int = Field(default=64, ge=1)
    cache_shard_images: int = Field(default=32, ge=1)
    window_context_rows: int = Field(default=0, ge=0, le=4096)
    shaft_window_probability: float = Field(default=0.0, ge=0.0, le=1.0)
    max_failures: int = Field(default=2, ge=0)
    seed: int = 0
    checkpoint_every_epochs: int = Field(default=1, ge=1)
    init_weights_uri: str | None = None

    @model_validator(mode="after")
    def _check_structure_loss_weights(self) -> TrainConfig:
        from orthoseg.labels import STRUCTURE_NAMES

        unknown = sorted(set(self.structure_loss_weights) - set(STRUCTURE_NAMES))
        if unknown:
            raise ValueError(
                f"structure_loss_weights names unknown structures {unknown}; known: {STRUCTURE_NAMES}"
            )
        if any(weight <= 0 for weight in self.structure_loss_weights.values()):
            raise ValueError("structure_loss_weights must be positive")
        return self

    def structure_weights(self) -> tuple[float, ...]:
        """One loss weight per label channel, normalised to a mean of 1."""
        from orthoseg.labels import STRUCTURE_NAMES

        raw = [self.structure_loss_weights.get(name, 1.0) for name in STRUCTURE_NAMES]
        mean = sum(raw) / len(raw)
        return tuple(weight / mean for weight in raw)

    def network_config(self) -> NetworkConfig:
        """The architecture part, as saved with the model."""
        return NetworkConfig(
            architecture=self.architecture,
            channels=self.network_channels,
            num_res_units=self.num_res_units,
            deep_supervision=self.deep_supervision,
        )


class PromotionSettings(BaseModel):
    """Where the promotion policy lives and when retraining is worth starting.

    Attributes:
        policy_path: the promotion policy YAML (``orthoseg.promotion_policy``). A relative path is
            looked up in the working directory first, then in the orthoseg source checkout (where
            ``mlflow/promotion.yaml`` ships).
        retrain_min_new_images: ``orthoseg retrain`` trains only when at least this many annotated
            images arrived since the champion's dataset version (fewer would not move the benchmark).
    """

    model_config = ConfigDict(extra="forbid")

    policy_path: str = "mlflow/promotion.yaml"
    retrain_min_new_images: int = Field(default=20, ge=1)


class ScheduleSettings(BaseModel):
    """The Kubeflow Pipelines recurring runs ``orthoseg schedule`` keeps in sync (``orthoseg.schedule``).

    Attributes:
        experiment: KFP experiment holding the recurring runs (created when missing).
        retrain_cron: when the training pipeline runs. KFP cron has six fields, seconds first:
            ``0 0 2 * * 0`` is Sundays at 02:00 (UTC on the cluster).
        infer_cron: when the inference pipeline runs; ``0 0 1 * * *`` is every night at 01:00.
        retrain_source: store prefix of the annotated batch scheduled retraining validates and trains on.
        retrain_batch: its batch name (quarantine and report folders).
        infer_source: store prefix where new studies arrive for nightly inference.
        infer_batch: its batch name.
        min_dice: quality floor (test mean Dice) for promoting a scheduled retraining's model.
        model: model alias or version nightly inference uses.
        profile: training profile of scheduled retraining; None: the cluster's configuration.
    """

    model_config = ConfigDict(extra="forbid")

    experiment: str = Field(default="orthoseg", min_length=1)
    retrain_cron: Annotated[str, AfterValidator(validate_cron)] = "0 0 2 * * 0"
    infer_cron: Annotated[str, AfterValidator(validate_cron)] = "0 0 1 * * *"
    retrain_source: str = "s3://orthoseg/store/incoming/annotated"
    retrain_batch: str = "annotated"
    infer_source: str = "s3://orthoseg/store/incoming/scans"
    infer_batch: str = "scans"
    min_dice: float = Field(default=0.0, ge=0.0, le=1.0)
    model: str = "champion"
    profile: str | None = None


class Settings(BaseSettings):
    """Where things live and how stages run; switching deployments is configuration only.

    Attributes:
        store: object store root, a local folder or ``s3://bucket/prefix``.
        s3_endpoint_url: S3 endpoint (MinIO, moto, ...); ``None`` for AWS.
        s3_max_attempts: attempts per S3 call, the first included (botocore ``standard`` retry mode:
            throttling, 5xx and dropped connections are retried with exponential backoff and jitter).
        mlflow_uri: MLflow tracking and registry URI.
        mlflow_artifact_location: where an experiment orthoseg creates keeps its runs' artifacts (models,
            evaluation tables): a folder or ``s3://`` URI. None: with a ``sqlite:`` tracking store, the
            folder ``mlartifacts`` beside the database file, so a run's model is found whatever folder a
            later command runs from; with a tracking server, the server's own artifact root.
        ray_address: Ray cluster address; ``None`` starts a local one.
        model_name: registered model name.
        experiment_name: MLflow experiment for training runs.
        work_dir: local scratch folder (Ray Train storage, caches).
        pseudonym_salt: secret salt of patient pseudonyms; keep it for the life of a dataset lineage,
            since the train/val/test split derives from the pseudonym. The only salt setting: validation
            takes it from here (``ValidationConfig.from_settings``), and the ``validation`` section
            refuses one.
        profile: a named training profile (``demo``, ``standard``, ``full``; ``orthoseg.profiles``)
            whose values fill every preprocessing, training and augmentation setting not given
            explicitly; None keeps the plain defaults below.
        preprocess: canvas and intensity settings shared by training and inference.
        train: training hyper-parameters.
        augment: on-the-fly training augmentation (``orthoseg.augment``).
        promotion: promotion policy file and the retraining threshold.
        schedule: the Kubeflow Pipelines recurring runs (``orthoseg schedule``).
        validation: how incoming batches are validated: reader processes, size, memory and time limits,
            accepted modalities and SOP classes, plausible pixel spacings, split fractions
            (``orthoseg.validation_config``), e.g. ``ORTHOSEG_VALIDATION__WORKERS=8`` or
            ``ORTHOSEG_VALIDATION__PIXEL_SPACING_RANGES_MM='{"DX": [0.05, 1.0]}'`` (JSON). The flat
            ``ORTHOSEG_VALIDATION_<FIELD>`` variables of earlier versions are refused, naming the new one.
        inference: how batch inference runs (actors, batch size, CPUs and GPUs per actor, test-time
            passes; ``orthoseg.inference_config``), e.g. ``ORTHOSEG_INFERENCE__NUM_GPUS_PER_ACTOR=1``.
        pipeline: CPU, memory, GPUs, retries and timeouts of each Kubeflow Pipelines step on a cluster,
            and the node selector and tolerations of their pods, e.g.
            ``ORTHOSEG_PIPELINE__TRAINING__MEMORY_LIMIT=8Gi``.
        rayjob: how ``orthoseg rayjob`` runs a command as a KubeRay RayJob: its cluster's head and worker
            groups (or an existing RayCluster), deadlines, retries and clean-up
            (``orthoseg.rayjob_config``), e.g. ``ORTHOSEG_RAYJOB__GPU_WORKERS__REPLICAS=1``.
    """

    model_config = SettingsConfigDict(env_prefix="ORTHOSEG_", env_nested_delimiter="__", extra="forbid")

    store: str = "./.orthoseg/store"
    s3_endpoint_url: str | None = None
    s3_max_attempts: int = Field(default=5, ge=1, le=50)
    mlflow_uri: str = "sqlite:///.orthoseg/mlflow.db"
    mlflow_artifact_location: str | None = None
    ray_address: str | None = None
    model_name: str = "orthoseg-knee"
    experiment_name: str = "orthoseg"
    work_dir: str = "./.orthoseg/work"
    pseudonym_salt: SecretStr | None = None
    profile: str | None = None
    preprocess: PreprocessConfig = PreprocessConfig()
    train: TrainConfig = TrainConfig()
    augment: AugmentConfig = AugmentConfig()
    promotion: PromotionSettings = PromotionSettings()
    schedule: ScheduleSettings = ScheduleSettings()
    validation: ValidationConfig = ValidationConfig()
    inference: InferenceConfig = InferenceConfig()
    pipeline: PipelineConfig = PipelineConfig()
    rayjob: RayJobConfig = RayJobConfig()

    @model_validator(mode="before")
    @classmethod
    def _refuse_flat_validation_variables(cls, data: Any) -> Any:
        """The environment source skips unknown names silently, so a deployment still setting the flat
        ``ORTHOSEG_VALIDATION_WORKERS`` (now ``ORTHOSEG_VALIDATION__WORKERS``) would lose its values."""
        flat = sorted(
            name
            for name in (key.upper() for key in os.environ)
            if name.startswith(FLAT_VALIDATION_PREFIX) and not name.startswith(f"{FLAT_VALIDATION_PREFIX}_")
        )
        if flat:
            renamed = ", ".join(
                f"{name} to {name.replace('_VALIDATION_', '_VALIDATION__', 1)}" for name in flat
            )
            raise ValueError(
                f"validation settings are the section ORTHOSEG_VALIDATION__<FIELD>: rename {renamed}"
            )
        return data

    @field_validator("validation")
    @classmethod
    def _salt_is_top_level(cls, value: ValidationConfig) -> ValidationConfig:
        if value.pseudonym_salt is not None:
            raise ValueError(
                "the pseudonym salt is the top-level setting ORTHOSEG_PSEUDONYM_SALT "
                "(Settings.pseudonym_salt), not validation.pseudonym_salt"
            )
        return value

    @model_validator(mode="before")
    @classmethod
    def _fill_from_profile(cls, data: Any) -> Any:
        """Profile values under the explicit ones, section by section (explicit settings always win)."""
        if not isinstance(data, dict) or not data.get("profile"):
            return data
        name = str(data["profile"])
        if name not in PROFILES:
            raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}")
        merged = dict(data)
        for section, values in profile_defaults(name).items():
            given = merged.get(section)
            if isinstance(given, BaseModel):
                given = given.model_dump(exclude_unset=True)
            merged[section] = {**values, **(given or {})}
        return merged

    def artifact_location(self) -> str | None:
        """Artifact root for an experiment created now (``mlflow_artifact_location``; see there)."""
        if self.mlflow_artifact_location:
            return self.mlflow_artifact_location
        prefix = "sqlite:///"
        if not self.mlflow_uri.startswith(prefix):
            return None
        database = Path(self.mlflow_uri[len(prefix) :])
        return (database.resolve().parent / "mlartifacts").as_uri()
