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
earlier failures, a crash's remainder) are processed, after the temporary files a killed run left are
removed. A broken file never stops the run: it gets a row with ``status='failed'`` and a reason a person
can act on.

This module is the driver. One job per module around it: ``inference_source`` (sources, model, run id),
``inference_analysis`` (film -> masks, confidence, measurements; no store, no Ray), ``inference_writer``
(SEG, overlay, completion marker), ``inference_row`` (the typed result row and its Parquet schema),
``inference_worker`` (the Ray Data actor calling analysis and writer), ``inference_outputs`` (the run's
table and report).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from orthoseg.compute import connect_ray, quiet_ray_data
from orthoseg.confidence import rank_annotate_next
from orthoseg.inference_analysis import columns_toward_patient_left as _columns_toward_patient_left
from orthoseg.inference_config import InferenceConfig
from orthoseg.inference_outputs import write_run_outputs
from orthoseg.inference_row import record_confidence as _record_confidence
from orthoseg.inference_source import (
    InferenceError,
    InferenceSource,
    default_run_id,
    key_digest,
    load_model,
    model_files,
    resolve_source,
    validated_batch_source,
)
from orthoseg.inference_worker import InferenceWorker
from orthoseg.inference_writer import remove_stale_temp_files, row_key
from orthoseg.progress import ProgressCallback
from orthoseg.storage import ObjectStore, StoreError, join_key, store_from_settings

if TYPE_CHECKING:
    from orthoseg.settings import Settings

# Kept importable from here for callers of the single module this was (benchmarks, tests, components).
__all__ = [
    "InferenceConfig",
    "InferenceError",
    "InferenceSource",
    "InferenceSummary",
    "InferenceWorker",
    "_columns_toward_patient_left",
    "_record_confidence",
    "default_run_id",
    "load_model",
    "model_files",
    "resolve_source",
    "row_key",
    "run_inference",
    "validated_batch_source",
]

logger = logging.getLogger(__name__)

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


# ----------------------------------------------------------------------------- the driver


def _completed_rows(
    store: ObjectStore, output_prefix: str, source: InferenceSource
) -> dict[str, dict[str, Any]]:
    """Rows of inputs an earlier call finished, keyed by input key.

    Finished means: ``ok`` with its SEG and overlay present, or failed for a reason in the file itself
    (not a usable radiograph) while the file still has the same size. Everything else is done again.
    """
    present = set(store.list_keys(output_prefix))
    done: dict[str, dict[str, Any]] = {}
    for key in source.keys:
        rkey = row_key(output_prefix, key)
        if rkey not in present:
            continue
        try:
            row = json.loads(store.get_bytes(rkey))
        except (StoreError, ValueError) as error:  # gone since the listing, or not JSON: do the image again
            logger.info("redoing %s: its earlier row %s is unreadable (%s)", key, rkey, error)
            continue
        if not isinstance(row, dict):
            logger.info("redoing %s: its earlier row %s is not a JSON object", key, rkey)
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

    # A run killed mid-write (SIGKILL, lost node) leaves temporary files beside its outputs.
    remove_stale_temp_files(store, output_prefix)
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
        logger.error("image %s: results written but not marked done (%s)", key_digest(key), reason)
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
