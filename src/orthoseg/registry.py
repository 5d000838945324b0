"""The MLflow model registry: register evaluated runs, gate promotion against @champion, roll back, load.

This is the only module that talks to the registry. Versions carry their provenance as tags (dataset
version, code version, preprocessing hash, test Dice), so the promotion gate and a person reading the
MLflow UI compare models on the same numbers.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel

from orthoseg import __version__
from orthoseg.labels import STRUCTURE_NAMES

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from orthoseg.model_package import SegmentationModel
    from orthoseg.settings import Settings

logger = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
LATEST = "latest"
DICE_TAG = "test_dice_mean"


class RegistryError(LookupError):
    """A registry reference that does not resolve (unknown alias or version), or a run not ready to
    register; the message says what to do."""


class RegisteredModel(BaseModel):
    """One registered model version.

    Attributes:
        name: registered model name.
        version: version number, as MLflow returns it (a string).
        run_id: training run the version came from.
        model_uri: registry URI of the version (``models:/<name>/<version>``).
        tags: provenance and quality tags set on the version.
    """

    name: str
    version: str
    run_id: str
    model_uri: str
    tags: dict[str, str]


class PromotionDecision(BaseModel):
    """Outcome of the promotion gate (or of a rollback).

    Attributes:
        version: the candidate version.
        promoted: True when the candidate is @champion afterwards.
        alias: the alias the candidate received (``champion`` or ``challenger``).
        previous_champion: version that was @champion before, if any.
        candidate_dice_mean: the candidate's test Dice mean.
        champion_dice_mean: the previous champion's test Dice mean, if any.
        reason: one sentence a person can read in the pipeline log.
    """

    version: str
    promoted: bool
    alias: str
    previous_champion: str | None
    candidate_dice_mean: float | None
    champion_dice_mean: float | None
    reason: str


def _client(settings: Settings) -> MlflowClient:
    from orthoseg.model_package import connect_tracking

    return connect_tracking(settings)


def _alias_version(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def _get_version(client: MlflowClient, name: str, version: str) -> ModelVersion:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version(name, str(version))
    except MlflowException:
        raise RegistryError(f"model {name!r} has no version {version!r}") from None


def _dice(model_version: ModelVersion) -> float | None:
    value = model_version.tags.get(DICE_TAG)
    try:
        number = float(value) if value is not None else math.nan
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def register_model(settings: Settings, run_id: str, dataset_version: str | None = None) -> RegisteredModel:
    """Register an evaluated run's model as a new version of ``settings.model_name``.

    Registering the same run twice returns the existing version (the step is idempotent).

    Args:
        settings: MLflow URI and model name.
        run_id: training run with a logged model and ``test_dice_mean`` (``evaluate_run`` first).
        dataset_version: recorded as the version's ``dataset_version`` tag; default the run's own.

    Raises:
        RegistryError: when the run has no logged model or has not been evaluated.
    """
    import mlflow

    from orthoseg.model_package import MODEL_URI_TAG

    client = _client(settings)
    name = settings.model_name
    run = client.get_run(run_id)
    model_uri = run.data.tags.get(MODEL_URI_TAG)
    if not model_uri:
        raise RegistryError(f"run {run_id} has no logged model (tag {MODEL_URI_TAG}); train it first")
    metrics = run.data.metrics
    if DICE_TAG not in metrics:
        raise RegistryError(f"run {run_id} has no {DICE_TAG}; evaluate it before registering")
    tags = {
        "dataset_version": dataset_version
        or run.data.tags.get("orthoseg.dataset_version")
        or run.data.params.get("dataset_version", ""),
        "evaluated_dataset_version": run.data.tags.get("orthoseg.evaluated_dataset_version", ""),
        "code_version": run.data.tags.get("orthoseg.code_version", run.data.params.get("code_version", "")),
        "git_commit": run.data.params.get("git_commit", "unknown"),
        "preprocess_hash": run.data.tags.get("orthoseg.preprocess_hash", ""),
        "registered_by_code_version": __version__,
        DICE_TAG: f"{metrics[DICE_TAG]:.6f}",
    }
    for structure in STRUCTURE_NAMES:
        key = f"test_dice_{structure}"
        if key in metrics:
            tags[key] = f"{metrics[key]:.6f}"

    existing = client.search_model_versions(f"name='{name}' and run_id='{run_id}'")
    if existing:
        model_version = max(existing, key=lambda mv: int(mv.version))
        logger.info("Run %s is already %s version %s", run_id, name, model_version.version)
    else:
        model_version = mlflow.register_model(model_uri, name, tags=tags)
        logger.info("Registered run %s as %s version %s", run_id, name, model_version.version)
    for key, value in tags.items():
        client.set_model_version_tag(name, str(model_version.version), key, str(value))
    return RegisteredModel(
        name=name,
        version=str(model_version.version),
        run_id=run_id,
        model_uri=f"models:/{name}/{model_version.version}",
        tags={k: str(v) for k, v in tags.items()},
    )


def promote_model(settings: Settings, version: str, min_improvement: float = 0.0) -> PromotionDecision:
    """The promotion gate: the candidate becomes @champion only if it beats the current one.

    The candidate is promoted when there is no champion yet, or when its test Dice mean exceeds the
    champion's by more than ``min_improvement`` (a tie stays with the champion). Otherwise it is marked
    @challenger. Re-running the gate on the current champion changes nothing.

    Raises:
        RegistryError: when the version does not exist or carries no test Dice.
    """
    client = _client(settings)
    name = settings.model_name
    candidate = _get_version(client, name, version)
    candidate_dice = _dice(candidate)
    if candidate_dice is None:
        raise RegistryError(f"{name} version {version} has no {DICE_TAG} tag; register an evaluated run")
    champion = _alias_version(client, name, CHAMPION)
    champion_version = str(champion.version) if champion is not None else None
    champion_dice = _dice(champion) if champion is not None else None

    if champion_version == str(version):
        reason = f"version {version} is already {CHAMPION}"
        promoted = True
    elif champion is None:
        reason = f"no {CHAMPION} yet: version {version} (test Dice mean {candidate_dice:.4f}) takes the place"
        promoted = True
    elif champion_dice is None:
        reason = (
            f"{CHAMPION} version {champion_version} has no test Dice to compare with: version {version} "
            f"({candidate_dice:.4f}) replaces it"
        )
        promoted = True
    elif candidate_dice > champion_dice + min_improvement:
        reason = (
            f"test Dice mean {candidate_dice:.4f} beats {CHAMPION} version {champion_version} "
            f"({champion_dice:.4f}) by more than {min_improvement:g}"
        )
        promoted = True
    else:
        reason = (
            f"test Dice mean {candidate_dice:.4f} does not beat {CHAMPION} version {champion_version} "
            f"({champion_dice:.4f}) by more than {min_improvement:g}; kept as {CHALLENGER}"
        )
        promoted = False

    if promoted:
        client.set_registered_model_alias(name, CHAMPION, str(version))
        challenger = _alias_version(client, name, CHALLENGER)
        if challenger is not None and str(challenger.version) == str(version):
            client.delete_registered_model_alias(name, CHALLENGER)
    else:
        client.set_registered_model_alias(name, CHALLENGER, str(version))
    client.set_model_version_tag(name, str(version), "promotion_reason", reason)
    logger.info("Promotion of %s version %s: %s", name, version, reason)
    return PromotionDecision(
        version=str(version),
        promoted=promoted,
        alias=CHAMPION if promoted else CHALLENGER,
        previous_champion=champion_version,
        candidate_dice_mean=candidate_dice,
        champion_dice_mean=champion_dice,
        reason=reason,
    )


def rollback(settings: Settings, version: str) -> PromotionDecision:
    """Make ``version`` @champion without the gate (for the ML engineer undoing a bad promotion).

    Raises:
        RegistryError: when the version does not exist.
    """
    client = _client(settings)
    name = settings.model_name
    target = _get_version(client, name, version)
    champion = _alias_version(client, name, CHAMPION)
    previous = str(champion.version) if champion is not None else None
    client.set_registered_model_alias(name, CHAMPION, str(target.version))
    challenger = _alias_version(client, name, CHALLENGER)
    if challenger is not None and str(challenger.version) == str(target.version):
        client.delete_registered_model_alias(name, CHALLENGER)
    reason = f"rollback: {CHAMPION} set to version {target.version} by request (was {previous or 'none'})"
    client.set_model_version_tag(name, str(target.version), "promotion_reason", reason)
    logger.info(reason)
    return PromotionDecision(
        version=str(target.version),
        promoted=True,
        alias=CHAMPION,
        previous_champion=previous,
        candidate_dice_mean=_dice(target),
        champion_dice_mean=_dice(champion) if champion is not None else None,
        reason=reason,
    )


def _resolve(client: MlflowClient, name: str, ref: str) -> ModelVersion:
    ref = str(ref).strip()
    if ref.lower() == LATEST:
        versions = client.search_model_versions(f"name='{name}'")
        if not versions:
            raise RegistryError(f"model {name!r} has no versions; register one first")
        return max(versions, key=lambda mv: int(mv.version))
    if ref.isdigit():
        return _get_version(client, name, ref)
    alias = ref.lstrip("@")
    model_version = _alias_version(client, name, alias)
    if model_version is None:
        raise RegistryError(
            f"model {name!r} has no alias @{alias} (use an alias, a version number or 'latest')"
        )
    return model_version


def resolve_model(settings: Settings, ref: str = CHAMPION) -> tuple[str, str]:
    """Which version a reference means: an alias (``champion``, ``@challenger``), a number, or ``latest``.

    Returns:
        The version number and its registry URI ``models:/<name>/<version>``.

    Raises:
        RegistryError: when the reference does not resolve.
    """
    client = _client(settings)
    model_version = _resolve(client, settings.model_name, ref)
    return str(model_version.version), f"models:/{settings.model_name}/{model_version.version}"


def load_registered_model(settings: Settings, ref: str = CHAMPION) -> tuple[SegmentationModel, str]:
    """Resolve ``ref``, download the version's files (cached under ``<work_dir>/models/registry``) and
    load them without pickle.

    Returns:
        The loaded model and its version number.

    Raises:
        RegistryError: when the reference does not resolve.
    """
    from orthoseg.model_package import download_model

    client = _client(settings)
    model_version = _resolve(client, settings.model_name, ref)
    version = str(model_version.version)
    directory = (
        Path(settings.work_dir).expanduser().resolve() / "models" / "registry" / settings.model_name / version
    )
    model = download_model(str(model_version.source), directory)
    logger.info("Loaded %s version %s (%s)", settings.model_name, version, ref)
    return model, version


def load_model_from_uri(
    settings: Settings, model_uri: str | None, device: str | None = None
) -> tuple[SegmentationModel, str]:
    """A model to check or measure with, and where it came from.

    ``model_uri``: None for the registered model's ``champion``; a local folder holding ``model.json`` and
    ``weights.safetensors``; or any MLflow model URI (``models:/orthoseg-knee/3``, ``runs:/<run>/model``),
    downloaded once into ``<work_dir>/models/uri/<digest>/``.
    """
    import hashlib

    from orthoseg.model_package import SegmentationModel, connect_tracking, download_model

    if model_uri is None:
        model, version = load_registered_model(settings, CHAMPION)
        if device is not None:
            model = SegmentationModel(model.network, model.config, device=device)
        return model, f"models:/{settings.model_name}@{CHAMPION} (version {version})"
    local = Path(model_uri).expanduser()
    if local.is_dir():
        return SegmentationModel.from_directory(local, device=device), str(local.resolve())
    connect_tracking(settings)
    digest = hashlib.sha256(model_uri.encode()).hexdigest()[:16]
    cache = Path(settings.work_dir).expanduser().resolve() / "models" / "uri" / digest
    return download_model(model_uri, cache, device=device), model_uri
