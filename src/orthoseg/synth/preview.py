"""Contact sheet of simulated radiographs with coloured mask outlines, to judge realism at a glance."""

from __future__ import annotations

import io
import logging

import numpy as np

from orthoseg.labels import STRUCTURES
from orthoseg.storage import ObjectStore
from orthoseg.synth.config import SynthCase, SynthConfig

logger = logging.getLogger(__name__)


def _presentation(case: SynthCase) -> np.ndarray:
    """Display values in [0, 1], brighter = denser, windowed as a viewer would (1-99.5 percentiles)."""
    ds = case.dataset
    stored = (
        np.frombuffer(ds.PixelData, dtype="<u2").reshape(int(ds.Rows), int(ds.Columns)).astype(np.float32)
    )
    if str(ds.PhotometricInterpretation) == "MONOCHROME1":
        stored = 4095.0 - stored
    low, high = np.percentile(stored[::4, ::4], (0.5, 99.8))
    return np.clip((stored - low) / max(high - low, 1.0), 0.0, 1.0)


def _outline(mask: np.ndarray) -> np.ndarray:
    inner = mask.copy()
    inner[1:, :] &= mask[:-1, :]
    inner[:-1, :] &= mask[1:, :]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return mask & ~inner


def render_tile(case: SynthCase, tile_px: int = 384, outlines: bool = True) -> np.ndarray:
    """One RGB tile (uint8) of a case fitted in a ``tile_px`` square: the image and its mask outlines."""
    from PIL import Image

    grey = _presentation(case)
    rows, cols = grey.shape
    scale = tile_px / max(rows, cols)
    size = (max(1, round(cols * scale)), max(1, round(rows * scale)))
    image = Image.fromarray((grey * 255).astype(np.uint8)).resize(size, Image.Resampling.LANCZOS)
    rgb = np.repeat(np.asarray(image)[..., None], 3, axis=2)
    if outlines:
        for structure in STRUCTURES:
            mask = case.masks[structure.channel]
            if not mask.any():
                continue
            small = Image.fromarray(mask.astype(np.uint8) * 255).resize(size, Image.Resampling.BILINEAR)
            edge = _outline(np.asarray(small) > 127)
            rgb[edge] = structure.color_rgb
    return rgb


def render_contact_sheet(cases: list[SynthCase], tile_px: int = 384, columns: int = 4) -> bytes:
    """PNG bytes: for each case the plain image and the image with label outlines, on a dark grid."""
    from PIL import Image, ImageDraw

    if not cases:
        raise ValueError("no cases to preview")
    gap, caption = 6, 16
    cell_w, cell_h = 2 * tile_px + 3 * gap, tile_px + caption + gap
    rows = (len(cases) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * cell_w, rows * cell_h), (20, 20, 20))
    draw = ImageDraw.Draw(sheet)
    for number, case in enumerate(cases):
        x0, y0 = (number % columns) * cell_w + gap, (number // columns) * cell_h + caption
        for k, outlined in enumerate((False, True)):
            tile = render_tile(case, tile_px, outlines=outlined)
            dx = (tile_px - tile.shape[1]) // 2
            dy = (tile_px - tile.shape[0]) // 2
            sheet.paste(Image.fromarray(tile), (x0 + k * (tile_px + gap) + dx, y0 + dy))
        truth = case.truth
        label = " ".join(
            str(truth.get(key, "")) for key in ("view", "laterality", "category", "design_family", "fixation")
        )
        draw.text((x0, y0 - caption + 2), label, fill=(230, 230, 230))
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def write_preview(store: ObjectStore, config: SynthConfig, key: str, n: int = 12) -> str:
    """Simulate the first ``n`` cases of ``config`` and write their contact sheet PNG to ``key``.

    Returns:
        The key written.
    """
    from orthoseg.synth.case import generate_case

    count = min(n, config.count) if config.count else n
    cases = [generate_case(index, config) for index in range(count)]
    store.put_bytes(key, render_contact_sheet(cases))
    logger.info("wrote a preview of %d cases to %s", count, store.url(key))
    return key
