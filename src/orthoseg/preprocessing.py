"""The one radiograph preprocessing (native image -> canvas at a fixed mm per pixel) and its exact inverse.

Training and inference both call these functions, and the ``PreprocessConfig`` is saved with every
model, so the two can never drift apart.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from orthoseg.settings import PreprocessConfig

# Used when a file carries no pixel spacing at all (flagged by validation and quality checks).
FALLBACK_SPACING_MM = 0.15


@dataclass(frozen=True)
class CanvasTransform:
    """Geometry linking a native image to its canvas: canvas = native * scale + offset (per axis).

    Attributes:
        native_shape: (rows, columns) of the native image.
        native_spacing_mm: (row, column) spacing of the native image.
        canvas_shape: (rows, columns) of the canvas: ``canvas_px`` square, or larger when a big film
            is extended at the configured spacing (``PreprocessConfig.large_films``).
        canvas_spacing_mm: mm per canvas pixel (isotropic); larger than the configured spacing only
            when the film would not otherwise fit on the (largest) canvas.
        resized_shape: (rows, columns) the native image occupies on the canvas.
        offset_px: (row, column) of the top-left corner of the image on the canvas.
    """

    native_shape: tuple[int, int]
    native_spacing_mm: tuple[float, float]
    canvas_shape: tuple[int, int]
    canvas_spacing_mm: float
    resized_shape: tuple[int, int]
    offset_px: tuple[int, int]

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def plan_canvas(
    native_shape: tuple[int, int],
    native_spacing_mm: tuple[float, float] | None,
    config: PreprocessConfig,
) -> CanvasTransform:
    """Compute where a native image lands on the canvas, preserving physical aspect ratio.

    Args:
        native_shape: (rows, columns) of the film.
        native_spacing_mm: its (row, column) spacing; None uses ``FALLBACK_SPACING_MM``.
        config: canvas settings; ``large_films`` decides whether a film larger than ``canvas_px`` at
            ``spacing_mm`` grows the canvas or is shrunk onto it.
    """
    spacing = native_spacing_mm or (FALLBACK_SPACING_MM, FALLBACK_SPACING_MM)
    extent_mm = (native_shape[0] * spacing[0], native_shape[1] * spacing[1])
    largest = (
        (config.max_canvas_px // config.canvas_multiple) * config.canvas_multiple
        if config.large_films == "extend"
        else config.canvas_px
    )
    canvas_spacing = max(config.spacing_mm, max(extent_mm) / largest)
    resized = (
        min(largest, max(1, round(extent_mm[0] / canvas_spacing))),
        min(largest, max(1, round(extent_mm[1] / canvas_spacing))),
    )
    canvas_shape = (
        max(config.canvas_px, _round_up(resized[0], config.canvas_multiple)),
        max(config.canvas_px, _round_up(resized[1], config.canvas_multiple)),
    )
    offset = ((canvas_shape[0] - resized[0]) // 2, (canvas_shape[1] - resized[1]) // 2)
    return CanvasTransform(
        native_shape=(int(native_shape[0]), int(native_shape[1])),
        native_spacing_mm=(float(spacing[0]), float(spacing[1])),
        canvas_shape=(int(canvas_shape[0]), int(canvas_shape[1])),
        canvas_spacing_mm=float(canvas_spacing),
        resized_shape=resized,
        offset_px=offset,
    )


def normalize_intensity(pixels: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """Window to the configured percentiles and scale to [0, 1] (presentation pixels in, float32 out)."""
    values = np.asarray(pixels, dtype=np.float32)
    step = max(1, int(np.sqrt(values.size / 250_000)))
    sample = values[::step, ::step]
    low, high = np.percentile(sample, config.clip_percentiles)
    if not np.isfinite(low) or not np.isfinite(high) or high <= low:
        return np.zeros_like(values, dtype=np.float32)
    return np.clip((values - low) / (high - low), 0.0, 1.0).astype(np.float32)


def _resize(array: torch.Tensor, shape: tuple[int, int], mode: str) -> torch.Tensor:
    if tuple(array.shape[-2:]) == tuple(shape):
        return array
    if mode == "nearest":
        return F.interpolate(array, size=shape, mode="nearest-exact")
    return F.interpolate(array, size=shape, mode="bilinear", align_corners=False, antialias=True)


def preprocess_radiograph(
    pixels: np.ndarray,
    native_spacing_mm: tuple[float, float] | None,
    config: PreprocessConfig,
) -> tuple[np.ndarray, CanvasTransform]:
    """Bring a presentation-ready radiograph onto the canvas at the configured mm per pixel.

    Args:
        pixels: native image (higher = denser), any numeric dtype.
        native_spacing_mm: (row, column) spacing; None uses ``FALLBACK_SPACING_MM``.
        config: canvas and intensity settings.

    Returns:
        The canvas image (``transform.canvas_shape``, float32 in [0, 1], zero padding) and the
        transform that ``restore_to_native`` inverts.
    """
    transform = plan_canvas(pixels.shape[-2:], native_spacing_mm, config)
    normalized = torch.from_numpy(normalize_intensity(pixels, config))[None, None]
    resized = _resize(normalized, transform.resized_shape, "bilinear")[0, 0]
    canvas = torch.zeros(transform.canvas_shape, dtype=torch.float32)
    r0, c0 = transform.offset_px
    canvas[r0 : r0 + transform.resized_shape[0], c0 : c0 + transform.resized_shape[1]] = resized
    return canvas.numpy(), transform


def masks_to_canvas(masks: np.ndarray, transform: CanvasTransform) -> np.ndarray:
    """Resample native (C, H, W) binary masks onto the canvas (area-weighted, threshold 0.5)."""
    tensor = torch.from_numpy(np.asarray(masks, dtype=np.float32))[None]
    resized = _resize(tensor, transform.resized_shape, "bilinear")[0]
    canvas = torch.zeros((masks.shape[0], *transform.canvas_shape), dtype=torch.float32)
    r0, c0 = transform.offset_px
    canvas[:, r0 : r0 + transform.resized_shape[0], c0 : c0 + transform.resized_shape[1]] = resized
    return (canvas >= 0.5).numpy()


def training_window(masks: np.ndarray, side: int) -> tuple[int, int]:
    """Top-left corner of the ``side`` square a training example is cut to from an extended canvas.

    Centred on the labelled anatomy (all structures' pixels); when that is wider or taller than the
    window (two knees on a standing film), on the half of it holding the most labelled pixels, so one
    knee is seen whole. A canvas no larger than ``side`` gives (0, 0).

    Args:
        masks: (C, H, W) canvas masks.
        side: window side in canvas pixels.
    """
    rows, cols = masks.shape[-2:]
    anatomy = np.asarray(masks, dtype=bool).any(axis=0)
    corner = []
    for axis, size in ((0, rows), (1, cols)):
        if size <= side:
            corner.append(0)
            continue
        profile = anatomy.sum(axis=1 - axis).astype(np.float64)
        present = np.flatnonzero(profile)
        if present.size == 0:
            corner.append((size - side) // 2)
            continue
        first, last = int(present[0]), int(present[-1])
        if last - first + 1 > side:
            middle = (first + last) // 2
            low, high = profile[:middle].sum(), profile[middle:].sum()
            part = np.arange(first, middle) if low >= high else np.arange(middle, last + 1)
            weights = profile[part]
            centre = float((part * weights).sum() / max(weights.sum(), 1.0))
        else:
            centre = 0.5 * (first + last)
        corner.append(int(np.clip(round(centre - side / 2), 0, size - side)))
    return corner[0], corner[1]


def training_strip(
    canvas: np.ndarray, canvas_masks: np.ndarray, side: int, context_rows: int
) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """A ``side``-wide strip of a canvas: the training window plus up to ``context_rows`` above and below.

    Revision stems and long films reach far above and below the knee; a fixed window would never show
    the network their ends, which it must segment at inference (on the whole, extended canvas). The
    strip keeps that film so each epoch can cut the window at another height (``cut_training_window``).

    Args:
        canvas: (H, W) canvas image.
        canvas_masks: (C, H, W) canvas masks.
        side: the training window's side in canvas pixels (``PreprocessConfig.canvas_px``).
        context_rows: rows kept above and below the anatomy-centred window (0: the window alone).

    Returns:
        The strip image (``side + 2 * context_rows``, ``side``), its masks (C, same), zero where the
        canvas ends, and the (first, end) rows of the strip that hold canvas. The anatomy-centred
        window (``training_window``) is always rows ``context_rows`` to ``context_rows + side``.
    """
    row, column = training_window(canvas_masks, side)
    height = side + 2 * context_rows
    first = max(0, row - context_rows)
    end = min(canvas.shape[-2], row + side + context_rows)
    top = first - (row - context_rows)
    image = np.zeros((height, side), dtype=np.float32)
    masks = np.zeros((canvas_masks.shape[0], height, side), dtype=bool)
    image[top : top + end - first] = canvas[first:end, column : column + side]
    masks[:, top : top + end - first] = canvas_masks[:, first:end, column : column + side]
    return image, masks, (top, top + end - first)


def cut_training_window(
    image: np.ndarray,
    masks: np.ndarray,
    valid_rows: tuple[int, int] | np.ndarray,
    side: int,
    rng: np.random.Generator | None,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``side`` square of a training strip: at a uniformly random height inside the canvas rows with
    ``rng``, or the anatomy-centred window (the strip's middle) without one (validation).

    Args:
        image: (..., H, side) strip image from ``training_strip``.
        masks: (C, H, side) strip masks.
        valid_rows: (first, end) rows of the strip that hold canvas.
        side: window side.
        rng: random source; None for the centred window.
    """
    height = image.shape[-2]
    centred = (height - side) // 2
    if rng is None or height == side:
        top = centred
    else:
        first, end = int(valid_rows[0]), int(valid_rows[1])
        low, high = min(first, centred), max(centred, end - side)
        top = int(rng.integers(low, high + 1))
    return image[..., top : top + side, :], masks[..., top : top + side, :]


# A shaft window starts this fraction of its side beyond the last pixel of the other side of the joint.
SHAFT_WINDOW_MARGIN_FRACTION = 1 / 32
# ... and is used only when film fills at least this fraction of its rows.
SHAFT_WINDOW_MIN_FILM_FRACTION = 1 / 3


def cut_shaft_window(
    image: np.ndarray,
    masks: np.ndarray,
    valid_rows: tuple[int, int] | np.ndarray,
    side: int,
    rng: np.random.Generator,
    femoral_channels: tuple[int, ...],
    tibial_channels: tuple[int, ...],
) -> tuple[np.ndarray, np.ndarray] | None:
    """A ``side`` square of a training strip that shows one side of the knee joint only: the leg below
    the joint (tibia and fibula shafts, a tibial stem) or the thigh above it.

    Archives hold films of the leg without the knee (shaft, ankle and long-leg films): with the joint
    always in view in training, a network calls two long shafts whatever it learnt long shafts next to a
    knee to be. The window begins just past the other side's last labelled row and runs on down (or
    up), or at a random depth beyond it; rows beyond the strip's film are zero, as the canvas is
    outside a film.

    Args:
        image: (..., H, side) strip image from ``training_strip``.
        masks: (C, H, side) strip masks.
        valid_rows: (first, end) rows of the strip that hold canvas.
        side: window side.
        rng: random source (which side, and how far past the joint).
        femoral_channels: mask channels above the joint (femur, patella, femoral component).
        tibial_channels: mask channels below the joint (tibia, fibula, tibial component).

    Returns:
        The window image and masks, or None when the strip has no joint to leave or too little film on
        the chosen side.
    """
    height = image.shape[-2]
    femoral_rows = np.flatnonzero(np.asarray(masks)[list(femoral_channels)].any(axis=(0, 2)))
    tibial_rows = np.flatnonzero(np.asarray(masks)[list(tibial_channels)].any(axis=(0, 2)))
    if femoral_rows.size == 0 or tibial_rows.size == 0:
        return None
    first, end = int(valid_rows[0]), int(valid_rows[1])
    margin = max(1, round(side * SHAFT_WINDOW_MARGIN_FRACTION))
    min_film = round(side * SHAFT_WINDOW_MIN_FILM_FRACTION)
    # Half the windows begin at the joint (the most film), half at a random depth into the film (the
    # shafts alone, away from the plateau or condyles, whatever the film holds beyond them).
    deep = rng.random() < 0.5
    if rng.random() < 0.5:  # the leg below the joint
        start = int(femoral_rows[-1]) + 1 + margin
        film = end - start
        if film < min_film:
            return None
        top = start + int(rng.integers(0, max(0, (film - min_film) if deep else (film - side)) + 1))
    else:  # the thigh above the joint
        stop = int(tibial_rows[0]) - margin
        film = stop - first
        if film < min_film:
            return None
        top = stop - side - int(rng.integers(0, max(0, (film - min_film) if deep else (film - side)) + 1))
    pad_top, pad_bottom = max(0, -top), max(0, top + side - height)
    window_image = np.zeros((*image.shape[:-2], side, image.shape[-1]), dtype=image.dtype)
    window_masks = np.zeros((masks.shape[0], side, masks.shape[-1]), dtype=masks.dtype)
    rows = slice(max(0, top), min(height, top + side))
    window_image[..., pad_top : side - pad_bottom, :] = image[..., rows, :]
    window_masks[:, pad_top : side - pad_bottom, :] = masks[:, rows, :]
    return window_image, window_masks


def restore_to_native(canvas_maps: np.ndarray, transform: CanvasTransform) -> np.ndarray:
    """Invert ``preprocess_radiograph`` for per-channel maps: (C, canvas rows, canvas columns) -> (C, H, W).

    Probabilities are interpolated bilinearly, so thresholding after restoring gives smooth edges at
    native resolution. Binary input comes back as float in [0, 1].
    """
    tensor = torch.from_numpy(np.asarray(canvas_maps, dtype=np.float32))
    r0, c0 = transform.offset_px
    cropped = tensor[:, r0 : r0 + transform.resized_shape[0], c0 : c0 + transform.resized_shape[1]]
    native = F.interpolate(cropped[None], size=transform.native_shape, mode="bilinear", align_corners=False)
    return native[0].clamp(0.0, 1.0).numpy()
