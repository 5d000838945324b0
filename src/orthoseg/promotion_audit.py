"""The audit trail of promotion decisions: what was decided, by whom, on which numbers, under which policy.

Every decision (promotion, refusal, forced promotion, rollback) is written three times, so it survives
whichever part of the registry a person looks at:

- model-version tags ``promotion.*`` on the version decided about (the latest decision for it);
- a registered-model tag ``orthoseg.decision.<decision id>`` holding the whole decision as JSON (the
  history ``orthoseg registry history`` prints; ids sort by time);
- a JSON artifact ``promotion/<decision id>.json`` in the version's training run.
"""

from __future__ import annotations

import getpass
import json
import logging
import socket
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Literal, TypedDict

from pydantic import BaseModel

from orthoseg import __version__

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from rich.table import Table

    from orthoseg.settings import Settings

logger = logging.getLogger(__name__)

DECISION_TAG_PREFIX = "orthoseg.decision."
ARTIFACT_FOLDER = "promotion"


class BenchmarkScores(BaseModel):
    """One model's scores on the benchmark set, measured at promotion time.

    Attributes:
        version: registered model version.
        images: benchmark images scored.
        dice_mean: mean over the structures present in the set (None when none is).
        dice: Dice per structure (structures present in the set only).
        hd95_mm_mean: mean HD95 in millimetres (None when nothing could be scored).
    """

    version: str
    images: int
    dice_mean: float | None = None
    dice: dict[str, float]
    hd95_mm_mean: float | None = None


# Where a decision's benchmark set came from: pinned in the policy file, frozen by an earlier decision in
# the registry, or frozen by this decision.
BenchmarkSource = Literal["policy", "registry", "frozen now"]


class BenchmarkRecord(BaseModel):
    """Which frozen set a decision used.

    Attributes:
        name: the policy's name for the set.
        dataset_version: dataset version holding the images.
        split: their split.
        images: how many images.
        sha256: fingerprint of the set (SOPInstanceUIDs with image and label digests).
        source: ``policy`` (pinned in the file), ``registry`` (frozen by an earlier decision) or
            ``frozen now`` (this decision froze it).
    """

    name: str
    dataset_version: str
    split: str
    images: int
    sha256: str
    source: BenchmarkSource


class GateCheck(BaseModel):
    """One rule of the policy applied to the numbers.

    Attributes:
        name: ``quality_floor``, ``mean_improvement``, ``structure_non_regression``,
            ``benchmark_unseen_in_training`` or ``measurement_error``.
        passed: True, False, or None when the rule could not be evaluated (it then does not refuse).
        detail: the numbers behind the verdict, in a sentence.
    """

    name: str
    passed: bool | None
    detail: str


class PromotionDecision(BaseModel):
    """A promotion decision (or rollback), as returned to the caller and written to the registry.

    Attributes:
        decision_id: ``<UTC time>-v<version>``; sorts chronologically.
        action: ``promote`` (the gate ran), ``rollback`` or ``none`` (the version already was champion).
        model_name: registered model name.
        version: the version decided about.
        promoted: True when the version is @champion afterwards.
        forced: True when ``--force`` overrode the gate.
        alias: alias the version holds afterwards (``champion`` or ``challenger``).
        previous_champion: version that was @champion before (now @previous when it changed).
        candidate_dice_mean: the version's benchmark Dice mean (None for a rollback: nothing is measured).
        champion_dice_mean: the previous champion's, measured the same way.
        reason: one sentence a person can read in a log.
        checks: each policy rule's verdict.
        candidate: the version's benchmark scores.
        champion: the previous champion's benchmark scores, measured in the same process.
        benchmark: the benchmark set used.
        policy_path: the policy file.
        policy_sha256: sha256 of the policy file's bytes.
        decided_by: the operating-system user who ran the decision.
        decided_via: the entry point (``cli``, ``kfp pipeline``, ``library``), code version and host.
        decided_at: ISO-8601 UTC time.
    """

    decision_id: str
    action: Literal["promote", "rollback", "none"]
    model_name: str
    version: str
    promoted: bool
    forced: bool = False
    alias: str
    previous_champion: str | None = None
    candidate_dice_mean: float | None = None
    champion_dice_mean: float | None = None
    reason: str
    checks: list[GateCheck] = []
    candidate: BenchmarkScores | None = None
    champion: BenchmarkScores | None = None
    benchmark: BenchmarkRecord | None = None
    policy_path: str | None = None
    policy_sha256: str | None = None
    decided_by: str
    decided_via: str
    decided_at: str


class DecisionHistory(BaseModel):
    """Every recorded decision of one registered model, oldest first."""

    model_name: str
    decisions: list[PromotionDecision]


def current_user() -> str:
    """Who is deciding: the operating-system user (``getpass``: LOGNAME, USER, ... then the password
    database), ``unknown`` when none can be found (some containers)."""
    try:
        return getpass.getuser()
    except Exception:  # no user name anywhere: record that rather than fail a decision
        return "unknown"


class DecisionStamp(TypedDict):
    """Who took a decision, when, and through which entry point (fields of ``PromotionDecision``)."""

    decision_id: str
    decided_at: str
    decided_by: str
    decided_via: str


def decision_stamp(version: str, via: str) -> DecisionStamp:
    """The id, time, user and entry point of a decision taken now."""
    now = datetime.now(timezone.utc)
    return {
        "decision_id": f"{now.strftime('%Y%m%dT%H%M%S%fZ')}-v{version}",
        "decided_at": now.isoformat(timespec="seconds"),
        "decided_by": current_user(),
        "decided_via": f"{via} (orthoseg {__version__} on {socket.gethostname()})",
    }


def record_decision(client: MlflowClient, decision: PromotionDecision, run_id: str | None) -> None:
    """Write a decision to the registry: version tags, the registered-model history tag, and the JSON
    artifact in the version's training run (skipped with a warning when the run cannot take it)."""
    name, version = decision.model_name, decision.version
    outcome = "forced" if decision.forced else ("promoted" if decision.promoted else "refused")
    tags = {
        "promotion.decision_id": decision.decision_id,
        "promotion.action": decision.action,
        "promotion.outcome": outcome if decision.action == "promote" else decision.action,
        "promotion.forced": str(decision.forced).lower(),
        "promotion.decided_by": decision.decided_by,
        "promotion.decided_at": decision.decided_at,
        "promotion.policy_sha256": decision.policy_sha256 or "",
        "promotion_reason": decision.reason,
    }
    if decision.benchmark is not None:
        bench = decision.benchmark
        tags["promotion.benchmark"] = f"{bench.name}: {bench.dataset_version}/{bench.split} ({bench.images})"
    if decision.candidate_dice_mean is not None:
        tags["promotion.benchmark_dice_mean"] = f"{decision.candidate_dice_mean:.6f}"
    payload = decision.model_dump(mode="json", exclude_none=True)
    if run_id:
        artifact = f"{ARTIFACT_FOLDER}/{decision.decision_id}.json"
        try:
            client.log_dict(run_id, payload, artifact)
            tags["promotion.artifact"] = f"runs:/{run_id}/{artifact}"
        except Exception as error:  # the registry tags below still hold the whole decision
            logger.warning("Could not log %s to run %s: %s", artifact, run_id, error)
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    client.set_registered_model_tag(
        name, DECISION_TAG_PREFIX + decision.decision_id, json.dumps(payload, sort_keys=True)
    )


def decision_history(settings: Settings) -> DecisionHistory:
    """All recorded decisions of ``settings.model_name``, oldest first.

    Raises:
        orthoseg.registry.RegistryError: when the model is not registered.
    """
    from mlflow.exceptions import MlflowException

    from orthoseg.model_package import connect_tracking
    from orthoseg.registry import RegistryError

    client = connect_tracking(settings)
    try:
        model = client.get_registered_model(settings.model_name)
    except MlflowException:
        raise RegistryError(f"model {settings.model_name!r} is not registered yet") from None
    decisions = [
        PromotionDecision.model_validate_json(value)
        for key, value in sorted(model.tags.items())
        if key.startswith(DECISION_TAG_PREFIX)
    ]
    return DecisionHistory(model_name=settings.model_name, decisions=decisions)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def render_history_table(history: DecisionHistory) -> Table:
    """The history as a table a person reads: one row per decision, oldest first."""
    from rich.table import Table

    table = Table(title=f"promotion decisions of {history.model_name}", title_justify="left")
    for column in ("when (UTC)", "action", "version", "outcome", "was champion", "Dice", "champ. Dice"):
        table.add_column(column)
    table.add_column("by")
    table.add_column("reason", overflow="fold")
    for d in history.decisions:
        if d.action == "promote":
            outcome = "forced" if d.forced else ("champion" if d.promoted else "refused")
        else:
            outcome = d.alias
        table.add_row(
            d.decided_at.replace("+00:00", ""),
            d.action,
            d.version,
            outcome,
            d.previous_champion or "-",
            _number(d.candidate_dice_mean),
            _number(d.champion_dice_mean),
            d.decided_by,
            d.reason,
        )
    return table
