"""The promotion policy file is validated with clear errors, and the gate's rules apply to the numbers."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from orthoseg.promotion import judge
from orthoseg.promotion_audit import BenchmarkScores
from orthoseg.promotion_policy import (
    PolicyError,
    PromotionPolicy,
    load_policy,
    parse_policy,
    resolve_policy_path,
)

ROOT = Path(__file__).resolve().parents[2]
VALID = """
benchmark: {name: b, dataset_version: v1, split: test}
min_dice_mean: 0.6
min_mean_improvement: 0.01
max_structure_regression: 0.02
"""


def test_the_shipped_policy_is_valid_and_hashed_over_its_bytes() -> None:
    loaded = load_policy(ROOT / "mlflow" / "promotion.yaml")
    assert loaded.sha256 == hashlib.sha256((ROOT / "mlflow" / "promotion.yaml").read_bytes()).hexdigest()
    assert 0.0 < loaded.policy.min_dice_mean <= 1.0
    assert loaded.policy.benchmark.split == "test"
    assert not (ROOT / "mlflow" / "__init__.py").exists()


def test_a_relative_path_falls_back_to_the_source_checkout(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve_policy_path("mlflow/promotion.yaml") == (ROOT / "mlflow" / "promotion.yaml").resolve()


def test_a_valid_policy_parses_with_its_values() -> None:
    policy = parse_policy(VALID)
    assert policy.benchmark.dataset_version == "v1"
    assert (policy.min_dice_mean, policy.min_mean_improvement, policy.max_structure_regression) == (
        0.6,
        0.01,
        0.02,
    )
    assert policy.measurement_error is None


@pytest.mark.parametrize(
    ("text", "field", "message"),
    [
        (VALID.replace("min_dice_mean", "min_dice"), "min_dice_mean", "Field required"),
        (VALID + "min_dice: 0.5\n", "min_dice", "Extra inputs are not permitted"),
        (VALID.replace("0.6", "1.5"), "min_dice_mean", "less than or equal to 1"),
        (VALID.replace("max_structure_regression: 0.02", "max_structure_regression: -0.1"),
         "max_structure_regression", "greater than or equal to 0"),
        (VALID.replace("split: test", "split: holdout"), "benchmark.split", "'train', 'val' or 'test'"),
        (VALID.replace("dataset_version: v1, ", "sop_instance_uids: ['1.2'], "), "benchmark",
         "needs the dataset_version"),
        (VALID.replace("split: test", "sop_instance_uids: []"), "benchmark.sop_instance_uids",
         "at least one"),
        (VALID.replace("split: test", "sop_instance_uids: ['1.2', '1.2']"), "benchmark.sop_instance_uids",
         "more than once"),
        (VALID.replace("split: test", "sha256: abc"), "benchmark.sha256", "should match pattern"),
        ("min_dice_mean: 0.5\n", "benchmark", "Field required"),
        (VALID + "measurement_error: {enabled: true, max_angle_error_increase_deg: -1}\n",
         "measurement_error.max_angle_error_increase_deg", "greater than or equal to 0"),
        (VALID + "format_version: 2\n", "format_version", "Input should be 1"),
    ],
)  # fmt: skip
def test_a_bad_policy_is_an_error_naming_the_field(text: str, field: str, message: str) -> None:
    with pytest.raises(PolicyError) as error:
        parse_policy(text, "p.yaml")
    assert f"{field}: " in str(error.value) and message in str(error.value)
    assert "p.yaml" in str(error.value)


@pytest.mark.parametrize("text", ["- a\n- b\n", "benchmark: [unclosed\n", ""])
def test_a_policy_that_is_not_a_mapping_is_refused(text: str) -> None:
    with pytest.raises(PolicyError, match="promotion policy p.yaml"):
        parse_policy(text, "p.yaml")


def test_a_missing_policy_file_says_how_to_point_at_one(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="ORTHOSEG_PROMOTION__POLICY_PATH"):
        load_policy(tmp_path / "absent.yaml")


def _scores(version: str, **dice: float) -> BenchmarkScores:
    return BenchmarkScores(version=version, images=3, dice_mean=sum(dice.values()) / len(dice), dice=dice)


def _verdicts(policy: PromotionPolicy, candidate: BenchmarkScores, champion: BenchmarkScores | None):
    return {check.name: check.passed for check in judge(policy, candidate, champion)}


def test_without_a_champion_only_the_floor_applies() -> None:
    policy = parse_policy(VALID)
    assert _verdicts(policy, _scores("2", femur=0.7, tibia=0.6), None) == {"quality_floor": True}
    assert _verdicts(policy, _scores("2", femur=0.5, tibia=0.6), None) == {"quality_floor": False}


def test_a_better_mean_with_a_regressed_structure_fails_only_that_rule() -> None:
    policy = parse_policy(VALID)
    champion = _scores("1", femur=0.90, tibia=0.60, patella=0.60)
    candidate = _scores("2", femur=0.85, tibia=0.80, patella=0.59)
    checks = judge(policy, candidate, champion)
    assert {c.name: c.passed for c in checks} == {
        "quality_floor": True,
        "mean_improvement": True,
        "structure_non_regression": False,
    }
    detail = checks[-1].detail
    assert "femur" in detail and "patella" not in detail  # patella fell 0.01, within the 0.02 margin


def test_a_tie_or_a_gain_below_the_required_improvement_stays_with_the_champion() -> None:
    policy = parse_policy(VALID)
    champion = _scores("1", femur=0.80, tibia=0.70)
    assert _verdicts(policy, _scores("2", femur=0.80, tibia=0.70), champion)["mean_improvement"] is False
    assert _verdicts(policy, _scores("2", femur=0.81, tibia=0.70), champion)["mean_improvement"] is False
    assert _verdicts(policy, _scores("2", femur=0.83, tibia=0.70), champion)["mean_improvement"] is True


def test_the_measurement_error_rule_is_recorded_but_inert() -> None:
    policy = parse_policy(VALID + "measurement_error: {enabled: true}\n")
    checks = judge(policy, _scores("2", femur=0.9), _scores("1", femur=0.8))
    rule = next(c for c in checks if c.name == "measurement_error")
    assert rule.passed is None and "not evaluated" in rule.detail
