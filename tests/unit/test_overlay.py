"""Overlays: size (with downscaling of big films), structure colours on outlines and fills, PNG bytes."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from orthoseg.labels import NUM_STRUCTURES, structure
from orthoseg.overlay import mask_outline, overlay_png_bytes, render_overlay


def _image_and_masks(shape: tuple[int, int] = (200, 160)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    pixels = rng.normal(1000.0, 50.0, shape).astype(np.float32)
    masks = np.zeros((NUM_STRUCTURES, *shape), dtype=bool)
    h, w = shape
    masks[structure("femur").channel, h // 10 : h // 2, w // 4 : 3 * w // 4] = True
    masks[structure("tibia").channel, h // 2 + 5 : 9 * h // 10, w // 4 : 3 * w // 4] = True
    return pixels, masks


def test_size_is_kept_for_small_films() -> None:
    pixels, masks = _image_and_masks()
    image = render_overlay(pixels, masks)
    assert image.size == (160, 200)
    assert image.mode == "RGB"


def test_big_films_are_downscaled_to_max_side() -> None:
    pixels, masks = _image_and_masks((2000, 1500))
    image = render_overlay(pixels, masks, max_side_px=512)
    assert max(image.size) <= 512
    assert image.size == (375, 500)


def test_structure_colours_on_outlines_and_fills() -> None:
    pixels, masks = _image_and_masks()
    rgb = np.asarray(render_overlay(pixels, masks, legend=False))
    for name in ("femur", "tibia"):
        s = structure(name)
        outline = mask_outline(masks[s.channel])
        assert outline.any()
        assert np.all(rgb[outline] == np.asarray(s.color_rgb, dtype=np.uint8))
        interior = masks[s.channel] & ~outline
        # The light fill pulls the grey toward the structure's colour: the channel order follows it.
        mean = rgb[interior].astype(float).mean(axis=0)
        colour = np.asarray(s.color_rgb, dtype=float)
        assert np.argmax(mean) == np.argmax(colour)
        assert np.argmin(mean) == np.argmin(colour)
    background = ~masks.any(axis=0)
    background[:20, :] = False  # legend corner aside
    grey = rgb[background]
    assert np.all(grey[:, 0] == grey[:, 1]) and np.all(grey[:, 1] == grey[:, 2])


def test_legend_is_drawn_top_left() -> None:
    pixels, masks = _image_and_masks()
    with_legend = np.asarray(render_overlay(pixels, masks))
    without = np.asarray(render_overlay(pixels, masks, legend=False))
    assert not np.array_equal(with_legend[:20, :60], without[:20, :60])
    assert np.array_equal(with_legend[100:, :], without[100:, :])


def test_png_bytes_round_trip() -> None:
    pixels, masks = _image_and_masks()
    data = overlay_png_bytes(pixels, masks)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert Image.open(io.BytesIO(data)).size == (160, 200)


def test_mismatched_masks_are_refused() -> None:
    pixels, masks = _image_and_masks()
    with pytest.raises(ValueError, match="masks must have shape"):
        render_overlay(pixels, masks[:, :100])
