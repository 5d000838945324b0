"""Canvas-cache shard encoding (exact masks, 16-bit intensities) and where a split's cache lives."""

from __future__ import annotations

import numpy as np
import pytest

from orthoseg.canvas_cache import INTENSITY_LEVELS, cache_prefix, decode_shard, encode_shard
from orthoseg.labels import NUM_STRUCTURES
from orthoseg.settings import PreprocessConfig


def _shard(count: int, side: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    rng = np.random.default_rng(seed)
    image = rng.random((count, 1, side, side), dtype=np.float32)
    image[0, 0, 0, 0], image[-1, 0, -1, -1] = 0.0, 1.0  # both ends of the range
    masks = rng.random((count, NUM_STRUCTURES, side, side)) > 0.5
    uids = tuple(f"1.2.826.0.1.3680043.8.498.{seed}.{index}" for index in range(count))
    return image, masks, uids


@pytest.mark.parametrize("side", [64, 13, 30, 1, 8, 9])
def test_shard_round_trip(side: int) -> None:
    image, masks, uids = _shard(3, side)
    decoded = decode_shard(encode_shard(image, masks, uids))
    assert set(decoded) == {"image", "masks", "valid_rows", "uid"}
    np.testing.assert_array_equal(decoded["valid_rows"], [[0, side]] * 3)  # every row holds canvas
    assert decoded["image"].shape == image.shape and decoded["image"].dtype == np.float32
    np.testing.assert_allclose(decoded["image"], image, rtol=0, atol=1.0 / INTENSITY_LEVELS)
    assert decoded["masks"].shape == masks.shape
    np.testing.assert_array_equal(decoded["masks"], masks.astype(np.uint8))
    assert tuple(decoded["uid"]) == uids


def test_shard_keeps_strips_and_their_canvas_rows() -> None:
    image = np.random.default_rng(3).random((2, 1, 48, 16), dtype=np.float32)
    masks = np.zeros((2, NUM_STRUCTURES, 48, 16), dtype=bool)
    masks[1, 2, 10:40, 3:9] = True
    valid_rows = np.array([[0, 48], [8, 40]], dtype=np.int32)
    decoded = decode_shard(encode_shard(image, masks, ("a", "b"), valid_rows))
    assert decoded["image"].shape == (2, 1, 48, 16) and decoded["masks"].shape == (2, NUM_STRUCTURES, 48, 16)
    np.testing.assert_array_equal(decoded["valid_rows"], valid_rows)
    np.testing.assert_array_equal(decoded["masks"], masks.astype(np.uint8))


def test_shard_clips_intensities_and_accepts_uint8_masks() -> None:
    image, masks, uids = _shard(2, 16)
    image[1, 0, 3, 3], image[1, 0, 4, 4] = -0.5, 1.5
    decoded = decode_shard(encode_shard(image, masks.astype(np.uint8), uids))
    assert decoded["image"][1, 0, 3, 3] == 0.0 and decoded["image"][1, 0, 4, 4] == 1.0
    assert decoded["image"].min() >= 0.0 and decoded["image"].max() <= 1.0
    np.testing.assert_array_equal(decoded["masks"], masks)


def test_shard_is_smaller_than_float_arrays() -> None:
    image, masks, uids = _shard(4, 64)
    assert len(encode_shard(image, masks, uids)) < (image.nbytes + masks.nbytes) / 2


def test_empty_shard_round_trips() -> None:
    image = np.zeros((0, 1, 16, 16), dtype=np.float32)
    masks = np.zeros((0, NUM_STRUCTURES, 16, 16), dtype=bool)
    decoded = decode_shard(encode_shard(image, masks, ()))
    assert decoded["image"].shape == (0, 1, 16, 16)
    assert decoded["masks"].shape == (0, NUM_STRUCTURES, 16, 16)
    assert len(decoded["uid"]) == 0


def test_cache_prefix_follows_version_preprocessing_and_split() -> None:
    preprocess = PreprocessConfig(canvas_px=256, spacing_mm=0.8)
    prefix = cache_prefix("abc123", preprocess, "train")
    assert prefix.startswith("cache/canvas/abc123/") and prefix.endswith("/train")
    assert prefix == cache_prefix("abc123", PreprocessConfig(canvas_px=256, spacing_mm=0.8), "train")
    others = {
        cache_prefix("abc123", preprocess, "val"),
        cache_prefix("abc124", preprocess, "train"),
        cache_prefix("abc123", PreprocessConfig(canvas_px=320, spacing_mm=0.8), "train"),
        cache_prefix("abc123", PreprocessConfig(canvas_px=256, spacing_mm=0.6), "train"),
        cache_prefix(
            "abc123", PreprocessConfig(canvas_px=256, spacing_mm=0.8, clip_percentiles=(1, 99)), "train"
        ),
    }
    assert prefix not in others and len(others) == 5


def test_cache_prefix_keeps_odd_versions_inside_one_folder() -> None:
    prefix = cache_prefix("../v 1/..", PreprocessConfig(), "train")
    parts = prefix.split("/")
    assert parts[:2] == ["cache", "canvas"] and len(parts) == 5
    assert "/" not in parts[2] and parts[2] not in {".", ".."}
