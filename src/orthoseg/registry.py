"""The MLflow model registry: register evaluated runs, resolve aliases, load versions.

Versions carry their provenance as tags (dataset version, code version, preprocessing hash, test Dice)
and a short model card as their description (``orthoseg.model_card``). The promotion gate, which
scores candidate and champion on one frozen benchmark set, lives in ``orthoseg.promotion``;
``promote_model`` and ``rollback`` here delegate to it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel

from orthoseg import __version__
from orthoseg.labels import STRUCTURE_NAMES

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from orthoseg.model_package import SegmentationModel
    from orthoseg.progress import ProgressCallback
    from orthoseg.promotion_audit import PromotionDecision
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


def tracking_client(settings: Settings) -> MlflowClient:
    """A client for the tracking server and registry ``settings`` name."""
    from orthoseg.model_package import connect_tracking

    return connect_tracking(settings)


# What MLflow answers when the model or the alias does not exist (the model: RESOURCE_DOES_NOT_EXIST; the
# alias on an existing model: INVALID_PARAMETER_VALUE). Anything else, e.g. an unreachable server, is a
# fault and propagates.
_NO_SUCH_ALIAS = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


def alias_version(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    """The version behind ``alias``, or None when the model or the alias does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as error:
        if error.error_code in _NO_SUCH_ALIAS:
            return None
        raise


def get_version(client: MlflowClient, name: str, version: str) -> ModelVersion:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version(name, str(version))
    except MlflowException:
        raise RegistryError(f"model {name!r} has no version {version!r}") from None


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

    client = tracking_client(settings)
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
        "architecture": run.data.params.get("train.architecture", ""),
        "training_profile": run.data.params.get("profile", ""),
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
    _write_model_card(settings, client, name, str(model_version.version), tags)
    return RegisteredModel(
        name=name,
        version=str(model_version.version),
        run_id=run_id,
        model_uri=f"models:/{name}/{model_version.version}",
        tags={k: str(v) for k, v in tags.items()},
    )


def _write_model_card(
    settings: Settings, client: MlflowClient, name: str, version: str, tags: dict[str, str]
) -> None:
    """Count the training data (per split, view and implant category), keep the counts as the
    ``model_card.training_data`` tag and write the model card as the version's description."""
    from orthoseg.model_card import TRAINING_DATA_TAG, render_model_card, summarize_training_data

    summary = summarize_training_data(settings, tags["dataset_version"])
    if summary is not None:
        tags = {**tags, TRAINING_DATA_TAG: summary.model_dump_json()}
        client.set_model_version_tag(name, version, TRAINING_DATA_TAG, tags[TRAINING_DATA_TAG])
    client.update_model_version(name, version, description=render_model_card(name, version, tags))


def promote_model(
    settings: Settings,
    version: str,
    force: bool = False,
    via: str = "library",
    progress: ProgressCallback | None = None,
) -> PromotionDecision:
    """The promotion gate on the policy's frozen benchmark set (``orthoseg.promotion.promote_model``)."""
    from orthoseg.promotion import promote_model as promote

    return promote(settings, version, force=force, via=via, progress=progress)


def rollback(settings: Settings, version: str | None = None, via: str = "library") -> PromotionDecision:
    """Make ``version`` (default @previous) champion without the gate (``orthoseg.promotion.rollback``)."""
    from orthoseg.promotion import rollback as roll_back

    return roll_back(settings, version, via=via)


def _resolve(client: MlflowClient, name: str, ref: str) -> ModelVersion:
    ref = str(ref).strip()
    if ref.lower() == LATEST:
        versions = client.search_model_versions(f"name='{name}'")
        if not versions:
            raise RegistryError(f"model {name!r} has no versions; register one first")
        return max(versions, key=lambda mv: int(mv.version))
    if ref.isdigit():
        return get_version(client, name, ref)
    alias = ref.lstrip("@")
    model_version = alias_version(client, name, alias)
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
    client = tracking_client(settings)
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

    client = tracking_client(settings)
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
