"""Things in the beam besides the patient: lead laterality markers, calibration sphere, ruler."""

from __future__ import annotations

import numpy as np

from orthoseg.synth.physics import MU_PER_MM

SPHERE_DIAMETER_MM = 25.0


def _letter_mask(letter: str, height_px: int, mirrored: bool) -> np.ndarray:
    """Anti-aliased coverage (0..1) of a bold letter ``height_px`` tall (Pillow's bundled font)."""
    from PIL import Image, ImageDraw, ImageFont

    supersample = 4
    size = height_px * supersample
    font = ImageFont.load_default(size=int(size * 1.35))
    canvas = Image.new("L", (size * 2, size * 2), 0)
    ImageDraw.Draw(canvas).text(
        (size // 4, 0), letter, fill=255, font=font, stroke_width=max(1, size // 9), stroke_fill=255
    )
    mask = np.asarray(canvas, dtype=np.float32) / 255.0
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    mask = mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    h = -(-mask.shape[0] // supersample) * supersample
    w = -(-mask.shape[1] // supersample) * supersample
    mask = np.pad(mask, ((0, h - mask.shape[0]), (0, w - mask.shape[1])))
    if mirrored:
        mask = mask[:, ::-1]
    return mask.reshape(h // supersample, supersample, w // supersample, supersample).mean((1, 3))


def place_marker(
    line: np.ndarray,
    letters: str,
    corner: int,
    spacing_mm: float,
    field: np.ndarray,
    rng: np.random.Generator,
) -> dict[str, object]:
    """Add lead letters (on a plastic holder) near a corner of the exposed field.

    Returns:
        Where it went (JSON-ready), for the ground truth.
    """
    height_px = max(6, int(round(rng.uniform(9.0, 13.0) / spacing_mm)))
    mirrored = bool(rng.random() < 0.25)
    glyphs = [_letter_mask(ch, height_px, mirrored) for ch in letters]
    gap = max(2, height_px // 3)
    width = sum(g.shape[1] for g in glyphs) + gap * (len(glyphs) - 1)
    height_px = max(g.shape[0] for g in glyphs)
    pad = max(2, height_px // 4)
    rows_f = np.flatnonzero(field.any(1))
    cols_f = np.flatnonzero(field.any(0))
    if rows_f.size == 0 or cols_f.size == 0:
        return {}
    margin = int(round(rng.uniform(6.0, 15.0) / spacing_mm))
    top = rows_f[0] + margin if corner in (0, 1) else rows_f[-1] - margin - height_px - 2 * pad
    left = cols_f[0] + margin if corner in (0, 2) else cols_f[-1] - margin - width - 2 * pad
    top, left = max(top, 0), max(left, 0)
    h, w = height_px + 2 * pad, width + 2 * pad
    if top + h > line.shape[0] or left + w > line.shape[1]:
        return {}
    line[top : top + h, left : left + w] += MU_PER_MM["plastic"] * 8.0
    x = left + pad
    for glyph in glyphs:
        gh, gw = glyph.shape
        line[top + pad : top + pad + gh, x : x + gw] += glyph[: h - pad, :] * MU_PER_MM["lead"] * 1.5
        x += glyph.shape[1] + gap
    return {
        "text": letters,
        "mirrored": mirrored,
        "box_px": [int(top), int(left), int(top + h), int(left + w)],
    }


def place_sphere(
    line: np.ndarray, spacing_mm: float, body: np.ndarray, field: np.ndarray, rng: np.random.Generator
) -> dict[str, object]:
    """A 25 mm steel calibration sphere beside the knee, at knee level (same magnification).

    Returns:
        Its centre (pixels) and diameter (mm) for the ground truth, or {} when there was no room.
    """
    radius_px = SPHERE_DIAMETER_MM / 2.0 / spacing_mm
    rows, cols = line.shape
    free = field & ~body
    for _ in range(40):
        r = rng.uniform(0.25, 0.75) * rows
        c = rng.uniform(radius_px + 4, cols - radius_px - 4)
        r0, r1 = int(r - radius_px - 2), int(r + radius_px + 3)
        c0, c1 = int(c - radius_px - 2), int(c + radius_px + 3)
        if r0 < 0 or c0 < 0 or r1 > rows or c1 > cols or not free[r0:r1, c0:c1].all():
            continue
        yy = (np.arange(r0, r1) - r)[:, None]
        xx = (np.arange(c0, c1) - c)[None, :]
        chord_mm = 2.0 * np.sqrt(np.maximum(radius_px**2 - yy**2 - xx**2, 0.0)) * spacing_mm
        line[r0:r1, c0:c1] += (MU_PER_MM["steel"] - 0.0) * chord_mm.astype(np.float32)
        return {"type": "sphere", "diameter_mm": SPHERE_DIAMETER_MM, "center_px": [round(r, 2), round(c, 2)]}
    return {}


def place_ruler(
    line: np.ndarray, spacing_mm: float, body: np.ndarray, field: np.ndarray, rng: np.random.Generator
) -> dict[str, object]:
    """A radiolucent ruler with lead millimetre ticks along one side of the field, at knee level."""
    rows, cols = line.shape
    cols_f = np.flatnonzero(field.any(0))
    rows_f = np.flatnonzero(field.any(1))
    if cols_f.size == 0:
        return {}
    width_px = int(round(14.0 / spacing_mm))
    left_side = bool(body[:, : cols // 2].mean() < body[:, cols // 2 :].mean())
    c0 = (
        cols_f[0] + int(round(4.0 / spacing_mm))
        if left_side
        else cols_f[-1] - int(round(4.0 / spacing_mm)) - width_px
    )
    r0 = rows_f[0] + int(round(10.0 / spacing_mm))
    r1 = rows_f[-1] - int(round(10.0 / spacing_mm))
    if r1 - r0 < 20 or c0 < 0 or c0 + width_px > cols:
        return {}
    line[r0:r1, c0 : c0 + width_px] += MU_PER_MM["plastic"] * 3.0
    tick_px = max(1, int(round(0.3 / spacing_mm)))
    length_mm = (r1 - r0) * spacing_mm
    for mm in range(int(length_mm)):
        row = r0 + int(round(mm / spacing_mm))
        reach = 9.0 if mm % 10 == 0 else (6.0 if mm % 5 == 0 else 3.5)
        reach_px = int(round(reach / spacing_mm))
        cs = slice(c0, c0 + reach_px) if left_side else slice(c0 + width_px - reach_px, c0 + width_px)
        line[row : row + tick_px, cs] += MU_PER_MM["lead"] * 0.4
    return {"type": "ruler", "tick_mm": 1.0, "start_px": [int(r0), int(c0)], "length_mm": round(length_mm, 1)}
