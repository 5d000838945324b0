"""Batch inference with Ray Data: DICOM SEG, overlay and measurements per radiograph, then a run report.

Layout of a run (docs/contracts.md), under ``predictions/<model-version>/<run-id>/``::

    seg/<SOPInstanceUID>.dcm        DICOM SEG (one BINARY segment per structure) referencing the image
    overlays/<SOPInstanceUID>.png   the radiograph with outlines, axes and line zones, for people
    thumbnails/<SOPInstanceUID>.jpg the overlay, small (embedded in the report)
    rows/<image-key digest>.json    one measurement row per input file, written last (completion marker)
    measurements.parquet            one row per input file (failed ones with status and reason)
    summary.json, report.html

The run id defaults to a digest of (source, model version), so running ``infer`` again on the same source
resumes: files whose row says ``ok`` and whose SEG and overlay exist are skipped, the rest (new files,
earlier failures, a crash's remainder) are processed. A broken file never stops the run: it gets a row
with ``status='failed'`` and a reason a person can act on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import posixpath
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, Field

from orthoseg.compute import connect_ray, quiet_ray_data
from orthoseg.confidence import (
    ModelConfidence,
    predict_canvas_with_confidence,
    rank_annotate_next,
)
from orthoseg.inference_config import InferenceConfig
from orthoseg.inference_outputs import write_run_outputs
from orthoseg.labels import STRUCTURE_NAMES
from orthoseg.progress import ProgressCallback
from orthoseg.storage import LocalStore, ObjectStore, join_key, open_store, store_from_settings

if TYPE_CHECKING:
    from orthoseg.model_package import SegmentationModel
    from orthoseg.settings import Settings

logger = logging.getLogger(__name__)


# File names that are never radiographs (reports, ground truth, masks exported as images, sidecars).
_NOT_IMAGE_SUFFIXES = (".json", ".png", ".jpg", ".jpeg", ".parquet", ".html", ".txt", ".md", ".csv", ".npz")
# Credentials the driver forwards to Ray workers so they open the same S3 store (see InferenceConfig).
_STORE_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_CA_BUNDLE",
)


class InferenceError(ValueError):
    """An inference run that cannot start (unknown source, no model); the message says what to fix."""


class InferenceSummary(BaseModel):
    """What one ``run_inference`` call did.

    Attributes:
        model_name: registered model name.
        model_version: model version (registry version, or ``dir-<digest>`` for a model folder).
        run_id: output run id (``predictions/<model_version>/<run_id>``).
        source: the source as given.
        images_total: input files found.
        images_inferred: processed by this call.
        images_skipped: done by an earlier call with the same run id (not processed again): ``ok``, or
            failed for a reason in the unchanged file itself.
        images_failed: files that could not be processed (their rows carry the reason).
        failures: input key -> reason, for the failed files.
        images_unmarked: processed by this call, but their completion marker (``rows/<digest>.json``)
            could not be written: their results are in this run's table, and a re-run processes them again.
        unmarked: input key -> why the marker could not be written, for those images.
        output_prefix: store key prefix of the run's outputs.
        measurements_key: store key of ``measurements.parquet``.
        report_key: store key of ``report.html``.
        seconds: wall time of the call.
        annotate_next: SOPInstanceUIDs of the least confident images, least confident first
            (``InferenceConfig.annotate_next_count`` at most; empty with one pass).
    """

    model_name: str
    model_version: str
    run_id: str
    source: str
    images_total: int
    images_inferred: int
    images_skipped: int
    images_failed: int
    failures: dict[str, str] = Field(default_factory=dict)
    images_unmarked: int = 0
    unmarked: dict[str, str] = Field(default_factory=dict)
    output_prefix: str
    measurements_key: str
    report_key: str
    seconds: float
    annotate_next: list[str] = Field(default_factory=list)


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


# ----------------------------------------------------------------------------- source and model


def select_image_keys(keys: list[str], prefix: str = "") -> list[str]:
    """The keys that may be radiographs: a batch folder's ``images/`` when it has one, never sidecars.

    Hidden files and known non-image suffixes (JSON, PNG, reports) are left out; anything else is tried
    and, if it is not a usable radiograph, reported as failed with the reason.
    """
    base = prefix.strip("/")

    def relative(key: str) -> str:
        return key[len(base) + 1 :] if base and key.startswith(base + "/") else key

    candidates = [
        k
        for k in keys
        if not posixpath.basename(k).startswith(".") and not k.lower().endswith(_NOT_IMAGE_SUFFIXES)
    ]
    in_images = [k for k in candidates if relative(k).startswith("images/")]
    return sorted(in_images or candidates)


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
        store = open_store(source, endpoint_url=settings.s3_endpoint_url)
        keys, sizes = _listed(store)
        if not keys:
            raise InferenceError(f"no file under {source}")
        return InferenceSource(store.uri, settings.s3_endpoint_url, keys, store.uri, sizes)
    local = Path(source[len("file://") :] if source.startswith("file://") else source).expanduser()
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
    # ObjectStore's method named ``list`` shadows the builtin in its own annotations; mypy misreads them.
    infos = {info.key: info for info in store.list_info(prefix)}  # type: ignore[attr-defined]
    keys = tuple(select_image_keys(list(infos), prefix))
    return keys, {k: infos[k].size_bytes for k in keys if not infos[k].is_link}


def load_model(settings: Settings, model_ref: str) -> tuple[SegmentationModel, str, str]:
    """Load the model to run: a local model folder (``model.json`` + weights), else from the registry.

    Returns:
        (model, model name, model version); a folder's version is ``dir-<digest of model.json>``.

    Raises:
        InferenceError: when the registry is not available and ``model_ref`` is not a model folder.
    """
    from orthoseg.model_package import CONFIG_FILE, SegmentationModel, config_hash

    folder = Path(model_ref[len("file://") :] if model_ref.startswith("file://") else model_ref).expanduser()
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


def row_key(output_prefix: str, image_key: str) -> str:
    """Key of the row file of one input (a digest of its key: file names may carry anything)."""
    return join_key(output_prefix, "rows", hashlib.sha256(image_key.encode()).hexdigest()[:24] + ".json")


def _deterministic_uid(*parts: str) -> str:
    """A DICOM UID (2.25 form) derived from ``parts``: a re-run writes the same SEG UIDs."""
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, '|'.join(parts)).int}"


def _key_digest(key: str) -> str:
    """What logs show of an input key (file names can carry patient names)."""
    return hashlib.sha256(key.encode()).hexdigest()[:10]


# ----------------------------------------------------------------------------- the Ray worker


def _columns_toward_patient_left(header: Any) -> bool:
    """From PatientOrientation's row direction ('L' or 'R'); the radiological AP convention otherwise."""
    orientation = getattr(header, "PatientOrientation", None)
    try:
        first = str(orientation[0]).upper() if orientation else ""
    except (TypeError, IndexError):
        first = ""
    return not first.startswith("R")


def _clean(value: Any) -> Any:
    """JSON-safe scalars (no NaN, no numpy types)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class InferenceWorker:
    """One Ray actor: loads the model once, then turns batches of image keys into written results.

    ``__call__`` is what Ray Data calls per batch; it returns one JSON row per input key and writes the
    SEG, overlay and row of every image itself (the driver only counts and collects the rows).
    """

    def __init__(
        self,
        settings: Settings,
        source_uri: str,
        source_endpoint_url: str | None,
        files: dict[str, bytes],
        model_name: str,
        model_version: str,
        run_id: str,
        output_prefix: str,
        config: InferenceConfig,
    ) -> None:
        import torch

        from orthoseg.model_package import SegmentationModel

        # Ray: this runs once per actor; the model stays in memory for every batch the actor receives.
        torch.set_num_threads(max(1, int(config.num_cpus_per_actor)))
        with tempfile.TemporaryDirectory(prefix="orthoseg-model-") as tmp:
            for name, data in files.items():
                (Path(tmp) / name).write_bytes(data)
            self.model = SegmentationModel.from_directory(tmp)
        self.source = open_store(source_uri, endpoint_url=source_endpoint_url)
        self.output = store_from_settings(settings)
        self.model_name = model_name
        self.model_version = model_version
        self.run_id = run_id
        self.output_prefix = output_prefix
        self.config = config

    def _base_row(self, image_key: str) -> dict[str, Any]:
        return {
            "image_key": image_key,
            "model_name": self.model_name,
            "model_version": self.model_version,
            "run_id": self.run_id,
            "from_earlier_run": False,
        }

    def _prepare(self, row: dict[str, Any]) -> tuple[Any, Any, np.ndarray, Any]:
        from orthoseg.preprocessing import preprocess_radiograph
        from orthoseg.radiograph import read_header, read_radiograph

        data = self.source.get_bytes(row["image_key"])
        row["input_size_bytes"] = len(data)
        radiograph = read_radiograph(data)
        header = read_header(data)
        # The model's own preprocessing (saved with it), never the current settings'.
        canvas, transform = preprocess_radiograph(
            radiograph.pixels, radiograph.pixel_spacing_mm, self.model.preprocess
        )
        return radiograph, header, canvas, transform

    def _finish(
        self, row: dict[str, Any], radiograph: Any, header: Any, probabilities: np.ndarray, transform: Any
    ) -> None:
        from orthoseg.measure.drawing import MeasurementDrawing
        from orthoseg.measure.knees import measure_knees
        from orthoseg.overlay import overlay_png_bytes, thumbnail_jpeg
        from orthoseg.seg_io import build_seg, seg_to_bytes

        uid = radiograph.sop_instance_uid
        masks = self.model.native_masks(probabilities, transform, radiograph.pixels)
        drawing = MeasurementDrawing()
        knees = measure_knees(
            masks,
            radiograph.pixel_spacing_mm,
            laterality=radiograph.laterality,
            view_position=radiograph.view_position,
            columns_toward_patient_left=_columns_toward_patient_left(header),
            config=self.config.measurement,
            pixels=radiograph.pixels,
            drawing=drawing,
        )
        seg = build_seg(
            header,
            masks,
            automatic=True,
            algorithm=f"{self.model_name} v{self.model_version}",
            series_instance_uid=_deterministic_uid(uid, self.model_version, self.run_id, "series"),
            sop_instance_uid=_deterministic_uid(uid, self.model_version, self.run_id, "seg"),
        )
        seg_key = join_key(self.output_prefix, "seg", f"{uid}.dcm")
        overlay_key = join_key(self.output_prefix, "overlays", f"{uid}.png")
        thumbnail_key = join_key(self.output_prefix, "thumbnails", f"{uid}.jpg")
        self.output.put_bytes(seg_key, seg_to_bytes(seg))
        overlay = overlay_png_bytes(
            radiograph.pixels, masks, self.config.overlay_max_side_px, drawing=drawing
        )
        self.output.put_bytes(overlay_key, overlay)
        self.output.put_bytes(thumbnail_key, thumbnail_jpeg(overlay))
        spacing = radiograph.pixel_spacing_mm
        row.update(
            {
                "status": "ok",
                "reason": None,
                "seg_key": seg_key,
                "overlay_key": overlay_key,
                "thumbnail_key": thumbnail_key,
                "canvas_spacing_mm": transform.canvas_spacing_mm,
                "pixel_spacing_row_mm": spacing[0] if spacing else None,
                "pixel_spacing_col_mm": spacing[1] if spacing else None,
            }
        )
        side, measured = knees[0]
        row.update(measured.model_dump())
        row["knee"] = side
        if len(knees) > 1:  # a bilateral film: one parquet row per knee (inference_outputs.knee_rows)
            row["other_knees"] = [{"knee": k, **m.model_dump()} for k, m in knees[1:]]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        keys = [str(k) for k in batch["image_key"]]
        rows: dict[str, dict[str, Any]] = {k: self._base_row(k) for k in keys}
        # Per image: its own read/preprocess/post-process/write time, plus an equal share of the batched
        # forward pass it was part of (that pass cannot be timed per image).
        own = dict.fromkeys(keys, 0.0)
        forward_share = dict.fromkeys(keys, 0.0)
        prepared: list[tuple[str, Any, Any, np.ndarray, Any]] = []
        for key in keys:
            tick = time.perf_counter()
            try:
                radiograph, header, canvas, transform = self._prepare(rows[key])
            except Exception as error:  # a broken file must never stop the run
                self._fail(rows[key], error)
                own[key] += time.perf_counter() - tick
                continue
            own[key] += time.perf_counter() - tick
            rows[key].update(
                {
                    "sop_instance_uid": radiograph.sop_instance_uid,
                    "modality": radiograph.attributes.get("Modality", ""),
                    "view_position": radiograph.view_position,
                    "laterality": radiograph.laterality,
                    "study_instance_uid": radiograph.attributes.get("StudyInstanceUID", ""),
                    "photometric_interpretation": radiograph.photometric_interpretation,
                    "rows": int(radiograph.pixels.shape[0]),
                    "columns": int(radiograph.pixels.shape[1]),
                }
            )
            prepared.append((key, radiograph, header, canvas, transform))
        # Films larger than the training canvas get larger canvases: one forward pass per canvas shape.
        by_shape: dict[tuple[int, ...], list[tuple[str, Any, Any, np.ndarray, Any]]] = {}
        for item in prepared:
            by_shape.setdefault(item[3].shape, []).append(item)
        for group in by_shape.values():
            canvases = np.stack([p[3] for p in group])[:, None]
            tick = time.perf_counter()
            try:
                # Mean probabilities over the test-time augmented passes (one pass: predict_canvas's).
                probabilities, confidences = predict_canvas_with_confidence(
                    self.model,
                    canvases,
                    [p[4].canvas_spacing_mm for p in group],
                    self.config.tta_passes,
                    self.config.confidence,
                    batch_size=len(group),
                )
            except Exception as error:
                for key, *_ in group:
                    self._fail(rows[key], error)
                continue
            finally:
                share = (time.perf_counter() - tick) / len(group)
                for key, *_ in group:
                    forward_share[key] = share
            for index, (key, radiograph, header, _, transform) in enumerate(group):
                tick = time.perf_counter()
                try:
                    self._finish(rows[key], radiograph, header, probabilities[index], transform)
                    _record_confidence(
                        rows[key], None if confidences is None else confidences[index], self.config
                    )
                except Exception as error:
                    self._fail(rows[key], error)
                own[key] += time.perf_counter() - tick
        return self._mark_done(keys, rows, own, forward_share)

    def _mark_done(
        self,
        keys: list[str],
        rows: dict[str, dict[str, Any]],
        own: dict[str, float],
        forward_share: dict[str, float],
    ) -> dict[str, np.ndarray]:
        """Write each image's row (its completion marker, written last); a row that cannot be written is
        logged and returned with ``completion_marker_error`` (the driver counts it; a re-run redoes it)."""
        out = []
        for key in keys:
            row = rows[key]
            row["forward_share_seconds"] = forward_share[key]
            row["image_seconds"] = own[key] + forward_share[key]
            text = json.dumps({k: _clean(v) for k, v in row.items()}, sort_keys=True)
            try:
                self.output.put_bytes(row_key(self.output_prefix, key), text.encode())
            except Exception as error:
                reason = f"{type(error).__name__}: {error}"
                logger.error("completion marker of image %s not written: %s", _key_digest(key), reason)
                row["completion_marker_error"] = reason
                text = json.dumps({k: _clean(v) for k, v in row.items()}, sort_keys=True)
            out.append(text)
        return {"image_key": np.asarray(keys, dtype=object), "row_json": np.asarray(out, dtype=object)}

    @staticmethod
    def _fail(row: dict[str, Any], error: Exception) -> None:
        from orthoseg.radiograph import RadiographError
        from orthoseg.storage import StoreError

        known = isinstance(error, RadiographError | StoreError | ValueError)
        reason = str(error) if known else f"{type(error).__name__}: {error}"
        # A file that is not a usable radiograph fails the same way every time; anything else may not.
        retryable = not isinstance(error, RadiographError)
        row.update({"status": "failed", "reason": reason or type(error).__name__, "retryable": retryable})
        logger.warning("inference failed for image %s: %s", _key_digest(row["image_key"]), reason)


def _record_confidence(
    row: dict[str, Any], confidence: ModelConfidence | None, config: InferenceConfig
) -> None:
    """Write the network's confidence into a measured row and flag the row when it is low.

    ``model_confidence`` is the image's confidence, ``confidence_<structure>`` each structure's (None where
    the structure was not found, and everywhere for one pass). Below ``config.min_model_confidence`` the
    measurements are doubtful as a whole: ``measurement_flags`` gets ``model_confidence:low (<value>)``
    and an ``ok`` image becomes ``partial`` (a worse image flag stays).
    """
    structures = confidence.structures if confidence is not None else {}
    image = confidence.image if confidence is not None else None
    row["tta_passes"] = config.tta_passes
    row["model_confidence"] = image
    row.update({f"confidence_{name}": structures.get(name) for name in STRUCTURE_NAMES})
    if image is None or image >= config.min_model_confidence:
        return
    flag = f"model_confidence:low ({image:.2f})"
    row["measurement_flags"] = "; ".join(f for f in (row.get("measurement_flags") or "", flag) if f)
    note = (
        f"test-time augmentations agree only to {image:.2f} "
        f"(below {config.min_model_confidence:.2f}): the measurements are doubtful"
    )
    row["quality_notes"] = "; ".join(n for n in (row.get("quality_notes") or "", note) if n)
    if row.get("quality_flag", "ok") == "ok":
        row["quality_flag"] = "partial"


# ----------------------------------------------------------------------------- the driver


def _completed_rows(
    store: ObjectStore, output_prefix: str, source: InferenceSource
) -> dict[str, dict[str, Any]]:
    """Rows of inputs an earlier call finished, keyed by input key.

    Finished means: ``ok`` with its SEG and overlay present, or failed for a reason in the file itself
    (not a usable radiograph) while the file still has the same size. Everything else is done again.
    """
    present = set(store.list(output_prefix))
    done: dict[str, dict[str, Any]] = {}
    for key in source.keys:
        rkey = row_key(output_prefix, key)
        if rkey not in present:
            continue
        try:
            row = json.loads(store.get_bytes(rkey))
        except Exception:  # an unreadable row means: do the image again
            continue
        if row.get("status") == "ok":
            if row.get("seg_key") in present and row.get("overlay_key") in present:
                done[key] = row
        elif row.get("retryable") is False:
            size = source.sizes_bytes.get(key)
            if size is None or size == row.get("input_size_bytes"):
                done[key] = row
    return done


def _runtime_env(
    settings: Settings, source: InferenceSource, config: InferenceConfig
) -> dict[str, Any] | None:
    uses_s3 = settings.store.startswith("s3://") or source.store_uri.startswith("s3://")
    if not (uses_s3 and config.forward_store_credentials):
        return None
    env = {name: os.environ[name] for name in _STORE_ENV if name in os.environ}
    return {"env_vars": env} if env else None


def _mark_duplicates(rows: list[dict[str, Any]]) -> None:
    """Two files with one SOPInstanceUID would share result files: keep the first, fail the others."""
    first: dict[str, str] = {}
    for row in rows:
        uid = row.get("sop_instance_uid")
        if row.get("status") != "ok" or not uid:
            continue
        if uid in first:
            row.update(
                {
                    "status": "failed",
                    "reason": f"same SOPInstanceUID as {first[uid]}: results are keyed by SOPInstanceUID",
                }
            )
        else:
            first[uid] = row["image_key"]


def run_inference(
    settings: Settings,
    source: str,
    model_ref: str = "champion",
    run_id: str | None = None,
    progress: ProgressCallback | None = None,
    config: InferenceConfig | None = None,
) -> InferenceSummary:
    """Segment and measure every radiograph of ``source`` with Ray Data; write SEG, overlays, report.

    Args:
        settings: project settings (store, Ray address, model name).
        source: ``dataset:<version>``, an ``s3://`` URI, a local folder, or a prefix in the store
            (see ``resolve_source``).
        model_ref: registry alias or version (``champion``, ``3``, ``latest``), or a local model folder.
        run_id: output run id; default a digest of (source, model version), so a re-run resumes.
        progress: called with (images done, images total) as results arrive.
        config: batch size, actors, overlay size, measurement thresholds.

    Returns:
        What the call did; details per image are in ``measurements.parquet``.

    Raises:
        InferenceError: when the source or the model cannot be found.
    """
    import ray

    started = time.perf_counter()
    config = config or settings.inference
    resolved = resolve_source(settings, source)
    model, model_name, model_version = load_model(settings, model_ref)
    run_id = run_id or default_run_id(resolved, model_version)
    output_prefix = join_key("predictions", model_version, run_id)
    store = store_from_settings(settings)
    total = len(resolved.keys)
    logger.info(
        "Inference of %d file(s) with %s v%s into %s", total, model_name, model_version, output_prefix
    )

    earlier = _completed_rows(store, output_prefix, resolved)
    for row in earlier.values():
        row["from_earlier_run"] = True
    todo = [k for k in resolved.keys if k not in earlier]
    done = len(earlier)
    if progress is not None:
        progress(done, total)
    new_rows: dict[str, dict[str, Any]] = {}
    if todo:
        connect_ray(settings)
        files = model_files(model)
        del model
        items = [{"image_key": k} for k in todo]
        # Ray Data: one block per batch, so the actor pool shares the files evenly and results stream back.
        blocks = max(1, math.ceil(len(todo) / config.batch_size))
        results = ray.data.from_items(items, override_num_blocks=blocks).map_batches(
            InferenceWorker,
            fn_constructor_kwargs={
                "settings": settings,
                "source_uri": resolved.store_uri,
                "source_endpoint_url": resolved.endpoint_url,
                "files": files,
                "model_name": model_name,
                "model_version": model_version,
                "run_id": run_id,
                "output_prefix": output_prefix,
                "config": config,
            },
            batch_size=config.batch_size,
            compute=ray.data.ActorPoolStrategy(size=min(config.concurrency, blocks)),
            num_cpus=config.num_cpus_per_actor,
            num_gpus=config.num_gpus_per_actor or None,
            runtime_env=_runtime_env(settings, resolved, config),
            udf_modifying_row_count=False,
        )
        with quiet_ray_data():
            # Ray Data: streaming consumption; each finished block advances the progress at once.
            for batch in results.iter_batches(batch_size=None, batch_format="numpy"):
                for key, text in zip(batch["image_key"], batch["row_json"], strict=True):
                    new_rows[str(key)] = json.loads(str(text))
                done += len(batch["image_key"])
                if progress is not None:
                    progress(done, total)

    rows = [earlier.get(k) or new_rows.get(k) or _lost_row(k) for k in resolved.keys]
    _mark_duplicates(rows)
    failures = {r["image_key"]: str(r.get("reason")) for r in rows if r.get("status") != "ok"}
    unmarked = {
        k: str(r["completion_marker_error"]) for k, r in new_rows.items() if r.get("completion_marker_error")
    }
    for key, reason in unmarked.items():
        logger.error("image %s: results written but not marked done (%s)", _key_digest(key), reason)
    summary = InferenceSummary(
        model_name=model_name,
        model_version=model_version,
        run_id=run_id,
        source=source,
        images_total=total,
        images_inferred=len(todo),
        images_skipped=len(earlier),
        images_failed=len(failures),
        failures=failures,
        images_unmarked=len(unmarked),
        unmarked=unmarked,
        output_prefix=output_prefix,
        measurements_key=join_key(output_prefix, "measurements.parquet"),
        report_key=join_key(output_prefix, "report.html"),
        seconds=round(time.perf_counter() - started, 3),
        annotate_next=rank_annotate_next(rows, config.annotate_next_count),
    )
    write_run_outputs(store, summary, rows)
    logger.info(
        "Inference done: %d inferred, %d skipped, %d failed, %d not marked done in %.1f s",
        summary.images_inferred,
        summary.images_skipped,
        summary.images_failed,
        summary.images_unmarked,
        summary.seconds,
    )
    return summary


def _lost_row(image_key: str) -> dict[str, Any]:
    """Row for an input that produced no result at all (should not happen; never drop a file silently)."""
    return {"image_key": image_key, "status": "failed", "reason": "no result came back from the workers"}
