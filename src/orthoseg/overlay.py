"""Overlay images for people: the radiograph in grey with each structure's outline and a light fill.

With a ``MeasurementDrawing`` the overlay also shows where the numbers came from: fitted axes and
component lines as thin labelled segments, and each radiolucent-line zone's interface points with its
width. ``thumbnail_jpeg`` shrinks an overlay to the small JPEG the run report embeds.
"""

from __future__ import annotations

import io
import logging
from typing import TYPE_CHECKING

import numpy as np

from orthoseg.labels import NUM_STRUCTURES, STRUCTURES, Structure

if TYPE_CHECKING:
    from PIL import Image, ImageDraw, ImageFont

    from orthoseg.measure.drawing import MeasurementDrawing

logger = logging.getLogger(__name__)

FILL_ALPHA = 0.25
"""Opacity of the mask fill; outlines are drawn opaque."""

SEGMENT_RGB = (57, 255, 20)
"""Colour of measurement segments (axes, condylar/tray lines): a lime no structure uses."""
ZONE_RGB = (255, 255, 255)
"""Colour of a zone's interface points and label."""
FLAGGED_ZONE_RGB = (255, 40, 40)
"""Colour of a zone whose line reaches the flag width."""


def window_to_uint8(pixels: np.ndarray, percentiles: tuple[float, float] = (0.5, 99.5)) -> np.ndarray:
    """Presentation values -> 8-bit grey, windowed to the given percentiles (robust to hot pixels)."""
    values = np.asarray(pixels, dtype=np.float32)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.zeros(values.shape, dtype=np.uint8)
    step = max(1, int(np.sqrt(finite.size / 250_000)))
    low, high = np.percentile(finite[::step], percentiles)
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    scaled = np.clip((np.nan_to_num(values, nan=low) - low) / (high - low), 0.0, 1.0)
    return (scaled * 255.0 + 0.5).astype(np.uint8)


def _downscale_factor(shape: tuple[int, int], max_side_px: int) -> int:
    """Integer block size that brings the longest side to at most ``max_side_px``."""
    return max(1, -(-max(shape) // max_side_px))


def _block_mean(array: np.ndarray, factor: int) -> np.ndarray:
    """Average ``factor`` x ``factor`` blocks of the last two axes (edges padded by repetition)."""
    if factor == 1:
        return array
    h, w = array.shape[-2:]
    pad_h, pad_w = (-h) % factor, (-w) % factor
    pad = [(0, 0)] * (array.ndim - 2) + [(0, pad_h), (0, pad_w)]
    padded = np.pad(array, pad, mode="edge")
    new_shape = (*padded.shape[:-2], padded.shape[-2] // factor, factor, padded.shape[-1] // factor, factor)
    return padded.reshape(new_shape).mean(axis=(-3, -1))


def mask_outline(mask: np.ndarray, width_px: int = 1) -> np.ndarray:
    """Pixels of ``mask`` that touch the background (4-neighbourhood), thickened to ``width_px``."""
    outline = np.zeros_like(mask, dtype=bool)
    inner = mask.copy()
    for _ in range(max(1, width_px)):
        padded = np.pad(inner, 1, mode="constant", constant_values=False)
        eroded = (
            padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
        )
        outline |= inner & ~eroded
        inner = eroded
    return outline


def render_overlay(
    pixels: np.ndarray,
    masks: np.ndarray,
    max_side_px: int = 1024,
    legend: bool = True,
    *,
    drawing: MeasurementDrawing | None = None,
) -> Image.Image:
    """Draw the radiograph in grey with every structure's outline (opaque) and fill (light).

    Args:
        pixels: native presentation values (higher = denser), (H, W).
        masks: (7, H, W) boolean masks in label-contract order, same size as ``pixels``.
        max_side_px: longest side of the output; larger films are block-averaged down by an integer
            factor (masks are downscaled by area and thresholded at one half).
        legend: draw a small legend of the structures present (top-left corner).
        drawing: measurement geometry in native pixel (row, column) coordinates, drawn on top (scaled by
            the same downscale factor): segments in ``SEGMENT_RGB`` with their label, zone interface
            points as dots with ``"<zone> <width> mm"`` at the zone's anchor (``FLAGGED_ZONE_RGB`` when
            flagged). None: outlines and fills only.

    Returns:
        An RGB ``PIL.Image``.

    Raises:
        ValueError: when the masks do not match the image or the label contract.
    """
    from PIL import Image

    pixels = np.asarray(pixels)
    masks = np.asarray(masks)
    if pixels.ndim != 2:
        raise ValueError(f"pixels must be one greyscale image (H, W); got shape {pixels.shape}")
    if masks.shape != (NUM_STRUCTURES, *pixels.shape):
        raise ValueError(f"masks must have shape {(NUM_STRUCTURES, *pixels.shape)}; got {masks.shape}")
    if max_side_px < 16:
        raise ValueError(f"max_side_px must be at least 16; got {max_side_px}")
    factor = _downscale_factor(pixels.shape, max_side_px)
    grey = window_to_uint8(_block_mean(pixels.astype(np.float32), factor))
    small_masks = _block_mean(masks.astype(np.float32), factor) >= 0.5 if factor > 1 else masks.astype(bool)
    outline_width = max(1, round(max(grey.shape) / 512))
    present = [s for s in STRUCTURES if small_masks[s.channel].any()]
    # Fills compose channel-planar (3, H, W) in float32: whole-plane arithmetic, no fancy indexing.
    planes = np.repeat(grey[None].astype(np.float32), 3, axis=0)
    for s in present:
        weight = small_masks[s.channel].astype(np.float32) * np.float32(FILL_ALPHA)
        for channel, value in enumerate(s.color_rgb):
            plane = planes[channel]
            plane += weight * (np.float32(value) - plane)
    rgb = np.ascontiguousarray(np.moveaxis(np.clip(planes + 0.5, 0, 255).astype(np.uint8), 0, -1))
    # Outlines after all fills, so an overlapping structure's fill never tints another's outline.
    for s in present:
        rgb[mask_outline(small_masks[s.channel], outline_width)] = np.asarray(s.color_rgb, dtype=np.uint8)
    image = Image.fromarray(rgb)
    if drawing is not None:
        _draw_measurements(image, drawing, factor, outline_width)
    if legend:
        _draw_legend(image, present)
    return image


def _to_overlay_xy(point: tuple[float, float] | np.ndarray, factor: int) -> tuple[float, float]:
    """Native (row, column) -> overlay (x, y): block ``i`` covers native pixels ``[i*f, (i+1)*f)``."""
    row, col = float(point[0]), float(point[1])
    return ((col + 0.5) / factor - 0.5, (row + 0.5) / factor - 0.5)


def _draw_label(
    draw: ImageDraw.ImageDraw,
    image_size: tuple[int, int],
    xy: tuple[float, float],
    text: str,
    colour: tuple[int, int, int],
    font: ImageFont.ImageFont | ImageFont.FreeTypeFont,
) -> None:
    """Text on a black box just right of ``xy``, moved inside the image when it would spill over."""
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    width, height = right - left + 4, bottom - top + 2
    x = min(max(0.0, xy[0] + 3), image_size[0] - width)
    y = min(max(0.0, xy[1] - height / 2), image_size[1] - height)
    draw.rectangle((x, y, x + width, y + height), fill=(0, 0, 0))
    draw.text((x + 2 - left, y + 1 - top), text, fill=colour, font=font)


def _draw_measurements(
    image: Image.Image,
    drawing: MeasurementDrawing,
    factor: int,
    line_width: int,
) -> None:
    """Segments with labels at their end, zone points as dots and a width label at each zone's anchor."""
    from PIL import ImageDraw, ImageFont

    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    size = (image.width, image.height)
    for segment in drawing.segments:
        start, end = _to_overlay_xy(segment.start, factor), _to_overlay_xy(segment.end, factor)
        draw.line((start, end), fill=SEGMENT_RGB, width=line_width)
    radius = max(1.0, line_width * 0.75)
    for zone in drawing.zones:
        colour = FLAGGED_ZONE_RGB if zone.flagged else ZONE_RGB
        for point in np.asarray(zone.points, dtype=np.float64).reshape(-1, 2):
            x, y = _to_overlay_xy(point, factor)
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=colour)
    # Labels after every line and dot, so no geometry hides a label.
    for segment in drawing.segments:
        _draw_label(draw, size, _to_overlay_xy(segment.end, factor), segment.label, SEGMENT_RGB, font)
    for zone in drawing.zones:
        colour = FLAGGED_ZONE_RGB if zone.flagged else ZONE_RGB
        text = f"{zone.zone} {zone.width_mm:.1f} mm"
        _draw_label(draw, size, _to_overlay_xy(zone.anchor, factor), text, colour, font)


def _draw_legend(image: Image.Image, present: list[Structure]) -> None:
    """A dark box with a colour swatch and name per structure present, or a note that none was found."""
    from PIL import ImageDraw, ImageFont

    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    lines = [(s.display_name, s.color_rgb) for s in present] or [("no structure found", (200, 200, 200))]
    line_height = 12
    width = 14 + max(int(draw.textlength(text, font=font)) for text, _ in lines) + 6
    height = 4 + line_height * len(lines)
    if width > image.width or height > image.height:
        return
    draw.rectangle((0, 0, width, height), fill=(0, 0, 0))
    for index, (text, colour) in enumerate(lines):
        top = 2 + index * line_height
        draw.rectangle((3, top + 1, 11, top + 9), fill=tuple(colour))
        draw.text((14, top - 1), text, fill=(255, 255, 255), font=font)


def overlay_png_bytes(
    pixels: np.ndarray,
    masks: np.ndarray,
    max_side_px: int = 1024,
    *,
    drawing: MeasurementDrawing | None = None,
) -> bytes:
    """``render_overlay`` encoded as PNG bytes (what the inference stage stores)."""
    buffer = io.BytesIO()
    image = render_overlay(pixels, masks, max_side_px=max_side_px, drawing=drawing)
    # Fast zlib level: overlays are for viewing, and level 6 doubles the encode time for ~3% smaller files.
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def thumbnail_jpeg(
    overlay: bytes | Image.Image | np.ndarray, max_side_px: int = 320, quality: int = 80
) -> bytes:
    """Shrink an overlay to a small JPEG for the run report, which embeds one per image.

    A 1,024 px overlay becomes ~10-25 KB at the defaults, so a report of 1,000 images stays a file one
    can mail or open offline.

    Args:
        overlay: the overlay as encoded image bytes (the PNG ``overlay_png_bytes`` writes), a PIL image,
            or an (H, W, 3) / (H, W) uint8 array.
        max_side_px: longest side of the thumbnail; smaller overlays are not enlarged.
        quality: JPEG quality, 1-95.

    Returns:
        Baseline RGB JPEG bytes.

    Raises:
        ValueError: for a ``max_side_px`` below 16, a quality outside 1-95, or bytes that are no image.
    """
    from PIL import Image, UnidentifiedImageError

    if max_side_px < 16:
        raise ValueError(f"max_side_px must be at least 16; got {max_side_px}")
    if not 1 <= quality <= 95:
        raise ValueError(f"quality must be in 1-95; got {quality}")
    if isinstance(overlay, bytes | bytearray | memoryview):
        try:
            image: Image.Image = Image.open(io.BytesIO(bytes(overlay)))
            image.load()
        except UnidentifiedImageError as error:
            raise ValueError("overlay bytes are not an image PIL can read") from error
    elif isinstance(overlay, np.ndarray):
        image = Image.fromarray(np.ascontiguousarray(overlay, dtype=np.uint8))
    else:
        image = overlay
    image = image.convert("RGB")
    image.thumbnail((max_side_px, max_side_px), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality, optimize=True)
    return buffer.getvalue()
