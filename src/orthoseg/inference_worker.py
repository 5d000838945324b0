"""The Ray Data actor of batch inference: reads each image of a batch, analyses the batch
(``orthoseg.inference_analysis``), writes each image's files and completion marker
(``orthoseg.inference_writer``) and hands the rows back to the driver."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from orthoseg.inference_analysis import analyze_radiographs, decode_radiograph
from orthoseg.inference_config import InferenceConfig
from orthoseg.inference_row import (
    base_row,
    measured_columns,
    radiograph_columns,
    record_confidence,
    record_failure,
    validated_row,
)
from orthoseg.inference_writer import ResultWriter
from orthoseg.json_values import json_scalar
from orthoseg.storage import ObjectStore, open_store, store_from_settings

if TYPE_CHECKING:
    from orthoseg.radiograph import Radiograph
    from orthoseg.settings import Settings


def _row_json(row: dict[str, Any]) -> str:
    return json.dumps({k: json_scalar(v) for k, v in row.items()}, sort_keys=True)


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
        self.writer = ResultWriter(
            store_from_settings(settings),
            output_prefix,
            model_name,
            model_version,
            run_id,
            config.overlay_max_side_px,
        )
        self.model_name = model_name
        self.model_version = model_version
        self.run_id = run_id
        self.output_prefix = output_prefix
        self.config = config

    @property
    def output(self) -> ObjectStore:
        """The store the results are written to."""
        return self.writer.store

    @output.setter
    def output(self, store: ObjectStore) -> None:
        self.writer.store = store

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        keys = [str(k) for k in batch["image_key"]]
        rows = {k: base_row(k, self.model_name, self.model_version, self.run_id) for k in keys}
        # Per image: its own read/preprocess/post-process/write time, plus an equal share of the batched
        # forward pass it was part of (that pass cannot be timed per image).
        own = dict.fromkeys(keys, 0.0)
        forward_share = dict.fromkeys(keys, 0.0)
        films: list[tuple[str, Radiograph, Any]] = []
        for key in keys:
            tick = time.perf_counter()
            try:
                data = self.source.get_bytes(key)
                rows[key]["input_size_bytes"] = len(data)
                films.append((key, *decode_radiograph(data)))
            except Exception as error:  # a broken file must never stop the run
                record_failure(rows[key], error)
            own[key] += time.perf_counter() - tick
        analyses = analyze_radiographs([(r, h) for _, r, h in films], self.model, self.config)
        for (key, radiograph, _), analysis in zip(films, analyses, strict=True):
            own[key] += analysis.seconds
            forward_share[key] = analysis.forward_share_seconds
            if analysis.transform is not None:  # the film was prepared for the network
                rows[key].update(radiograph_columns(radiograph))
            if analysis.error is not None:
                record_failure(rows[key], analysis.error)
                continue
            tick = time.perf_counter()
            try:
                measured = {**rows[key], **measured_columns(analysis, self.writer.write_image(analysis))}
                record_confidence(measured, analysis.confidence, self.config)
                rows[key] = validated_row(measured)
            except Exception as error:
                record_failure(rows[key], error)
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
            text = _row_json(row)
            reason = self.writer.write_marker(key, text)
            if reason is not None:
                row["completion_marker_error"] = reason
                text = _row_json(row)
            out.append(text)
        return {"image_key": np.asarray(keys, dtype=object), "row_json": np.asarray(out, dtype=object)}
