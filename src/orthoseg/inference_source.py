"""Where an inference run reads from and with what: the radiograph keys of a source, the model to run,
and the run id that makes a re-run resume."""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orthoseg.batch_layout import radiograph_keys
from orthoseg.storage import LocalStore, ObjectStore, local_path, open_store, store_from_settings

if TYPE_CHECKING:
    from orthoseg.model_package import SegmentationModel
    from orthoseg.settings import Settings


class InferenceError(ValueError):
    """An inference run that cannot start (unknown source, no model); the message says what to fix."""


@dataclass(frozen=True)
class InferenceSource:
    """Where the radiographs are: a store (opened by each worker) and the keys inside it.

    Attributes:
        store_uri: store root the keys are relative to (local folder or ``s3://``).
        endpoint_url: S3 endpoint for ``store_uri``.
        keys: radiograph keys, sorted.
        canonical: stable description of the source (input of the default run id).
        sizes_bytes: size of each key where the listing gave it (a dataset manifest does not).
    """

    store_uri: str
    endpoint_url: str | None
    keys: tuple[str, ...]
    canonical: str
    sizes_bytes: dict[str, int] = field(default_factory=dict, compare=False)


def resolve_source(settings: Settings, source: str) -> InferenceSource:
    """Turn ``source`` into a store and the radiograph keys in it.

    Args:
        settings: project settings (the store, its endpoint).
        source: ``dataset:<version>`` (or ``dataset:latest``): the manifest's ``image_key`` column;
            ``dataset:<version>@<batch>``: only the rows that batch brought in;
            ``s3://bucket/prefix`` or ``file://`` / an existing local folder: every radiograph below it;
            anything else: a key prefix inside the project store (e.g. ``incoming/<batch>``).

    Raises:
        InferenceError: when the source does not exist or holds no file.
    """
    if source.startswith("dataset:"):
        from orthoseg.dataset import read_manifest, resolve_dataset_version

        requested, _, batch = source[len("dataset:") :].strip().partition("@")
        version = resolve_dataset_version(settings, None if requested in {"", "latest"} else requested)
        manifest = read_manifest(store_from_settings(settings), version)
        if batch:
            manifest = manifest[manifest["batch"] == batch]
        keys = tuple(sorted(str(k) for k in manifest["image_key"].dropna()))
        if not keys:
            origin = f" from batch {batch!r}" if batch else ""
            raise InferenceError(f"dataset {version} has no image{origin}")
        canonical = f"dataset:{version}" + (f"@{batch}" if batch else "")
        return InferenceSource(settings.store, settings.s3_endpoint_url, keys, canonical)
    if source.startswith("s3://"):
        store = open_store(
            source, endpoint_url=settings.s3_endpoint_url, max_attempts=settings.s3_max_attempts
        )
        keys, sizes = _listed(store)
        if not keys:
            raise InferenceError(f"no file under {source}")
        return InferenceSource(store.uri, settings.s3_endpoint_url, keys, store.uri, sizes)
    local = local_path(source)
    if local.is_dir():
        store = LocalStore(local)
        keys, sizes = _listed(store)
        return InferenceSource(store.uri, None, keys, store.uri, sizes)
    store = store_from_settings(settings)
    prefix = source.strip("/")
    keys, sizes = _listed(store, prefix) if prefix else ((), {})
    if not keys:
        raise InferenceError(
            f"source {source!r} is not dataset:<version>, an s3:// URI, a local folder, "
            f"or a prefix with files in the store {store.uri}"
        )
    return InferenceSource(store.uri, settings.s3_endpoint_url, keys, f"{store.uri}/{prefix}", sizes)


def validated_batch_source(validation: dict[str, Any]) -> str:
    """The inference source for the files a validation run accepted (its ``ValidationSummary`` as JSON).

    Raises:
        InferenceError: when validation accepted nothing, with the quarantine counts to look at.
    """
    version = validation.get("dataset_version")
    if not version:
        raise InferenceError(
            f"batch {validation.get('batch')!r}: no file was accepted by validation "
            f"({validation.get('quarantined', 0)} quarantined, see {validation.get('report_key')})"
        )
    return f"dataset:{version}@{validation['batch']}"


def _listed(store: ObjectStore, prefix: str = "") -> tuple[tuple[str, ...], dict[str, int]]:
    """Radiograph keys under ``prefix`` and their sizes (links report size 0 and fail when read)."""
    infos = {info.key: info for info in store.list_info(prefix)}
    keys = tuple(radiograph_keys(list(infos), prefix))
    return keys, {k: infos[k].size_bytes for k in keys if not infos[k].is_link}


def load_model(settings: Settings, model_ref: str) -> tuple[SegmentationModel, str, str]:
    """Load the model to run: a local model folder (``model.json`` + weights), else from the registry.

    Returns:
        (model, model name, model version); a folder's version is ``dir-<digest of model.json>``.

    Raises:
        InferenceError: when the registry is not available and ``model_ref`` is not a model folder.
    """
    from orthoseg.model_package import CONFIG_FILE, SegmentationModel, config_hash

    folder = local_path(model_ref)
    if folder.is_dir() and any(folder.rglob(CONFIG_FILE)):
        model = SegmentationModel.from_directory(folder, device="cpu")
        return model, settings.model_name, f"dir-{config_hash(model.config)}"
    try:
        from orthoseg.registry import load_registered_model
    except ImportError as error:
        raise InferenceError(
            f"model {model_ref!r} is not a model folder and the registry is not available ({error})"
        ) from None
    model, version = load_registered_model(settings, ref=model_ref)
    return model, settings.model_name, str(version)


def model_files(model: SegmentationModel) -> dict[str, bytes]:
    """The model's two files as bytes, so every Ray worker (on any node) can rebuild it without MLflow."""
    from orthoseg.model_package import CONFIG_FILE, WEIGHTS_FILE, save_model_artifacts

    with tempfile.TemporaryDirectory(prefix="orthoseg-infer-model-") as tmp:
        save_model_artifacts(tmp, model.network, model.config.network, model.preprocess, model.threshold)
        return {name: (Path(tmp) / name).read_bytes() for name in (WEIGHTS_FILE, CONFIG_FILE)}


def default_run_id(source: InferenceSource, model_version: str) -> str:
    """Deterministic short id of (source, model version): the same inputs resume the same run."""
    return hashlib.sha256(f"{source.canonical}\n{model_version}".encode()).hexdigest()[:12]


def key_digest(key: str) -> str:
    """What logs show of an input key (file names can carry patient names)."""
    return hashlib.sha256(key.encode()).hexdigest()[:10]
