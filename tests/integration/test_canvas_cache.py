"""The canvas cache on real local Ray: built from a dataset version, read back exactly, built only once."""

from __future__ import annotations

import numpy as np
import pytest

from orthoseg.canvas_cache import (
    INDEX_FILE,
    INTENSITY_LEVELS,
    CanvasCacheIndex,
    build_canvas_cache,
    cache_prefix,
    canvas_dataset,
    decode_shard,
)
from orthoseg.dataset import load_split, read_manifest
from orthoseg.settings import Settings
from orthoseg.storage import LocalStore, join_key, store_from_settings
from tests.integration._dataset_helpers import write_dataset_version

pytestmark = pytest.mark.usefixtures("ray_cluster")

SHARD_IMAGES = 3  # 8 training images -> shards of 3, 3 and 2


def _files(store: LocalStore, prefix: str) -> dict[str, tuple[int, int]]:
    """Every object under ``prefix`` with its inode and mtime (an atomic rewrite changes both)."""
    out = {}
    for key in store.list_keys(prefix):
        stat = store.local_path(key).stat()
        out[key] = (stat.st_ino, stat.st_mtime_ns)
    return out


def _read_back(index: CanvasCacheIndex) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rows: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for batch in canvas_dataset(index).iter_batches(batch_format="numpy"):
        for uid, image, masks in zip(batch["uid"], batch["image"], batch["masks"], strict=True):
            assert str(uid) not in rows, f"{uid} read twice"
            rows[str(uid)] = (image, masks)
    return rows


def _build(settings: Settings, version: str) -> CanvasCacheIndex:
    return build_canvas_cache(settings, version, "train", shard_images=SHARD_IMAGES)


def test_cache_holds_the_split_reads_back_exactly_and_is_built_once(settings: Settings) -> None:
    store = store_from_settings(settings)
    assert isinstance(store, LocalStore)
    version = write_dataset_version(store, count=12, seed=3)
    manifest = read_manifest(store, version)
    train_uids = tuple(sorted(manifest.loc[manifest["split"] == "train", "sop_instance_uid"].astype(str)))

    index = _build(settings, version)

    prefix = cache_prefix(version, settings.preprocess, "train")
    assert index.prefix == prefix and index.split == "train" and index.dataset_version == version
    assert index.preprocess == settings.preprocess
    assert index.uids == train_uids and len(index) == len(train_uids) == 8
    assert [len(shard.uids) for shard in index.shards] == [3, 3, 2]
    shard_keys = [shard.key for shard in index.shards]
    assert len(set(shard_keys)) == 3
    assert all(key.startswith(prefix + "/shard-") and key.endswith(".npz") for key in shard_keys)
    assert sorted(store.list_keys(prefix)) == sorted([*shard_keys, join_key(prefix, INDEX_FILE)])
    assert CanvasCacheIndex.model_validate_json(store.get_bytes(join_key(prefix, INDEX_FILE))) == index

    expected = load_split(settings, version, "train")
    assert expected.uids == train_uids
    rows = _read_back(index)
    assert sorted(rows) == list(train_uids)
    for row, uid in enumerate(expected.uids):
        image, masks = rows[uid]
        assert image.shape == (1, 128, 128) and masks.shape == expected.masks.shape[1:]
        np.testing.assert_allclose(image, expected.image[row], rtol=0, atol=1.0 / INTENSITY_LEVELS)
        np.testing.assert_array_equal(masks, expected.masks[row])

    # structures_present matches the masks, for the split and for every shard.
    np.testing.assert_array_equal(index.structures_present, expected.structures_present)
    assert index.structures_present.any()
    for shard in index.shards:
        decoded = decode_shard(store.get_bytes(shard.key))
        assert tuple(decoded["uid"]) == shard.uids
        assert shard.structures_present == tuple(bool(p) for p in decoded["masks"].any(axis=(0, 2, 3)))

    # Building again reads the index and writes nothing.
    before = _files(store, prefix)
    assert _build(settings, version) == index
    assert _files(store, prefix) == before

    # Without the index (a crash before it was written) the shards already written are kept.
    store.delete(join_key(prefix, INDEX_FILE))
    assert _build(settings, version) == index
    after = _files(store, prefix)
    assert {k: v for k, v in after.items() if k in shard_keys} == {
        k: v for k, v in before.items() if k in shard_keys
    }
    assert join_key(prefix, INDEX_FILE) in after


def test_a_deleted_shard_is_rebuilt_and_only_that_one(settings: Settings) -> None:
    store = store_from_settings(settings)
    assert isinstance(store, LocalStore)
    version = write_dataset_version(store, count=12, seed=3)
    index = _build(settings, version)
    prefix = index.prefix
    before = _files(store, prefix)
    lost = index.shards[1].key
    store.delete(lost)

    rebuilt = _build(settings, version)

    assert rebuilt == index
    assert store.exists(lost)
    after = _files(store, prefix)
    for shard in (index.shards[0], index.shards[2]):
        assert after[shard.key] == before[shard.key], f"{shard.key} was rewritten"
    assert after[lost] != before[lost]
    assert sorted(_read_back(rebuilt)) == sorted(index.uids)


def test_a_training_cache_with_context_holds_strips_around_the_same_windows(settings: Settings) -> None:
    store = store_from_settings(settings)
    version = write_dataset_version(store, count=12, seed=3)
    index = build_canvas_cache(settings, version, "train", shard_images=SHARD_IMAGES, context_rows=32)

    assert index.context_rows == 32
    assert index.prefix == cache_prefix(version, settings.preprocess, "train", 32)
    assert index.prefix != cache_prefix(version, settings.preprocess, "train")
    expected = load_split(settings, version, "train")
    read_back: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for batch in canvas_dataset(index).iter_batches(batch_format="numpy"):
        for uid, image, masks, valid in zip(
            batch["uid"], batch["image"], batch["masks"], batch["valid_rows"], strict=True
        ):
            read_back[str(uid)] = (image, masks, valid)
    assert sorted(read_back) == sorted(expected.uids)
    for row, uid in enumerate(expected.uids):
        image, masks, valid = read_back[uid]
        assert image.shape == (1, 128 + 64, 128) and masks.shape == (7, 128 + 64, 128)
        assert 0 <= valid[0] <= 32 and 32 + 128 <= valid[1] <= 128 + 64
        # The strip's middle is the fixed window a cache without context holds.
        np.testing.assert_allclose(image[:, 32:160], expected.image[row], rtol=0, atol=1.0 / INTENSITY_LEVELS)
        np.testing.assert_array_equal(masks[:, 32:160], expected.masks[row])
        assert not image[:, : valid[0]].any() and not image[:, valid[1] :].any()


def test_a_cache_of_an_older_layout_is_rebuilt_not_misread(settings: Settings) -> None:
    store = store_from_settings(settings)
    version = write_dataset_version(store, count=12, seed=3)
    index = _build(settings, version)
    old = index.model_copy(update={"format_version": "1"})  # same images, complete, older layout
    store.put_bytes(join_key(index.prefix, INDEX_FILE), old.model_dump_json().encode())

    rebuilt = _build(settings, version)

    assert rebuilt.format_version == index.format_version and rebuilt.uids == index.uids
    assert sorted(_read_back(rebuilt)) == sorted(index.uids)
