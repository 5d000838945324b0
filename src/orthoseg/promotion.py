"""Fair promotion: the candidate and the champion are scored on one frozen benchmark set, in the same
process, with the same code, and the policy decides on those numbers.

Each version's own test Dice comes from the test split of its own dataset version, and that split grows
as the clinic adds patients, so two versions' registration figures are exams of different difficulty.
Here both models are re-evaluated on the benchmark set the policy names (``orthoseg.promotion_policy``)
with ``orthoseg.evaluation.evaluate_model_on_split``; the policy's floor, required mean improvement and
per-structure non-regression margin are applied to those numbers; aliases move (``champion``,
``challenger``, ``previous``); and the decision is written to the registry (``orthoseg.promotion_audit``).
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

from orthoseg.promotion_audit import (
    BenchmarkRecord,
    BenchmarkScores,
    BenchmarkSource,
    DecisionStamp,
    GateCheck,
    PromotionDecision,
    decision_stamp,
    record_decision,
)
from orthoseg.promotion_policy import (
    BenchmarkSet,
    LoadedPolicy,
    PolicyError,
    PromotionPolicy,
    benchmark_fingerprint,
    benchmark_rows,
)
from orthoseg.registry import (
    CHALLENGER,
    CHAMPION,
    RegistryError,
    alias_version,
    get_version,
    load_registered_model,
    tracking_client,
)

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from orthoseg.progress import ProgressCallback
    from orthoseg.settings import Settings

logger = logging.getLogger(__name__)

PREVIOUS = "previous"
# Registered-model tag holding the benchmark set frozen by the first decision (policies without a
# pinned dataset version).
BENCHMARK_TAG = "orthoseg.benchmark"


class _DecisionFields(DecisionStamp):
    """The fields every decision of one ``promote_model`` call shares."""

    model_name: str
    version: str
    previous_champion: str | None
    policy_path: str
    policy_sha256: str


def _resolve_benchmark(
    client: MlflowClient, name: str, policy: PromotionPolicy, candidate_dataset: str
) -> tuple[BenchmarkSet, BenchmarkSource]:
    """The benchmark set to use and where it came from (``policy``, ``registry`` or ``frozen now``)."""
    if policy.benchmark.dataset_version:
        return policy.benchmark, "policy"
    frozen = client.get_registered_model(name).tags.get(BENCHMARK_TAG)
    if frozen:
        record = json.loads(frozen)
        pinned = {k: record[k] for k in ("dataset_version", "split", "sha256")}
        return policy.benchmark.model_copy(update=pinned), "registry"
    if not candidate_dataset:
        raise PolicyError(
            "the policy pins no benchmark dataset_version and the candidate has no dataset_version tag to "
            "freeze one from; set benchmark.dataset_version in the policy"
        )
    return policy.benchmark.model_copy(update={"dataset_version": candidate_dataset}), "frozen now"


def _score(
    settings: Settings, version: str, benchmark: BenchmarkSet, progress: ProgressCallback | None = None
) -> BenchmarkScores:
    """Load one registered version and score it on the benchmark set (native grid, as evaluation does)."""
    from orthoseg.evaluation import evaluate_model_on_split

    model, _ = load_registered_model(settings, version)
    result = evaluate_model_on_split(
        model,
        settings,
        benchmark.dataset_version,
        benchmark.split,
        progress=progress,
        sop_instance_uids=benchmark.sop_instance_uids,
    )
    return BenchmarkScores(
        version=version,
        images=result.images,
        dice_mean=result.dice_mean,
        dice=result.dice,
        hd95_mm_mean=result.hd95_mm_mean,
    )


def judge(
    policy: PromotionPolicy, candidate: BenchmarkScores, champion: BenchmarkScores | None
) -> list[GateCheck]:
    """Apply the policy's rules to two sets of benchmark scores (no champion: the floor only).

    Dice values are fractions in [0, 1]; margins are absolute differences of Dice.
    """
    mean = candidate.dice_mean
    floor = policy.min_dice_mean
    checks = [
        GateCheck(
            name="quality_floor",
            passed=mean is not None and mean >= floor,
            detail=f"Dice mean {_fmt(mean)} {'≥' if mean is not None and mean >= floor else '<'} "
            f"floor {floor:g}",
        )
    ]
    if champion is None:
        return checks
    gain = None if mean is None or champion.dice_mean is None else mean - champion.dice_mean
    needed = policy.min_mean_improvement
    checks.append(
        GateCheck(
            name="mean_improvement",
            passed=gain is not None and gain > 0 and gain >= needed,
            detail=f"Dice mean {_fmt(mean)} vs champion v{champion.version} {_fmt(champion.dice_mean)}: "
            f"change {_fmt(gain, signed=True)}, required > 0 and ≥ {needed:g}",
        )
    )
    margin = policy.max_structure_regression
    drops = {
        structure: value - candidate.dice.get(structure, 0.0)
        for structure, value in champion.dice.items()
        if value - candidate.dice.get(structure, 0.0) > margin
    }
    if drops:
        detail = "; ".join(
            f"{s} Dice {candidate.dice.get(s, 0.0):.4f} is {drop:.4f} below champion's "
            f"{champion.dice[s]:.4f} (margin {margin:g})"
            for s, drop in sorted(drops.items(), key=lambda item: -item[1])
        )
    else:
        detail = f"no structure more than {margin:g} below the champion"
    checks.append(GateCheck(name="structure_non_regression", passed=not drops, detail=detail))
    if policy.measurement_error is not None:
        checks.append(
            GateCheck(
                name="measurement_error",
                passed=None,
                detail="not evaluated: the benchmark set has no measurement ground truth yet (inert rule)",
            )
        )
    return checks


def _unseen_check(settings: Settings, rows: pd.DataFrame, candidate: ModelVersion) -> GateCheck:
    """The candidate must not have trained on a benchmark image (same image bytes in its train/val)."""
    from orthoseg.dataset import DatasetError, read_manifest
    from orthoseg.storage import store_from_settings

    dataset = candidate.tags.get("dataset_version", "")
    try:
        manifest = read_manifest(store_from_settings(settings), dataset) if dataset else None
    except DatasetError as error:
        return GateCheck(name="benchmark_unseen_in_training", passed=None, detail=f"not evaluated: {error}")
    if manifest is None:
        return GateCheck(name="benchmark_unseen_in_training", passed=None, detail="no dataset_version tag")
    seen = set(manifest.loc[manifest["split"].isin(["train", "val"]), "sha256"])
    overlap = int(rows["sha256"].isin(seen).sum())
    return GateCheck(
        name="benchmark_unseen_in_training",
        passed=overlap == 0,
        detail=f"{overlap} of {len(rows)} benchmark images are in the train/val splits of {dataset}",
    )


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def _move_champion(client: MlflowClient, name: str, version: str, old: str | None) -> None:
    """``version`` becomes @champion; the outgoing champion becomes @previous; @challenger is cleared
    when it pointed at ``version``."""
    if old is not None and old != version:
        client.set_registered_model_alias(name, PREVIOUS, old)
    client.set_registered_model_alias(name, CHAMPION, version)
    challenger = alias_version(client, name, CHALLENGER)
    if challenger is not None and str(challenger.version) == version:
        client.delete_registered_model_alias(name, CHALLENGER)


def promote_model(
    settings: Settings,
    version: str,
    force: bool = False,
    via: str = "library",
    policy: LoadedPolicy | None = None,
    progress: ProgressCallback | None = None,
) -> PromotionDecision:
    """The promotion gate on the frozen benchmark set.

    The candidate and the current @champion are both scored on the policy's benchmark set here; the
    candidate becomes @champion when it clears the floor, beats the champion's mean by the required
    improvement, regresses no structure beyond the margin, and never trained on a benchmark image.
    Without a champion only the floor (and the unseen check) apply. Otherwise it becomes @challenger.
    ``force`` promotes regardless, recorded as forced (the numbers are still measured when they can
    be). Re-running the gate on the current champion changes and records nothing.

    Args:
        settings: MLflow URI, model name, store and ``promotion.policy_path``.
        version: the registered version to consider.
        force: promote even when the gate refuses.
        via: the entry point, for the audit trail (``cli``, ``kfp pipeline``).
        policy: an already loaded policy; default the file ``settings.promotion.policy_path``.
        progress: called as ``(images scored, images to score)`` over both models.

    Raises:
        RegistryError: when the version does not exist.
        PolicyError: when the policy is missing or invalid.
        orthoseg.dataset.DatasetError: when the benchmark set cannot be read (not with ``force``).
    """
    from orthoseg.promotion_policy import policy_from_settings

    loaded = policy or policy_from_settings(settings)
    client = tracking_client(settings)
    name, version = settings.model_name, str(version)
    candidate = get_version(client, name, version)
    champion = alias_version(client, name, CHAMPION)
    old = str(champion.version) if champion is not None else None
    stamp = decision_stamp(version, via)
    base: _DecisionFields = {
        "model_name": name,
        "version": version,
        "previous_champion": old,
        **stamp,
        "policy_path": loaded.path,
        "policy_sha256": loaded.sha256,
    }
    if old == version:
        reason = f"version {version} is already {CHAMPION}; nothing to decide"
        return PromotionDecision(
            action="none",
            promoted=True,
            alias=CHAMPION,
            reason=reason,
            candidate_dice_mean=None,
            champion_dice_mean=None,
            **base,
        )

    record = None
    scores: tuple[BenchmarkScores | None, BenchmarkScores | None] = (None, None)
    checks: list[GateCheck] = []
    try:
        benchmark, source = _resolve_benchmark(
            client, name, loaded.policy, candidate.tags.get("dataset_version", "")
        )
        rows = benchmark_rows(settings, benchmark)
        fingerprint = benchmark_fingerprint(rows)
        if benchmark.sha256 and benchmark.sha256 != fingerprint:
            raise PolicyError(
                f"benchmark {benchmark.name!r} ({benchmark.dataset_version}/{benchmark.split}) changed: its "
                f"fingerprint is {fingerprint}, the frozen one {benchmark.sha256}"
            )
        record = BenchmarkRecord(
            name=benchmark.name,
            dataset_version=str(benchmark.dataset_version),
            split=benchmark.split,
            images=len(rows),
            sha256=fingerprint,
            source=source,
        )
        logger.info("Scoring %s v%s and champion v%s on benchmark %s", name, version, old, record.name)
        models = 2 if old else 1

        def tick(offset: int) -> ProgressCallback | None:
            return None if progress is None else lambda done, total: progress(offset + done, models * total)

        scores = (
            _score(settings, version, benchmark, tick(0)),
            _score(settings, old, benchmark, tick(len(rows))) if old else None,
        )
        checks = [*judge(loaded.policy, scores[0], scores[1]), _unseen_check(settings, rows, candidate)]
    except Exception as error:
        if not force:
            raise
        checks.append(GateCheck(name="benchmark", passed=None, detail=f"not evaluated: {error}"))

    failed = [c for c in checks if c.passed is False]
    promoted = force or not failed
    where = "without benchmark numbers"
    if record is not None:
        where = (
            f"on benchmark {record.name} ({record.dataset_version}/{record.split}, {record.images} images)"
        )
    if failed:
        verdict = f"refused {where}: " + "; ".join(f"{c.name}: {c.detail}" for c in failed)
        reason = f"forced by {stamp['decided_by']} although the gate {verdict}" if force else verdict
    else:
        passed = "; ".join(c.detail for c in checks if c.passed)
        forced = f"forced by {stamp['decided_by']} (the gate agreed) and " if force else ""
        reason = f"{forced}promoted {where}: {passed}"
        reason = reason if old else f"no {CHAMPION} yet; {reason}"
    if promoted:
        _move_champion(client, name, version, old)
    else:
        client.set_registered_model_alias(name, CHALLENGER, version)
    frozen_record = record if record is not None and record.source == "frozen now" else None
    if frozen_record is not None:
        frozen = {
            "name": frozen_record.name,
            "dataset_version": frozen_record.dataset_version,
            "split": frozen_record.split,
            "sha256": frozen_record.sha256,
            "frozen_at": stamp["decided_at"],
            "frozen_by": stamp["decision_id"],
        }
        client.set_registered_model_tag(name, BENCHMARK_TAG, json.dumps(frozen, sort_keys=True))
    decision = PromotionDecision(
        action="promote",
        promoted=promoted,
        forced=force,
        alias=CHAMPION if promoted else CHALLENGER,
        reason=reason,
        checks=checks,
        candidate=scores[0],
        champion=scores[1],
        benchmark=record,
        candidate_dice_mean=scores[0].dice_mean if scores[0] else None,
        champion_dice_mean=scores[1].dice_mean if scores[1] else None,
        **base,
    )
    record_decision(client, decision, candidate.run_id)
    _refresh_model_card(client, decision)
    frozen_note = " (benchmark frozen)" if frozen_record is not None else ""
    logger.info("Promotion of %s v%s: %s%s", name, version, reason, frozen_note)
    return decision


def rollback(settings: Settings, version: str | None = None, via: str = "library") -> PromotionDecision:
    """Make ``version`` (default: @previous) @champion without the gate, and record it.

    For the ML engineer undoing a bad promotion; the outgoing champion becomes @previous, so a second
    rollback undoes the first.

    Raises:
        RegistryError: when the version does not exist, there is no @previous, or it already is champion.
    """
    client = tracking_client(settings)
    name = settings.model_name
    if version is None:
        target = alias_version(client, name, PREVIOUS)
        if target is None:
            raise RegistryError(f"model {name!r} has no @{PREVIOUS} to roll back to; name a --version")
    else:
        target = get_version(client, name, str(version))
    version = str(target.version)
    champion = alias_version(client, name, CHAMPION)
    old = str(champion.version) if champion is not None else None
    if old == version:
        raise RegistryError(f"version {version} already is @{CHAMPION}; nothing to roll back")
    _move_champion(client, name, version, old)
    stamp = decision_stamp(version, via)
    reason = (
        f"rollback by {stamp['decided_by']}: {CHAMPION} set to version {version} (was {old or 'none'}), "
        "without the gate"
    )
    decision = PromotionDecision(
        action="rollback",
        model_name=name,
        version=version,
        promoted=True,
        forced=True,
        alias=CHAMPION,
        previous_champion=old,
        reason=reason,
        **stamp,
    )
    record_decision(client, decision, target.run_id)
    logger.info(reason)
    return decision


def _refresh_model_card(client: MlflowClient, decision: PromotionDecision) -> None:
    """Add the benchmark figures of this decision to the version's model card (its description)."""
    from orthoseg.model_card import render_model_card

    version = get_version(client, decision.model_name, decision.version)
    card = render_model_card(decision.model_name, version.version, version.tags, decision)
    client.update_model_version(decision.model_name, decision.version, description=card)
