"""Fair promotion against a real MLflow registry (sqlite): candidate and champion scored on one frozen
benchmark set, aliases champion / challenger / previous, rollback, forced promotion, the audit trail.

The models are real networks logged exactly as training logs them, with weights set so that each
structure's output is a known constant (the whole film, or nothing): on films where a structure is
present, predicting it everywhere scores a higher Dice than predicting nothing, so how two models
compare is known in advance, which is what the gate's rules are about.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from orthoseg import __version__
from orthoseg.evaluation import evaluate_model_on_split
from orthoseg.labels import STRUCTURE_NAMES
from orthoseg.model_package import connect_tracking
from orthoseg.promotion import BENCHMARK_TAG, PREVIOUS, promote_model, rollback
from orthoseg.promotion_audit import decision_history
from orthoseg.promotion_policy import PolicyError
from orthoseg.registry import RegistryError, load_registered_model, resolve_model
from orthoseg.settings import Settings
from orthoseg.storage import store_from_settings
from tests.integration._dataset_helpers import write_dataset_version
from tests.integration._registry_helpers import BENCH, register_constant_model, write_policy

NEW = "v-new"
# Cement is absent from half the films, where predicting none scores Dice 1: it stays off in every
# model, so that switching a structure on always raises its Dice.
ALL = frozenset(STRUCTURE_NAMES) - {"cement"}


@pytest.fixture(scope="module")
def store_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One store with two dataset versions of different films and different test splits."""
    root = tmp_path_factory.mktemp("promotion-store")
    store = store_from_settings(Settings(store=str(root)))
    write_dataset_version(store, BENCH, count=6, seed=11, test_fraction=0.34)
    write_dataset_version(store, NEW, count=8, seed=23, test_fraction=0.5)
    return root


@pytest.fixture()
def env(store_root: Path, tmp_path: Path) -> Settings:
    """A fresh registry over the shared store, with a policy pinned to the v-bench test split."""
    return Settings(
        store=str(store_root),
        mlflow_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        work_dir=str(tmp_path / "work"),
        preprocess={"canvas_px": 64, "spacing_mm": 4.0},
        train={"network_channels": (4, 8, 16)},
        promotion={"policy_path": str(write_policy(tmp_path / "policy.yaml"))},
    )


def _with_policy(settings: Settings, **overrides: object) -> Settings:
    path = write_policy(Path(settings.work_dir).parent / "policy-override.yaml", **overrides)
    return settings.model_copy(
        update={"promotion": settings.promotion.model_copy(update={"policy_path": str(path)})}
    )


def _aliases(settings: Settings) -> dict[str, str]:
    model = connect_tracking(settings).get_registered_model(settings.model_name)
    return {alias: str(version) for alias, version in model.aliases.items()}


def test_the_first_candidate_is_judged_against_the_floor_only(env: Settings) -> None:
    femur_only = register_constant_model(env, frozenset({"femur"}))
    refused = promote_model(_with_policy(env, min_dice_mean=0.99), femur_only)
    assert (refused.promoted, refused.alias, refused.champion) == (False, "challenger", None)
    assert "quality_floor" in refused.reason and _aliases(env) == {"challenger": femur_only}

    decision = promote_model(env, femur_only)
    assert (decision.promoted, decision.alias, decision.previous_champion) == (True, "champion", None)
    assert {c.name for c in decision.checks} == {"quality_floor", "benchmark_unseen_in_training"}
    assert "no champion yet" in decision.reason
    assert _aliases(env) == {"champion": femur_only}  # the challenger alias went with the promotion
    assert promote_model(env, femur_only).action == "none"  # re-running on the champion decides nothing
    assert len(decision_history(env).decisions) == 2


def test_a_better_candidate_is_promoted_and_the_old_champion_becomes_previous(env: Settings) -> None:
    femur_only = register_constant_model(env, frozenset({"femur"}))
    everything = register_constant_model(env, ALL)
    first = promote_model(env, femur_only)
    second = promote_model(env, everything)
    assert (second.promoted, second.alias, second.previous_champion) == (True, "champion", femur_only)
    assert _aliases(env) == {"champion": everything, PREVIOUS: femur_only}
    # The champion was scored again, in this process, on the same set: the same numbers as before.
    assert second.champion is not None and first.candidate is not None
    assert second.champion.dice == first.candidate.dice
    assert second.candidate is not None and second.candidate.images == second.champion.images
    assert second.candidate_dice_mean > second.champion_dice_mean
    assert all(c.passed is not False for c in second.checks)


def test_a_candidate_that_regresses_a_structure_is_refused_naming_it(env: Settings) -> None:
    femur_only = register_constant_model(env, frozenset({"femur"}))
    all_but_femur = register_constant_model(env, ALL - {"femur"})
    promote_model(env, femur_only)
    decision = promote_model(env, all_but_femur)
    assert (decision.promoted, decision.alias) == (False, "challenger")
    verdicts = {c.name: c.passed for c in decision.checks}
    assert verdicts["mean_improvement"] is True  # a better mean does not excuse losing the femur
    assert verdicts["structure_non_regression"] is False
    assert "structure_non_regression" in decision.reason and "femur" in decision.reason
    assert "tibia" not in decision.reason
    assert _aliases(env) == {"champion": femur_only, "challenger": all_but_femur}
    tags = connect_tracking(env).get_model_version(env.model_name, all_but_femur).tags
    assert tags["promotion.outcome"] == "refused" and "femur" in tags["promotion_reason"]


def test_the_candidate_is_judged_on_the_benchmark_not_on_its_own_test_split(env: Settings) -> None:
    champion = register_constant_model(env, frozenset({"femur", "tibia"}), dataset=BENCH)
    # The candidate was trained and evaluated on another dataset version, with another test split.
    candidate = register_constant_model(env, ALL, dataset=NEW)
    promote_model(env, champion)
    decision = promote_model(env, candidate)

    assert decision.benchmark is not None and decision.benchmark.dataset_version == BENCH
    tags = connect_tracking(env).get_model_version(env.model_name, candidate).tags
    assert tags["evaluated_dataset_version"] == NEW
    model, _ = load_registered_model(env, candidate)
    on_benchmark = evaluate_model_on_split(model, env, BENCH, "test")
    assert decision.candidate is not None and decision.champion is not None
    assert decision.candidate.images == decision.champion.images == on_benchmark.images
    assert decision.candidate_dice_mean == pytest.approx(on_benchmark.dice_mean, abs=1e-12)
    assert decision.candidate_dice_mean != pytest.approx(float(tags["test_dice_mean"]), abs=1e-6)
    assert decision.candidate.dice.keys() == decision.champion.dice.keys()
    unseen = next(c for c in decision.checks if c.name == "benchmark_unseen_in_training")
    assert unseen.passed is True and f"0 of {on_benchmark.images}" in unseen.detail


def test_a_benchmark_the_candidate_trained_on_is_refused(env: Settings) -> None:
    version = register_constant_model(env, ALL, dataset=BENCH)
    decision = promote_model(_with_policy(env, benchmark={"split": "train"}), version)
    assert not decision.promoted
    assert "benchmark_unseen_in_training" in decision.reason


def test_an_unpinned_benchmark_is_frozen_by_the_first_decision(env: Settings) -> None:
    settings = _with_policy(env, benchmark={"dataset_version": None})
    first = promote_model(settings, register_constant_model(settings, frozenset({"femur"}), dataset=BENCH))
    assert first.benchmark is not None and first.benchmark.source == "frozen now"
    frozen = json.loads(connect_tracking(env).get_registered_model(env.model_name).tags[BENCHMARK_TAG])
    assert (frozen["dataset_version"], frozen["split"]) == (BENCH, "test")
    second = promote_model(settings, register_constant_model(settings, ALL, dataset=NEW))
    assert second.benchmark is not None
    assert (second.benchmark.source, second.benchmark.dataset_version) == ("registry", BENCH)
    assert second.benchmark.sha256 == first.benchmark.sha256


def test_a_changed_benchmark_is_refused(env: Settings) -> None:
    version = register_constant_model(env, ALL)
    with pytest.raises(PolicyError, match="changed"):
        promote_model(_with_policy(env, benchmark={"sha256": "0" * 64}), version)


def test_rollback_restores_previous_and_is_recorded(env: Settings) -> None:
    with pytest.raises(RegistryError):
        rollback(env)  # nothing registered, nothing to roll back to
    femur_only = register_constant_model(env, frozenset({"femur"}))
    everything = register_constant_model(env, ALL)
    promote_model(env, femur_only)
    with pytest.raises(RegistryError, match="previous"):
        rollback(env)
    promote_model(env, everything)

    undone = rollback(env)
    assert (undone.action, undone.version, undone.previous_champion) == ("rollback", femur_only, everything)
    assert _aliases(env) == {"champion": femur_only, PREVIOUS: everything}
    assert resolve_model(env, "champion")[0] == femur_only
    again = rollback(env, version=everything)
    assert again.version == everything and _aliases(env)["champion"] == everything
    with pytest.raises(RegistryError, match="already"):
        rollback(env, version=everything)
    actions = [d.action for d in decision_history(env).decisions]
    assert actions == ["promote", "promote", "rollback", "rollback"]


def test_a_forced_promotion_is_recorded_as_forced(env: Settings) -> None:
    everything = register_constant_model(env, ALL)
    femur_only = register_constant_model(env, frozenset({"femur"}))
    promote_model(env, everything)
    decision = promote_model(env, femur_only, force=True, via="test")
    assert (decision.promoted, decision.forced, decision.alias) == (True, True, "champion")
    assert "forced by" in decision.reason and "refused" in decision.reason
    assert any(c.passed is False for c in decision.checks)  # the numbers behind the override are kept
    assert _aliases(env) == {"champion": femur_only, PREVIOUS: everything}

    client = connect_tracking(env)
    version = client.get_model_version(env.model_name, femur_only)
    assert version.tags["promotion.forced"] == "true" and version.tags["promotion.outcome"] == "forced"
    assert version.tags["promotion.decision_id"] == decision.decision_id
    artifact = Path(
        mlflow.artifacts.download_artifacts(version.tags["promotion.artifact"], dst_path=env.work_dir)
    )
    recorded = json.loads(artifact.read_text())
    assert recorded["forced"] is True and recorded["decided_via"].startswith("test")
    assert recorded["policy_sha256"] == decision.policy_sha256 and len(recorded["policy_sha256"]) == 64
    assert recorded["champion"]["version"] == everything and recorded["candidate"]["dice"]
    assert decision_history(env).decisions[-1].forced


def test_the_model_card_describes_data_code_metrics_and_limits(env: Settings) -> None:
    version = register_constant_model(env, ALL)
    client = connect_tracking(env)
    card = client.get_model_version(env.model_name, version).description
    assert f"dataset version `{BENCH}`" in card
    assert "images: 6 (" in card and "AP 6" in card
    assert f"orthoseg {__version__}" in card and "architecture unet" in card
    assert "not a medical device" in card and "research use" in card.lower()
    assert "benchmark" not in card.split("**Metrics**")[1]
    promote_model(env, version)
    card = client.get_model_version(env.model_name, version).description
    assert "benchmark knee-bench" in card and "Last promotion decision" in card


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    environment = {
        **os.environ,
        "ORTHOSEG_STORE": settings.store,
        "ORTHOSEG_MLFLOW_URI": settings.mlflow_uri,
        "ORTHOSEG_WORK_DIR": settings.work_dir,
        "ORTHOSEG_PROMOTION__POLICY_PATH": settings.promotion.policy_path,
        "COLUMNS": "200",
    }
    return subprocess.run(
        [sys.executable, "-m", "orthoseg.cli", *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_registry_history_and_rollback_from_the_command_line(env: Settings) -> None:
    femur_only = register_constant_model(env, frozenset({"femur"}))
    everything = register_constant_model(env, ALL)
    promote_model(env, femur_only)
    promote_model(env, everything)
    rolled = _cli(env, "rollback", "--json")
    assert rolled.returncode == 0, rolled.stderr
    assert json.loads(rolled.stdout)["version"] == femur_only

    listed = _cli(env, "registry", "history", "--json")
    assert listed.returncode == 0, listed.stderr
    history = json.loads(listed.stdout)
    assert [(d["action"], d["version"]) for d in history["decisions"]] == [
        ("promote", femur_only),
        ("promote", everything),
        ("rollback", femur_only),
    ]
    assert history["decisions"][-1]["decided_via"].startswith("cli")
    assert history["decisions"][1]["champion"]["version"] == femur_only

    table = _cli(env, "registry", "history")
    assert table.returncode == 0, table.stderr
    assert "promotion decisions of orthoseg-knee" in table.stdout
    assert "rollback" in table.stdout and "champion" in table.stdout
    missing = _cli(env, "rollback", "--version", "99")
    assert (
        missing.returncode == 2 and "no version '99'" in missing.stderr and "Traceback" not in missing.stderr
    )


def test_force_promotes_even_when_the_benchmark_cannot_be_read(env: Settings) -> None:
    from orthoseg.dataset import DatasetError

    version = register_constant_model(env, ALL)
    settings = _with_policy(env, benchmark={"dataset_version": "v-missing"})
    with pytest.raises(DatasetError, match="v-missing"):
        promote_model(settings, version)
    decision = promote_model(settings, version, force=True)
    assert (decision.promoted, decision.forced, decision.benchmark) == (True, True, None)
    assert [(c.name, c.passed) for c in decision.checks] == [("benchmark", None)]
    assert "without benchmark numbers" in decision.reason and "v-missing" in decision.checks[0].detail
