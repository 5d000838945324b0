"""Retraining that judges itself: train only when enough new annotated images arrived since the champion.

Training costs an hour on the standard profile; a handful of new films cannot move the benchmark set, so
``retrain`` first (optionally) validates new incoming batches into a dataset version, counts the annotated
images the newest training dataset holds that the champion's dataset version did not (datasets accumulate,
so this is a difference of SOPInstanceUIDs), and trains, evaluates, registers and promotes (through the
benchmark gate) only when that count reaches ``Settings.promotion.retrain_min_new_images``. Otherwise it
returns, saying why. ``decide_retrain`` is that decision alone, without training: ``retrain`` acts on it,
and so does the training pipeline's gate step (``components.steps.retrain_gate_op``).

The new model starts from the champion's weights (a warm start: it need not re-learn what the champion
knows) when the champion's network is the configured one; from scratch when there is no champion, its
architecture differs, ``train.init_weights_uri`` names another model, or ``from_scratch`` asks for it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion

    from orthoseg.settings import Settings
    from orthoseg.training.warm_start import WarmStart

logger = logging.getLogger(__name__)


class RetrainOutcome(BaseModel):
    """What ``retrain`` decided and, when it trained, what came of it.

    Attributes:
        trained: whether a model was trained (False: not enough new annotations, a dry run, or only
            the decision, ``decide_retrain``).
        should_train: the decision: enough new annotated images, or ``force``.
        forced: training was forced although the count is below the threshold.
        reason: one sentence a person can read.
        dataset_version: the newest training dataset version.
        champion_version: the @champion the count is relative to (None: no champion yet).
        champion_dataset_version: the dataset version the champion was trained on.
        new_annotated_images: labelled images in ``dataset_version`` absent from the champion's version.
        threshold: ``Settings.promotion.retrain_min_new_images``.
        validated: dataset versions written by validating the given batches.
        run_id: the training run, when one was trained.
        registered_version: its registered version.
        promotion: the promotion decision (``orthoseg.promotion_audit.PromotionDecision`` as JSON).
        warm_start_from: the model whose weights started the training (None: from scratch, or not
            training).
        warm_start_reason: why it starts there (None when not training).
    """

    trained: bool
    should_train: bool = False
    forced: bool = False
    reason: str
    dataset_version: str
    champion_version: str | None = None
    champion_dataset_version: str | None = None
    new_annotated_images: int
    threshold: int
    validated: list[str] = []
    run_id: str | None = None
    registered_version: str | None = None
    promotion: dict[str, Any] | None = None
    warm_start_from: str | None = None
    warm_start_reason: str | None = None


def count_new_annotated_images(settings: Settings, dataset_version: str, since_version: str | None) -> int:
    """Labelled images in ``dataset_version`` whose SOPInstanceUID is not in ``since_version`` (all
    labelled images when ``since_version`` is None or unreadable)."""
    from orthoseg.dataset import DatasetError, read_manifest
    from orthoseg.storage import store_from_settings

    store = store_from_settings(settings)
    newest = read_manifest(store, dataset_version)
    labelled = set(newest.loc[newest["label_key"].notna(), "sop_instance_uid"].astype(str))
    if not since_version:
        return len(labelled)
    try:
        before = set(read_manifest(store, since_version)["sop_instance_uid"].astype(str))
    except DatasetError as error:
        logger.warning("Champion's dataset unreadable (%s): every labelled image counts as new", error)
        return len(labelled)
    return len(labelled - before)


def decide_retrain(
    settings: Settings,
    dataset_version: str | None = None,
    force: bool = False,
    from_scratch: bool = False,
) -> RetrainOutcome:
    """Decide, without training, whether to retrain on ``dataset_version`` and from which weights.

    The decision ``retrain`` acts on (and the training pipeline's gate step): counts the annotated
    images added since the champion's dataset version, compares the count with
    ``Settings.promotion.retrain_min_new_images``, and, when it will train, chooses the warm start.

    Args:
        settings: the store, the registry and ``promotion.retrain_min_new_images``.
        dataset_version: the training dataset version (None: the newest).
        force: train whatever the count.
        from_scratch: do not start from the champion's weights even when its architecture matches.

    Returns:
        ``trained`` False; ``should_train`` the decision; ``reason`` why; ``warm_start_from`` the model
        whose weights would start training (None: from scratch, or not training).

    Raises:
        orthoseg.dataset.DatasetError: when there is no training dataset version at all.
    """
    outcome, _, _ = _decide(settings, dataset_version, force=force, from_scratch=from_scratch)
    return outcome


def _decide(
    settings: Settings,
    dataset_version: str | None,
    force: bool,
    from_scratch: bool,
    dry_run: bool = False,
    validated: list[str] | None = None,
) -> tuple[RetrainOutcome, WarmStart | None, str]:
    """``decide_retrain``, plus the warm start's loaded weights (so training need not download them
    again) and the count in words for training's log; ``dry_run`` only changes the wording ("would
    train")."""
    from orthoseg.dataset import resolve_dataset_version
    from orthoseg.registry import CHAMPION, alias_version, tracking_client

    dataset_version = resolve_dataset_version(settings, dataset_version)
    champion = alias_version(tracking_client(settings), settings.model_name, CHAMPION)
    champion_dataset = champion.tags.get("dataset_version") if champion is not None else None
    new_images = count_new_annotated_images(settings, dataset_version, champion_dataset)
    threshold = settings.promotion.retrain_min_new_images
    since = (
        f"since champion v{champion.version}'s dataset {champion_dataset}" if champion else "(no champion)"
    )
    enough = new_images >= threshold
    outcome = RetrainOutcome(
        trained=False,
        should_train=enough or force,
        forced=force and not enough,
        reason="",
        dataset_version=dataset_version,
        champion_version=str(champion.version) if champion is not None else None,
        champion_dataset_version=champion_dataset,
        new_annotated_images=new_images,
        threshold=threshold,
        validated=validated or [],
    )
    counted = f"{new_images} new annotated images in {dataset_version} {since}"
    verdict = "reach" if enough else "are below"
    warm_start = None
    if outcome.should_train:
        warm_start = choose_warm_start(settings, champion, from_scratch)
        outcome.warm_start_from = warm_start.uri
        outcome.warm_start_reason = warm_start.reason
        forced = "" if enough else ", but training is forced"
        action = f"{'would train' if dry_run else 'training'} {outcome.warm_start_reason}"
        outcome.reason = f"{counted} {verdict} the threshold {threshold}{forced}: {action}"
    else:
        outcome.reason = f"{counted} {verdict} the threshold {threshold}: not training"
    logger.info(outcome.reason)
    return outcome, warm_start, f"{counted} (threshold {threshold}{', forced' * force})"


def retrain(
    settings: Settings,
    batches: list[tuple[str, str]] | None = None,
    force: bool = False,
    dry_run: bool = False,
    from_scratch: bool = False,
) -> RetrainOutcome:
    """Validate the given batches, then train, evaluate, register and promote when enough new annotated
    images arrived since the champion's dataset version (the decision is ``decide_retrain``'s).

    Args:
        settings: everything training needs, and ``promotion.retrain_min_new_images``.
        batches: ``(source, batch name)`` of incoming training batches to validate first.
        force: train whatever the count.
        dry_run: count and decide, but do not train.
        from_scratch: do not start from the champion's weights even when its architecture matches.

    Raises:
        orthoseg.dataset.DatasetError: when there is no training dataset version at all.
    """
    validated = []
    for source, batch in batches or []:
        from orthoseg.validation import validate_batch

        summary = validate_batch(settings, source, batch, "training")
        validated.append(str(summary.dataset_version))
    outcome, warm_start, why = _decide(
        settings, None, force=force, from_scratch=from_scratch, dry_run=dry_run, validated=validated
    )
    if dry_run or not outcome.should_train:
        return outcome
    return _train_and_promote(settings, outcome, why, warm_start)


def choose_warm_start(settings: Settings, champion: ModelVersion | None, from_scratch: bool) -> WarmStart:
    """Where retraining starts: the model URI whose weights start it (``uri`` None: from scratch), why
    (``reason``), and those weights, loaded once here and handed to training.

    Args:
        settings: the configured network, the model name, and ``train.init_weights_uri`` (which, when
            set, wins over the champion).
        champion: the @champion ``ModelVersion``, or None.
        from_scratch: asked to start from scratch.
    """
    from orthoseg.training.warm_start import WarmStart, network_mismatch, warm_start_from_model

    if from_scratch:
        return WarmStart(reason="from scratch, as asked")
    if settings.train.init_weights_uri:
        uri, source = settings.train.init_weights_uri, "train.init_weights_uri"
    elif champion is None:
        return WarmStart(reason="from scratch: there is no champion")
    else:
        uri, source = f"models:/{settings.model_name}/{champion.version}", f"champion v{champion.version}"
    model, why_not = network_mismatch(settings, uri)
    if model is None:
        return WarmStart(reason=f"from scratch: {source}'s {why_not}")
    loaded = warm_start_from_model(model, uri)
    return loaded.model_copy(update={"reason": f"from {source}'s weights ({uri}, same architecture)"})


def _train_and_promote(
    settings: Settings, outcome: RetrainOutcome, why: str, warm_start: WarmStart | None
) -> RetrainOutcome:
    """Train on the newest dataset version, evaluate, register and put it through the benchmark gate."""
    from orthoseg.evaluation import evaluate_run
    from orthoseg.registry import promote_model, register_model
    from orthoseg.training import run_training

    logger.info("Retraining: %s; %s", why, outcome.warm_start_reason)
    train = settings.train.model_copy(update={"init_weights_uri": outcome.warm_start_from})
    training = run_training(
        settings.model_copy(update={"train": train}), outcome.dataset_version, warm_start=warm_start
    )
    evaluate_run(settings, training.run_id, training.dataset_version)
    registered = register_model(settings, training.run_id, training.dataset_version)
    decision = promote_model(settings, registered.version, via="retrain")
    return outcome.model_copy(
        update={
            "trained": True,
            "reason": f"trained {outcome.warm_start_reason}: {why}; version {registered.version}: "
            f"{decision.reason}",
            "run_id": training.run_id,
            "registered_version": registered.version,
            "promotion": decision.model_dump(mode="json", exclude_none=True),
            # What training did: a model named in init_weights_uri may still differ from the network.
            "warm_start_from": training.warm_start_from,
            "warm_start_reason": outcome.warm_start_reason
            if training.warm_start_from == outcome.warm_start_from
            else f"from scratch: {training.warm_start}",
        }
    )
