"""One typed configuration for every stage, read from ``ORTHOSEG_*`` environment variables."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class PreprocessConfig(BaseModel):
    """How a radiograph is brought onto the network's canvas (saved with every model).

    Attributes:
        spacing_mm: canvas pixel size in millimetres (isotropic).
        canvas_px: canvas side in pixels (square).
        clip_percentiles: intensity window, as lower and upper percentiles of the native image.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    spacing_mm: float = Field(default=1.0, gt=0.01, le=10.0)
    canvas_px: int = Field(default=256, ge=32, le=4096)
    clip_percentiles: tuple[float, float] = (0.5, 99.5)


class TrainConfig(BaseModel):
    """Hyper-parameters of one training run (also Ray's ``train_loop_config``)."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(default=12, ge=1)
    batch_size: int = Field(default=4, ge=1)
    learning_rate: float = Field(default=2e-3, gt=0)
    weight_decay: float = Field(default=1e-5, ge=0)
    network_channels: tuple[int, ...] = (16, 32, 64, 128)
    num_workers: int = Field(default=2, ge=1)
    use_gpu: bool = False
    mixed_precision: bool = True
    seed: int = 0
    checkpoint_every_epochs: int = Field(default=1, ge=1)


class Settings(BaseSettings):
    """Where things live and how stages run; switching deployments is configuration only.

    Attributes:
        store: object store root, a local folder or ``s3://bucket/prefix``.
        s3_endpoint_url: S3 endpoint (MinIO, moto, ...); ``None`` for AWS.
        mlflow_uri: MLflow tracking and registry URI.
        ray_address: Ray cluster address; ``None`` starts a local one.
        model_name: registered model name.
        experiment_name: MLflow experiment for training runs.
        work_dir: local scratch folder (Ray Train storage, caches).
        validation_workers: parallel processes for validation.
        validation_max_file_bytes: files larger than this are refused unread.
        validation_worker_memory_limit_bytes: address-space cap of each validation reader process.
        pseudonym_salt: secret salt of patient pseudonyms; keep it for the life of a dataset lineage,
            since the train/val/test split derives from the pseudonym.
        preprocess: canvas and intensity settings shared by training and inference.
        train: training hyper-parameters.
    """

    model_config = SettingsConfigDict(env_prefix="ORTHOSEG_", env_nested_delimiter="__", extra="forbid")

    store: str = "./.orthoseg/store"
    s3_endpoint_url: str | None = None
    mlflow_uri: str = "sqlite:///.orthoseg/mlflow.db"
    ray_address: str | None = None
    model_name: str = "orthoseg-knee"
    experiment_name: str = "orthoseg"
    work_dir: str = "./.orthoseg/work"
    validation_workers: int = Field(default=2, ge=1)
    validation_max_file_bytes: int = Field(default=512 * 1024**2, ge=1024)
    validation_worker_memory_limit_bytes: int | None = 4 * 1024**3
    pseudonym_salt: SecretStr | None = None
    preprocess: PreprocessConfig = PreprocessConfig()
    train: TrainConfig = TrainConfig()
