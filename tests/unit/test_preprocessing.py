"""The one preprocessing and its inverse: geometry is exact, intensities are normalised."""

from __future__ import annotations

import numpy as np
import pytest

from orthoseg.preprocessing import (
    cut_shaft_window,
    cut_training_window,
    masks_to_canvas,
    plan_canvas,
    preprocess_radiograph,
    restore_to_native,
    training_strip,
    training_window,
)
from orthoseg.settings import PreprocessConfig


def test_fixed_mm_per_pixel_when_the_film_fits() -> None:
    transform = plan_canvas((1000, 800), (0.2, 0.2), PreprocessConfig(spacing_mm=1.0, canvas_px=256))
    assert transform.canvas_spacing_mm == pytest.approx(1.0)
    assert transform.resized_shape == (200, 160)
    assert transform.offset_px == (28, 48)


def test_large_films_shrink_to_the_canvas_when_asked_and_keep_aspect() -> None:
    config = PreprocessConfig(spacing_mm=1.0, canvas_px=256, large_films="shrink")
    transform = plan_canvas((2000, 1000), (0.2, 0.2), config)
    assert transform.canvas_spacing_mm == pytest.approx(400 / 256)
    assert transform.resized_shape == (256, 128)
    assert transform.canvas_shape == (256, 256)


def test_large_films_extend_the_canvas_at_the_trained_spacing() -> None:
    # A 43 cm film at 0.2 mm: bones must keep the scale of training (1 mm per canvas pixel).
    config = PreprocessConfig(spacing_mm=1.0, canvas_px=256, canvas_multiple=32)
    transform = plan_canvas((2150, 1000), (0.2, 0.2), config)
    assert transform.canvas_spacing_mm == pytest.approx(1.0)
    assert transform.resized_shape == (430, 200)
    assert transform.canvas_shape == (448, 256)  # rows rounded up to a multiple of 32; columns at least 256
    canvas, _ = preprocess_radiograph(np.ones((2150, 1000), np.float32), (0.2, 0.2), config)
    assert canvas.shape == (448, 256)


def test_extension_stops_at_the_largest_canvas() -> None:
    config = PreprocessConfig(spacing_mm=1.0, canvas_px=256, max_canvas_px=512)
    transform = plan_canvas((7000, 2000), (0.2, 0.2), config)  # a 1.4 m long-leg film
    assert transform.canvas_spacing_mm == pytest.approx(1400 / 512)
    assert transform.canvas_shape == (512, 256)


def test_training_window_is_centred_on_the_labelled_anatomy() -> None:
    masks = np.zeros((7, 448, 256), dtype=bool)
    masks[0, 300:400, 60:200] = True
    row, column = training_window(masks, 256)
    assert (row, column) == (448 - 256, 0)  # clamped to the canvas, anatomy inside the window
    assert masks[:, row : row + 256].sum() == masks.sum()


def test_training_window_keeps_one_knee_whole_on_a_two_knee_film() -> None:
    masks = np.zeros((7, 256, 640), dtype=bool)
    masks[0, 50:200, 40:200] = True  # right knee, larger
    masks[1, 50:200, 440:580] = True  # left knee
    row, column = training_window(masks, 256)
    assert row == 0
    assert masks[0, :, column : column + 256].sum() == masks[0].sum()


def _long_film_canvas() -> tuple[np.ndarray, np.ndarray]:
    """A 640-row canvas (a long film) whose rows count up, with a femur above and a tibia below."""
    canvas = np.repeat(np.arange(640, dtype=np.float32)[:, None], 256, axis=1)
    masks = np.zeros((7, 640, 256), dtype=bool)
    masks[0, 100:330, 60:200] = True
    masks[1, 330:600, 60:200] = True
    return canvas, masks


def test_training_strip_keeps_film_above_and_below_the_window() -> None:
    canvas, masks = _long_film_canvas()
    row, _ = training_window(masks, 256)
    image, strip_masks, valid_rows = training_strip(canvas, masks, 256, context_rows=160)
    assert image.shape == (576, 256) and strip_masks.shape == (7, 576, 256)
    # The anatomy-centred window is the strip's middle; the strip holds canvas rows row-160 .. row+416.
    np.testing.assert_array_equal(image[160:416], canvas[row : row + 256])
    first = max(0, row - 160)
    end = min(640, row + 256 + 160)
    assert valid_rows == (first - (row - 160), first - (row - 160) + end - first)
    assert image[valid_rows[0] : valid_rows[1], 0].tolist() == list(range(first, end))
    assert not image[: valid_rows[0]].any() and not strip_masks[:, valid_rows[1] :].any()


def test_random_windows_reach_both_ends_of_a_long_film_and_never_leave_it() -> None:
    canvas, masks = _long_film_canvas()
    image, strip_masks, valid_rows = training_strip(canvas, masks, 256, context_rows=160)
    rng = np.random.default_rng(0)
    tops = []
    for _ in range(400):
        window, window_masks = cut_training_window(image, strip_masks, valid_rows, 256, rng)
        assert window.shape == (256, 256) and window_masks.shape == (7, 256, 256)
        first_row = int(window[0, 0])
        np.testing.assert_array_equal(window[:, 0], np.arange(first_row, first_row + 256))  # canvas only
        tops.append(first_row)
    row, _ = training_window(masks, 256)
    reach = (max(0, row - 160), min(640, row + 256 + 160) - 256)
    assert (min(tops), max(tops)) == reach  # both ends of the strip's film are seen
    assert reach[0] == row - 160 and reach[1] == 640 - 256  # 160 rows above; the film ends below
    centred, _ = cut_training_window(image, strip_masks, valid_rows, 256, None)
    assert int(centred[0, 0]) == row


def test_shaft_windows_show_one_side_of_the_joint_and_only_film_rows() -> None:
    canvas, masks = _long_film_canvas()  # femur rows 100-329, tibia 330-599
    image, strip_masks, valid_rows = training_strip(canvas, masks, 256, context_rows=160)
    rng = np.random.default_rng(0)
    sides = {"leg": 0, "thigh": 0}
    for _ in range(200):
        cut = cut_shaft_window(image, strip_masks, valid_rows, 256, rng, (0,), (1,))
        assert cut is not None
        window, window_masks = cut
        assert window.shape == (256, 256) and window_masks.shape == (7, 256, 256)
        femur_seen, tibia_seen = window_masks[0].any(), window_masks[1].any()
        assert femur_seen != tibia_seen  # exactly one side of the joint
        sides["thigh" if femur_seen else "leg"] += 1
        film = np.flatnonzero(window[:, 0])
        assert film.size >= 256 // 3  # enough film to learn from
        # the film rows are consecutive canvas rows, kept beside their labels; the rest is zero
        first_row = window[film[0], 0]
        np.testing.assert_array_equal(window[film, 0], np.arange(first_row, first_row + film.size))
        if tibia_seen:
            assert window[film[0], 0] > 329  # starts below the femur's last row
            assert window_masks[1, film].any(axis=1).all() or window[film[-1], 0] >= 599
        else:
            assert window[film[-1], 0] < 330  # ends above the tibia's first row
    assert sides["leg"] > 50 and sides["thigh"] > 50


def test_no_shaft_window_without_both_sides_of_a_joint() -> None:
    canvas, masks = _long_film_canvas()
    masks[0] = False  # a film of the leg alone: there is no joint to leave
    image, strip_masks, valid_rows = training_strip(canvas, masks, 256, context_rows=160)
    rng = np.random.default_rng(1)
    cuts = [cut_shaft_window(image, strip_masks, valid_rows, 256, rng, (0,), (1,)) for _ in range(20)]
    assert all(cut is None for cut in cuts)


def test_a_film_no_taller_than_the_window_gives_the_window_at_any_draw() -> None:
    canvas = np.random.default_rng(1).random((256, 256)).astype(np.float32)
    masks = np.zeros((7, 256, 256), dtype=bool)
    masks[0, 40:200, 40:200] = True
    image, strip_masks, valid_rows = training_strip(canvas, masks, 256, context_rows=64)
    assert valid_rows == (64, 320)
    window, window_masks = cut_training_window(image, strip_masks, valid_rows, 256, np.random.default_rng(2))
    np.testing.assert_array_equal(window, canvas)
    np.testing.assert_array_equal(window_masks, masks)


def test_invalid_canvas_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="multiple of canvas_multiple"):
        PreprocessConfig(canvas_px=100, canvas_multiple=32)
    with pytest.raises(ValueError, match="smaller than canvas_px"):
        PreprocessConfig(canvas_px=256, max_canvas_px=128)


def test_intensities_land_in_unit_range_and_padding_is_zero() -> None:
    rng = np.random.default_rng(0)
    pixels = rng.normal(2000, 300, size=(500, 300)).astype(np.float32)
    canvas, transform = preprocess_radiograph(
        pixels, (0.3, 0.3), PreprocessConfig(spacing_mm=1.0, canvas_px=256)
    )
    assert canvas.shape == (256, 256) and canvas.dtype == np.float32
    assert 0.0 <= canvas.min() and canvas.max() <= 1.0
    r0, c0 = transform.offset_px
    assert canvas[:r0].max() == 0.0 and canvas[:, :c0].max() == 0.0


def test_restore_inverts_the_canvas_mapping() -> None:
    masks = np.zeros((7, 1200, 900), dtype=bool)
    masks[0, 100:600, 200:700] = True
    masks[5, 700:1100, 100:400] = True
    config = PreprocessConfig(spacing_mm=0.5, canvas_px=512)
    _, transform = preprocess_radiograph(np.zeros((1200, 900), np.float32), (0.15, 0.15), config)
    assert transform.canvas_shape == (512, 512)
    restored = restore_to_native(masks_to_canvas(masks, transform).astype(np.float32), transform) >= 0.5
    assert restored.shape == masks.shape
    for channel in (0, 5):
        intersection = np.logical_and(restored[channel], masks[channel]).sum()
        dice = 2 * intersection / (restored[channel].sum() + masks[channel].sum())
        assert dice > 0.99
    assert not restored[1].any()


def test_constant_image_does_not_divide_by_zero() -> None:
    canvas, _ = preprocess_radiograph(np.full((100, 100), 7.0), (1.0, 1.0), PreprocessConfig())
    assert np.isfinite(canvas).all() and canvas.max() == 0.0
