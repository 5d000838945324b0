"""Overlays: size (downscaling big films), structure colours, measurement drawings, PNG, thumbnails."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from orthoseg.labels import NUM_STRUCTURES, structure
from orthoseg.measure.drawing import MeasurementDrawing, Segment, ZoneMark
from orthoseg.overlay import (
    FLAGGED_ZONE_RGB,
    SEGMENT_RGB,
    ZONE_RGB,
    mask_outline,
    overlay_png_bytes,
    render_overlay,
    thumbnail_jpeg,
)


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


def _drawing() -> MeasurementDrawing:
    """A horizontal axis across the lower image and one flagged zone with three interface points."""
    return MeasurementDrawing(
        segments=[Segment("tibia axis", (150.0, 20.0), (150.0, 140.0))],
        zones=[
            ZoneMark(
                zone="tibia_1M",
                width_mm=2.3,
                anchor=(120.0, 30.0),
                points=np.array([[90.0, 100.0], [92.0, 104.0], [94.0, 108.0]]),
                flagged=True,
            )
        ],
    )


def _reddish(rgb: np.ndarray) -> np.ndarray:
    """Pixels whose red clearly dominates (anti-aliased red text on its black box)."""
    values = rgb.astype(int)
    return (
        (values[..., 0] > 100) & (values[..., 0] > 2 * values[..., 1]) & (values[..., 0] > 2 * values[..., 2])
    )


def test_without_drawing_the_overlay_is_unchanged() -> None:
    pixels, masks = _image_and_masks()
    plain = np.asarray(render_overlay(pixels, masks))
    assert np.array_equal(plain, np.asarray(render_overlay(pixels, masks, drawing=None)))
    assert np.array_equal(plain, np.asarray(render_overlay(pixels, masks, drawing=MeasurementDrawing())))


def test_segments_are_drawn_along_their_line() -> None:
    pixels, masks = _image_and_masks()
    plain = np.asarray(render_overlay(pixels, masks, legend=False))
    drawn = np.asarray(render_overlay(pixels, masks, legend=False, drawing=_drawing()))
    along = drawn[150, 30:100]  # the segment's middle, clear of its label at the end
    assert np.all(along == np.asarray(SEGMENT_RGB, dtype=np.uint8))
    assert not np.array_equal(plain[150, 30:100], along)
    assert np.array_equal(plain[:80, 120:], drawn[:80, 120:])  # far from every mark: untouched


def test_segments_follow_the_downscale_factor() -> None:
    pixels, masks = _image_and_masks((2000, 1500))
    drawing = MeasurementDrawing(segments=[Segment("femur axis", (400.0, 1000.0), (1600.0, 1000.0))])
    drawn = np.asarray(render_overlay(pixels, masks, max_side_px=500, legend=False, drawing=drawing))
    # Factor 4: native column 1000 is overlay column 250, native rows 400..1600 are overlay rows 100..400.
    column = drawn[150:350, 249:252]
    assert np.all((column == np.asarray(SEGMENT_RGB, dtype=np.uint8)).all(axis=-1).any(axis=-1))
    assert not (drawn[150:350, 200] == np.asarray(SEGMENT_RGB, dtype=np.uint8)).all(axis=-1).any()


def test_zone_points_and_label_are_drawn_red_when_flagged() -> None:
    pixels, masks = _image_and_masks()
    plain = np.asarray(render_overlay(pixels, masks, legend=False))
    flagged = np.asarray(render_overlay(pixels, masks, legend=False, drawing=_drawing()))
    red = np.asarray(FLAGGED_ZONE_RGB, dtype=np.uint8)
    assert np.all(flagged[90, 100] == red) and np.all(flagged[94, 108] == red)
    near_anchor = (slice(112, 128), slice(30, 100))
    assert not np.array_equal(plain[near_anchor], flagged[near_anchor])
    assert _reddish(flagged[near_anchor]).sum() > 20  # the label's (anti-aliased) text is red

    calm = _drawing()
    calm.zones[0] = ZoneMark("tibia_1M", 0.4, (120.0, 30.0), calm.zones[0].points, flagged=False)
    unflagged = np.asarray(render_overlay(pixels, masks, legend=False, drawing=calm))
    assert not _reddish(unflagged[near_anchor]).any()
    label = unflagged[near_anchor].astype(int)
    assert ((label.min(axis=-1) > 150) & (np.ptp(label, axis=-1) == 0)).sum() > 20  # white text
    assert ZONE_RGB == (255, 255, 255)


def test_png_bytes_carry_the_drawing() -> None:
    pixels, masks = _image_and_masks()
    assert overlay_png_bytes(pixels, masks) != overlay_png_bytes(pixels, masks, drawing=_drawing())


def test_thumbnail_is_a_small_jpeg() -> None:
    pixels, masks = _image_and_masks((900, 600))
    for source in (
        overlay_png_bytes(pixels, masks),
        render_overlay(pixels, masks),
        np.zeros((900, 600, 3), np.uint8),
    ):
        data = thumbnail_jpeg(source, max_side_px=300)
        assert data[:3] == b"\xff\xd8\xff"
        with Image.open(io.BytesIO(data)) as thumb:
            assert thumb.format == "JPEG" and thumb.mode == "RGB" and thumb.size == (200, 300)
    small = thumbnail_jpeg(overlay_png_bytes(*_image_and_masks()), max_side_px=320)
    assert Image.open(io.BytesIO(small)).size == (160, 200)  # never enlarged


def test_thumbnail_refuses_what_is_no_image() -> None:
    with pytest.raises(ValueError, match="not an image"):
        thumbnail_jpeg(b"not a png")
    with pytest.raises(ValueError, match="max_side_px"):
        thumbnail_jpeg(np.zeros((20, 20), np.uint8), max_side_px=4)
