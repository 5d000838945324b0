"""Preprocessed canvases of a dataset split as NumPy shards in the store, built and read with Ray Data.

Decoding DICOM and SEG costs far more than an epoch on a small canvas, and a clinic's dataset does not
fit in memory, so each split is preprocessed once, in parallel Ray Data tasks, into shards under::

    cache/canvas/<dataset version>/<preprocess hash>[-ctx<rows>]/<split>/
        shard-<digest>.npz     image: uint16 (N, 1, H, S), canvas intensity * 65535
                               masks: uint8 (N, C, H, ceil(S / 8)), masks packed along columns
                               valid_rows: int32 (N, 2), the rows of each strip that hold canvas
                               uids:  SOPInstanceUIDs, one per row
        index.json             written last: the shards, their images and the canvas size

Each row is a training strip (``orthoseg.preprocessing.training_strip``): the ``S`` window around the
labelled anatomy plus ``context_rows`` of film above and below it (``H = S + 2 * context_rows``), so
training can cut the window at a new height every epoch and see the ends of long films and revision
stems. Validation caches use no context (``H = S``).

A shard's name is a digest of its images and the preprocessing, so building again after a crash skips
the shards already written; the index marks the cache complete. A dataset version never changes once
written, so the cache stays valid until the manifest's image list for the split changes.

Training streams the shards back with Ray Data (``canvas_dataset``); only a few shards are in memory at
a time on each node.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from orthoseg.labels import NUM_STRUCTURES
from orthoseg.settings import PreprocessConfig
from orthoseg.storage import ObjectStore, join_key, open_store, store_from_settings

if TYPE_CHECKING:
    import ray.data

    from orthoseg.settings import Settings

logger = logging.getLogger(__name__)

CACHE_FORMAT_VERSION = "2"
INTENSITY_LEVELS = 65535
INDEX_FILE = "index.json"


class CacheShard(BaseModel):
    """One shard file: its store key, the SOPInstanceUIDs it holds (in row order), and per structure
    whether any of its masks contains it."""

    model_config = ConfigDict(frozen=True)

    key: str
    uids: tuple[str, ...]
    structures_present: tuple[bool, ...]


class CanvasCacheIndex(BaseModel):
    """What a complete cache of one split holds (``index.json``).

    Attributes:
        format_version: layout version of the shard files.
        dataset_version: dataset version the canvases come from.
        split: ``train``, ``val`` or ``test``.
        preprocess: the preprocessing applied (its hash is in the prefix).
        store_uri: store holding the shards (with ``s3_endpoint_url``, what a Ray task needs to read).
        s3_endpoint_url: S3 endpoint of that store, if any.
        prefix: store prefix of the shards.
        shards: the shard files.
        context_rows: rows of film kept above and below each training window.
    """

    model_config = ConfigDict(frozen=True)

    format_version: str = CACHE_FORMAT_VERSION
    dataset_version: str
    split: str
    preprocess: PreprocessConfig
    store_uri: str
    s3_endpoint_url: str | None = None
    prefix: str
    shards: tuple[CacheShard, ...]
    context_rows: int = 0

    @property
    def uids(self) -> tuple[str, ...]:
        """Every image of the split, shard by shard."""
        return tuple(uid for shard in self.shards for uid in shard.uids)

    def __len__(self) -> int:
        return sum(len(shard.uids) for shard in self.shards)

    @property
    def structures_present(self) -> np.ndarray:
        """(C,) bool: which structures appear in at least one mask of the split."""
        present = np.zeros(NUM_STRUCTURES, dtype=bool)
        for shard in self.shards:
            present |= np.asarray(shard.structures_present, dtype=bool)
        return present


def cache_prefix(
    dataset_version: str, preprocess: PreprocessConfig, split: str, context_rows: int = 0
) -> str:
    """Store prefix of a split's cache."""
    from orthoseg.model_package import config_hash

    safe_version = "".join(c if (c.isascii() and c.isalnum()) or c in "-_." else "_" for c in dataset_version)
    canvas = config_hash(preprocess) + (f"-ctx{context_rows}" if context_rows else "")
    return join_key("cache", "canvas", safe_version, canvas, split)


def encode_shard(
    image: np.ndarray, masks: np.ndarray, uids: tuple[str, ...], valid_rows: np.ndarray | None = None
) -> bytes:
    """Shard bytes for (N, 1, H, S) float canvases in [0, 1], (N, C, H, S) binary masks and the (N, 2)
    rows of each strip that hold canvas (default: all ``H``)."""
    quantised = np.round(np.clip(image, 0.0, 1.0) * INTENSITY_LEVELS).astype(np.uint16)
    packed = np.packbits(np.asarray(masks, dtype=bool), axis=-1)
    if valid_rows is None:
        valid_rows = np.tile(np.array([0, image.shape[-2]], dtype=np.int32), (image.shape[0], 1))
    buffer = io.BytesIO()
    np.savez(
        buffer,
        image=quantised,
        masks=packed,
        uids=np.asarray(uids, dtype=str),
        valid_rows=np.asarray(valid_rows, dtype=np.int32).reshape(-1, 2),
    )
    return buffer.getvalue()


def decode_shard(data: bytes) -> dict[str, np.ndarray]:
    """``image`` (N, 1, H, S) float32 in [0, 1], ``masks`` (N, C, H, S) uint8, ``valid_rows`` (N, 2) int32
    and ``uid`` (N,) str."""
    with np.load(io.BytesIO(data), allow_pickle=False) as shard:
        image = shard["image"].astype(np.float32) / INTENSITY_LEVELS
        side = image.shape[-1]
        masks = np.unpackbits(shard["masks"], axis=-1, count=side)
        return {
            "image": image,
            "masks": masks,
            "valid_rows": (
                shard["valid_rows"].astype(np.int32)
                if "valid_rows" in shard.files
                else np.tile(np.array([0, image.shape[-2]], dtype=np.int32), (image.shape[0], 1))
            ),
            "uid": shard["uids"].astype(str),
        }


def _shard_key(prefix: str, preprocess: PreprocessConfig, uids: tuple[str, ...], context_rows: int) -> str:
    digest = hashlib.sha256(
        json.dumps(
            [CACHE_FORMAT_VERSION, preprocess.model_dump(mode="json"), list(uids), context_rows]
        ).encode()
    ).hexdigest()[:16]
    return join_key(prefix, f"shard-{digest}.npz")


class _ShardBuilder:
    """Ray Data task: decode the rows of one shard onto the canvas and write the shard to the store."""

    def __init__(
        self, store_uri: str, endpoint_url: str | None, preprocess: dict[str, Any], context_rows: int
    ) -> None:
        self.store_uri = store_uri
        self.endpoint_url = endpoint_url
        self.preprocess = PreprocessConfig.model_validate(preprocess)
        self.context_rows = context_rows

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        from orthoseg.dataset import decode_training_strip

        store = open_store(self.store_uri, self.endpoint_url)
        key, uids = str(row["key"]), tuple(json.loads(row["uids"]))
        if store.exists(key):
            masks = decode_shard(store.get_bytes(key))["masks"]
        else:
            image_keys, label_keys = json.loads(row["image_keys"]), json.loads(row["label_keys"])
            side = self.preprocess.canvas_px
            height = side + 2 * self.context_rows
            images = np.zeros((len(uids), 1, height, side), dtype=np.float32)
            masks = np.zeros((len(uids), NUM_STRUCTURES, height, side), dtype=bool)
            valid_rows = np.zeros((len(uids), 2), dtype=np.int32)
            for index, (image_key, label_key) in enumerate(zip(image_keys, label_keys, strict=True)):
                images[index, 0], masks[index], valid_rows[index] = decode_training_strip(
                    store, image_key, label_key, self.preprocess, self.context_rows
                )
            store.put_bytes(key, encode_shard(images, masks, uids, valid_rows))
        present = np.asarray(masks).reshape(masks.shape[0], masks.shape[1], -1).any(axis=(0, 2))
        return {"key": key, "images": len(uids), "present": json.dumps(present.tolist())}


def _chunks(rows: list[tuple[str, str, str]], size: int) -> Iterator[list[tuple[str, str, str]]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def read_cache_index(store: ObjectStore, prefix: str) -> CanvasCacheIndex | None:
    """The index of a complete cache, or None when there is none (or it is unreadable)."""
    key = join_key(prefix, INDEX_FILE)
    if not store.exists(key):
        return None
    try:
        return CanvasCacheIndex.model_validate_json(store.get_bytes(key))
    except ValueError as error:
        logger.warning("Unreadable canvas cache index %s (%s); rebuilding", key, error)
        return None


def build_canvas_cache(
    settings: Settings,
    dataset_version: str,
    split: str,
    preprocess: PreprocessConfig | None = None,
    shard_images: int = 32,
    progress: Callable[[int, int], None] | None = None,
    context_rows: int = 0,
) -> CanvasCacheIndex:
    """Make sure the split's canvas cache exists and is complete; build the missing shards in parallel.

    Args:
        settings: store, Ray address and the default preprocessing.
        dataset_version: the dataset version (must exist).
        split: ``train``, ``val`` or ``test``.
        preprocess: canvas settings; default ``settings.preprocess``.
        shard_images: images per shard file (bounds a task's memory: ~0.3 MB per image at 256 px).
        progress: called as ``(images cached, images)`` while shards are built.
        context_rows: rows of film kept above and below each training window (training splits).

    Returns:
        The index of the complete cache (possibly with no shards for an empty split).

    Raises:
        orthoseg.dataset.DatasetError: for an unknown split, a missing manifest or unlabelled rows.
    """
    from orthoseg.dataset import labelled_split_rows, read_manifest

    preprocess = preprocess or settings.preprocess
    store = store_from_settings(settings)
    rows = labelled_split_rows(read_manifest(store, dataset_version), split, dataset_version)
    uids = tuple(str(u) for u in rows["sop_instance_uid"])
    prefix = cache_prefix(dataset_version, preprocess, split, context_rows)
    existing = read_cache_index(store, prefix)
    complete = existing is not None and all(store.exists(shard.key) for shard in existing.shards)
    if (
        existing is not None
        and complete
        and existing.uids == uids
        and existing.preprocess == preprocess
        and existing.context_rows == context_rows
        and existing.format_version == CACHE_FORMAT_VERSION  # an older layout is rebuilt, not misread
    ):
        if progress is not None:
            progress(len(uids), len(uids))
        return existing

    table = list(
        zip(uids, (str(k) for k in rows["image_key"]), (str(k) for k in rows["label_key"]), strict=True)
    )
    items = []
    for chunk in _chunks(table, max(1, shard_images)):
        chunk_uids = tuple(u for u, _, _ in chunk)
        items.append(
            {
                "key": _shard_key(prefix, preprocess, chunk_uids, context_rows),
                "uids": json.dumps(list(chunk_uids)),
                "image_keys": json.dumps([i for _, i, _ in chunk]),
                "label_keys": json.dumps([lab for _, _, lab in chunk]),
            }
        )
    logger.info(
        "Caching %d %s canvases of dataset %s in %d shards under %s",
        len(uids),
        split,
        dataset_version,
        len(items),
        prefix,
    )
    present: dict[str, tuple[bool, ...]] = {}
    done = 0
    if progress is not None:
        progress(done, len(uids))
    if items:
        for result in _run_shard_tasks(settings, items, preprocess, context_rows):
            present[str(result["key"])] = tuple(bool(p) for p in json.loads(result["present"]))
            done += int(result["images"])
            if progress is not None:
                progress(done, len(uids))
    index = CanvasCacheIndex(
        dataset_version=dataset_version,
        split=split,
        preprocess=preprocess,
        store_uri=settings.store,
        s3_endpoint_url=settings.s3_endpoint_url,
        prefix=prefix,
        context_rows=context_rows,
        shards=tuple(
            CacheShard(
                key=item["key"], uids=tuple(json.loads(item["uids"])), structures_present=present[item["key"]]
            )
            for item in items
        ),
    )
    store.put_bytes(join_key(prefix, INDEX_FILE), index.model_dump_json(indent=1).encode())
    return index


def _run_shard_tasks(
    settings: Settings, items: list[dict[str, Any]], preprocess: PreprocessConfig, context_rows: int
) -> Iterator[dict[str, Any]]:
    import ray.data

    from orthoseg.compute import connect_ray, quiet_ray_data

    connect_ray(settings)
    builder = _ShardBuilder(
        settings.store, settings.s3_endpoint_url, preprocess.model_dump(mode="json"), context_rows
    )
    with quiet_ray_data():  # a Dataset keeps the context it was created in
        dataset = ray.data.from_items(items, override_num_blocks=len(items)).map(builder)
        yield from dataset.iter_rows()


class _ShardReader:
    """Ray Data task: one shard key in, that shard's rows out."""

    def __init__(self, store_uri: str, endpoint_url: str | None) -> None:
        self.store_uri = store_uri
        self.endpoint_url = endpoint_url

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        store = open_store(self.store_uri, self.endpoint_url)
        parts = [decode_shard(store.get_bytes(str(key))) for key in batch["key"]]
        names = ("image", "masks", "valid_rows", "uid")
        return {name: np.concatenate([part[name] for part in parts]) for name in names}


def canvas_dataset(
    index: CanvasCacheIndex, shuffle_shards: bool = False, readers: int = 1
) -> ray.data.Dataset:
    """A Ray Dataset streaming the cached split: rows ``image`` (1, H, S) float32, ``masks`` (C, H, S)
    uint8, ``valid_rows`` (2,) int32, ``uid`` (``H`` = ``S`` + twice the index's ``context_rows``).

    Args:
        index: a complete cache (``build_canvas_cache``).
        shuffle_shards: visit the shards in a new random order at every pass (training); rows within a
            shard are mixed by the consumer's local shuffle buffer.
        readers: reader actors per pass (one keeps up with CPU training; more for GPU nodes).
    """
    import ray.data

    keys = [{"key": shard.key} for shard in index.shards]
    dataset: ray.data.Dataset = ray.data.from_items(keys, override_num_blocks=max(1, len(keys)))
    if shuffle_shards:
        dataset = dataset.randomize_block_order()
    # Reading a shard is I/O and decompression: one long-lived reader per pass, reserving no CPU, so it
    # runs beside training workers that hold every CPU of a small cluster instead of waiting for one, and
    # no Python process is started per shard.
    return dataset.map_batches(
        _ShardReader,
        fn_constructor_args=(index.store_uri, index.s3_endpoint_url),
        batch_size=1,
        batch_format="numpy",
        num_cpus=0,
        compute=ray.data.ActorPoolStrategy(size=readers),
    )
