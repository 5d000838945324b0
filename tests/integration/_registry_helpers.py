"""Registered versions with known relative quality, and promotion policies, for the registry tests.

A model here is a real network logged exactly as training logs it, with weights set so that each
structure's output is a constant: the whole film, or nothing. On films where a structure is present,
predicting it everywhere scores a higher Dice than predicting nothing, so how two such models compare on
any set is known in advance.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import torch
import yaml

from orthoseg import __version__
from orthoseg.evaluation import evaluate_run
from orthoseg.labels import STRUCTURE_NAMES
from orthoseg.model import NetworkConfig, build_network_from_config
from orthoseg.model_package import config_hash, connect_tracking, log_segmentation_model
from orthoseg.registry import register_model
from orthoseg.settings import Settings
from orthoseg.training import DATASET_TAG, PREPROCESS_HASH_TAG

BENCH = "v-bench"


def write_policy(path: Path, **overrides: object) -> Path:
    policy = {
        "benchmark": {"name": "knee-bench", "dataset_version": BENCH, "split": "test"},
        "min_dice_mean": 0.0,
        "min_mean_improvement": 0.0,
        "max_structure_regression": 0.02,
    }
    for key, value in overrides.items():
        if key == "benchmark":
            policy["benchmark"] = {**policy["benchmark"], **value}  # type: ignore[dict-item]
        else:
            policy[key] = value
    path.write_text(yaml.safe_dump(policy))
    return path


def register_constant_model(settings: Settings, structures_on: frozenset[str], dataset: str = BENCH) -> str:
    """Register a model that predicts the whole film for ``structures_on`` and nothing for the others,
    trained (by its tags) on ``dataset`` and evaluated on that dataset's own test split."""
    client = connect_tracking(settings)
    experiment = client.get_experiment_by_name("promotion-test")
    experiment_id = (
        experiment.experiment_id
        if experiment is not None
        else client.create_experiment(
            "promotion-test", artifact_location=(Path(settings.work_dir) / "mlartifacts").as_uri()
        )
    )
    config = NetworkConfig(channels=settings.train.network_channels)
    network = build_network_from_config(config)
    output_bias = [p for p in network.parameters() if p.ndim == 1 and p.shape[0] == len(STRUCTURE_NAMES)][-1]
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.zero_()
        output_bias.copy_(torch.tensor([8.0 if s in structures_on else -8.0 for s in STRUCTURE_NAMES]))
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.set_tags(
            {
                DATASET_TAG: dataset,
                PREPROCESS_HASH_TAG: config_hash(settings.preprocess),
                "orthoseg.code_version": __version__,
            }
        )
        mlflow.log_params({"dataset_version": dataset, "train.architecture": "unet", "profile": "test"})
        log_segmentation_model(network, config, settings.preprocess)
    evaluate_run(settings, run.info.run_id, dataset)
    return register_model(settings, run.info.run_id, dataset).version
