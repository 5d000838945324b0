"""The training pipeline (kfp.local) trains only when enough annotated images arrived since the champion's
dataset version, from the champion's weights; otherwise it records why, and its outputs are still there.

Each step is a real kfp.local subprocess; training joins the session's Ray cluster, MLflow is a sqlite
file, and the incoming batch comes from the simulator and goes through validation like any other.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from orthoseg.demo import summarize_demo
from orthoseg.promotion import promote_model
from orthoseg.registry import DICE_TAG
from orthoseg.settings import Settings
from orthoseg.storage import store_from_settings
from orthoseg.training.warm_start import WARM_START_TAG
from pipelines.runner import run_training_pipeline
from tests.integration._dataset_helpers import write_dataset_version
from tests.integration._registry_helpers import BENCH, register_constant_model, write_policy

pytestmark = pytest.mark.usefixtures("ray_cluster")

BATCH = "clinic-2"
NEW_FILMS = 4
CHAMPION_URI = "models:/orthoseg-knee/1"


@pytest.fixture()
def champion(tmp_path: Path) -> Settings:
    """A champion (version 1, the configured tiny network) trained on v-bench, and an incoming batch of
    4 new annotated films. Steps join this session's Ray cluster rather than starting their own."""
    import ray

    settings = Settings(
        store=str(tmp_path / "store"),
        mlflow_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        work_dir=str(tmp_path / "work"),
        ray_address=ray.get_runtime_context().gcs_address,
        preprocess={"canvas_px": 64, "spacing_mm": 4.0},
        train={"epochs": 1, "batch_size": 2, "network_channels": (4, 8, 16), "num_workers": 1},
        promotion={"policy_path": str(write_policy(tmp_path / "policy.yaml")), "retrain_min_new_images": 20},
        # 256-pixel test films have up to 1.6 mm pixels, coarser than a real DX allows.
        validation={"pixel_spacing_ranges_mm": {"DX": (0.05, 2.0)}},
    )
    store = store_from_settings(settings)
    write_dataset_version(store, BENCH, count=6, seed=11, test_fraction=0.34)
    assert promote_model(settings, register_constant_model(settings, frozenset({"femur"}))).promoted
    from orthoseg.synth import SynthConfig, generate_dataset

    generate_dataset(store, SynthConfig(count=NEW_FILMS, seed=5, batch=BATCH, image_px=256, views=("AP",)))
    return settings


def _with_threshold(settings: Settings, threshold: int) -> Settings:
    promotion = settings.promotion.model_copy(update={"retrain_min_new_images": threshold})
    return settings.model_copy(update={"promotion": promotion})


def _run(settings: Settings) -> dict:
    source = str(Path(settings.store) / "incoming" / BATCH)
    return run_training_pipeline(settings, source, BATCH)


def test_too_few_new_annotations_skip_training_and_say_why(champion: Settings) -> None:
    outputs = _run(champion)
    assert outputs["validation"]["images_accepted"] == NEW_FILMS
    decision = outputs["decision"]
    assert decision["should_train"] is False and decision["trained"] is False
    assert (int(decision["new_annotated_images"]), int(decision["threshold"])) == (NEW_FILMS, 20)
    assert decision["champion_version"] == "1" and decision["champion_dataset_version"] == BENCH
    assert (
        f"{NEW_FILMS} new annotated images in {outputs['validation']['dataset_version']}"
        in (decision["reason"])
    )
    assert "below the threshold 20: not training" in decision["reason"]
    for output in ("training", "evaluation", "registered"):
        assert outputs[output] == {"skipped": True, "reason": decision["reason"]}
    assert outputs["retrain"] == f"skipped: {decision['reason']}"
    registry = MlflowClient(champion.mlflow_uri)
    assert [str(v.version) for v in registry.search_model_versions("name='orthoseg-knee'")] == ["1"]

    # The demo summarises a skipped run too (a second demo on one store): the model is the champion.
    inference = {
        "inference": {"images_inferred": 0, "images_failed": 0, "output_prefix": "p", "report_key": "r"}
    }
    summary = summarize_demo(champion, "tiny", outputs, inference, "1", time.perf_counter())
    assert (summary.model_version, summary.retrain) == ("1", outputs["retrain"])
    assert summary.promotion.startswith("champion (unchanged")
    assert summary.test_dice_mean == pytest.approx(
        float(registry.get_model_version("orthoseg-knee", "1").tags[DICE_TAG])
    )


def test_enough_new_annotations_train_from_the_champions_weights(champion: Settings) -> None:
    outputs = _run(_with_threshold(champion, NEW_FILMS))
    decision = outputs["decision"]
    assert decision["should_train"] is True and int(decision["new_annotated_images"]) == NEW_FILMS
    assert decision["warm_start_from"] == CHAMPION_URI
    assert "reach the threshold 4: training from champion v1's weights" in decision["reason"]
    training = outputs["training"]
    assert training["warm_start_from"] == CHAMPION_URI
    assert training["dataset_version"] == outputs["validation"]["dataset_version"]
    run = MlflowClient(champion.mlflow_uri).get_run(training["run_id"])
    assert run.data.tags[WARM_START_TAG] == CHAMPION_URI
    assert outputs["evaluation"]["run_id"] == training["run_id"]
    assert str(outputs["registered"]["version"]) == "2"
    assert outputs["retrain"].startswith(
        f"trained: {NEW_FILMS} new annotated images since champion v1 ≥ threshold {NEW_FILMS}; "
        f"from champion v1's weights ({CHAMPION_URI}, same architecture); registered version 2"
    )
