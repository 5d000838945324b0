"""Training: the Ray Train worker loop, its checkpoints, the MLflow record and the driver that runs it.

``run_training`` (``orthoseg.training.run``) is the pipeline step; ``orthoseg.training.loop`` is the only
code that runs on Ray workers.
"""

from orthoseg.training.checkpoint import CKPT_BEST, CKPT_OPTIMIZER, CKPT_STATE, CKPT_WEIGHTS
from orthoseg.training.run import (
    CHECKPOINT_PREFIX,
    TrainingResult,
    checkpoint_storage,
    ray_run_name,
    run_training,
)
from orthoseg.training.tracking import CONFIG_HASH_TAG, DATASET_TAG, PREPROCESS_HASH_TAG, RAY_RUN_TAG

__all__ = [
    "CHECKPOINT_PREFIX",
    "CONFIG_HASH_TAG",
    "DATASET_TAG",
    "PREPROCESS_HASH_TAG",
    "RAY_RUN_TAG",
    "CKPT_BEST",
    "CKPT_OPTIMIZER",
    "CKPT_STATE",
    "CKPT_WEIGHTS",
    "TrainingResult",
    "checkpoint_storage",
    "ray_run_name",
    "run_training",
]
