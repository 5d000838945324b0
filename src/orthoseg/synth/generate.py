"""Writing a simulated batch to the object store: images, SEG labels, truth JSON, broken files, parallel."""

from __future__ import annotations

import json
import logging
import multiprocessing
import pickle
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from orthoseg.storage import ObjectStore, join_key
from orthoseg.synth.config import SynthCase, SynthConfig, SynthSummary
from orthoseg.synth.dicom import dataset_to_bytes

logger = logging.getLogger(__name__)


def batch_prefix(config: SynthConfig) -> str:
    """Store prefix of the batch: ``incoming/<batch>``."""
    return join_key("incoming", config.batch)


def encode_case(case: SynthCase, config: SynthConfig) -> dict[str, bytes]:
    """The three files of a case, keyed by their store key relative to the batch prefix."""
    from orthoseg.synth.seg_bytes import build_label_seg

    uid = case.sop_instance_uid
    seg = build_label_seg(case, config)
    truth = json.dumps(case.truth, indent=1, sort_keys=True).encode()
    return {
        f"images/{uid}.dcm": dataset_to_bytes(case.dataset),
        f"labels/{uid}.dcm": seg,
        f"truth/{uid}.json": truth,
    }


def _render(index: int, config: SynthConfig) -> tuple[int, str, dict[str, bytes]]:
    from orthoseg.synth.case import generate_case

    case = generate_case(index, config)
    return index, str(case.truth.get("category", "")), encode_case(case, config)


def _work(args: tuple[int, SynthConfig, Any]) -> tuple[int, str, dict[str, bytes]]:
    """Simulate one case; write it when the worker has the store, else hand the bytes back."""
    index, config, store = args
    _, category, files = _render(index, config)
    if store is None:
        return index, category, files
    prefix = batch_prefix(config)
    for key, data in files.items():
        store.put_bytes(join_key(prefix, key), data)
    return index, category, {}


def _init_worker() -> None:
    """Worker processes share the machine: one thread each for torch's kernels (upsampling)."""
    import torch

    torch.set_num_threads(1)


def _picklable(store: ObjectStore) -> bool:
    try:
        pickle.dumps(store)
    except Exception:  # boto3 clients cannot travel to worker processes
        return False
    return True


def generate_dataset(
    store: ObjectStore,
    config: SynthConfig,
    progress: Callable[[int, int], None] | None = None,
) -> SynthSummary:
    """Simulate ``config.count`` radiographs (and broken files) under ``incoming/<batch>/`` of ``store``.

    Idempotent and resumable: a case whose image, label and truth files all exist is not simulated
    again; since generation is deterministic, re-running gives the same files.

    Args:
        store: where to write.
        config: what to simulate; ``config.workers`` processes share the work.
        progress: called with (done, total) after each case.
    """
    from orthoseg.synth.broken import write_broken_files
    from orthoseg.synth.case import case_category, case_uid

    started = time.perf_counter()
    prefix = batch_prefix(config)
    existing = set(store.list_keys(prefix))
    todo: list[int] = []
    categories: Counter[str] = Counter()
    for index in range(config.count):
        uid = case_uid(index, config)
        keys = [
            join_key(prefix, f"{folder}/{uid}.{ext}")
            for folder, ext in (("images", "dcm"), ("labels", "dcm"), ("truth", "json"))
        ]
        if all(k in existing for k in keys):
            categories[case_category(index, config)] += 1
        else:
            todo.append(index)
    done = config.count - len(todo)
    if progress is not None:
        progress(done, config.count)
    if todo:
        if config.workers > 1 and len(todo) > 1:
            # Local folders are written by the workers; other stores get the bytes back here.
            worker_store = store if _picklable(store) else None
            # fork starts workers in milliseconds and needs no importable __main__ (notebooks, stdin);
            # elsewhere spawn is the only choice.
            method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
            context = multiprocessing.get_context(method)
            with ProcessPoolExecutor(min(config.workers, len(todo)), context, _init_worker) as pool:
                chunk = max(1, min(8, len(todo) // (4 * config.workers)))
                jobs = [(i, config, worker_store) for i in todo]
                for _, category, files in pool.map(_work, jobs, chunksize=chunk):
                    for key, data in files.items():
                        store.put_bytes(join_key(prefix, key), data)
                    categories[category] += 1
                    done += 1
                    if progress is not None:
                        progress(done, config.count)
        else:
            for index in todo:
                _, category, _ = _work((index, config, store))
                categories[category] += 1
                done += 1
                if progress is not None:
                    progress(done, config.count)
    broken = write_broken_files(store, config) if config.broken_count else 0
    seconds = time.perf_counter() - started
    logger.info(
        "synth batch %s: %d images (%d new) in %.1f s", config.batch, config.count, len(todo), seconds
    )
    return SynthSummary(
        batch=config.batch,
        prefix=prefix,
        images=config.count,
        labels=config.count,
        broken=broken,
        categories=dict(sorted(categories.items())),
        seconds=round(seconds, 3),
    )
