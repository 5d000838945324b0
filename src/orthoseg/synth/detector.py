"""From line integrals to stored 12-bit values: exposure, heel effect, scatter, anti-scatter grid lines,
vignetting, quantum noise, detector blur, log transform and the vendor-style processing of a 'For
Presentation' image (multi-scale local contrast and tone curve: ``synth/processing.py``).

The default look follows a clinical DR knee film (shared/realdata/knee_ap_native.png, 0.14 mm, 8 bit):
air black, soft tissue ~0.1-0.25 of the display range (median ~0.22), bone ~0.5, shaft cortices ~0.75
over a ~0.5 canal, crisp edges and the limb's overall thickness flattened. A histogram analysis
(``histogram_anchors``) places soft tissue and bone at ``SOFT_ANCHOR`` / ``BONE_ANCHOR`` on the tone
curve's axis; the band gains, latitude, tone curve (slope, offset, gamma, black and white levels, a clipped
bright end) and the acquisition artefacts are randomised per image (``ImageSpec``, drawn in
``scenario._appearance``), from a mild CR-like to a strong DR-like chain.

Noise is calibrated on the real CR radiograph RG3_J2KR.dcm (shared/realdata, distal tibia/fibula, Fuji
CR, 10-bit MONOCHROME1): high-pass noise (value minus 5x5 mean) is 0.15 % of full scale in the raw beam,
0.34 % in soft tissue and 0.45 % in bone (texture included): ``NOISE_TARGET_SOFT`` below. As there,
collimated borders are bright (unexposed, shuttered) and the raw beam is black. Metal components are a
flat plateau at full white, above any bone and above radio-opaque cement.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from orthoseg.synth.processing import Look, histogram_anchors, local_contrast, tone_curve
from orthoseg.synth.scenario import ImageSpec

STORED_MAX = 4095  # 12 bits stored in 16 allocated
NOISE_TARGET_SOFT = 0.0034  # RG3_J2KR.dcm soft tissue, fraction of full scale (see module docstring)
SOFT_ANCHOR, BONE_ANCHOR = 0.2, 0.42  # where the histogram's soft tissue and bone sit on the tone curve
COLLIMATOR_LEVEL = 0.975  # the collimator's shadow, shuttered to near white (metal alone is full white)
PHOTONS_OPEN_FIELD = 3500.0  # quanta per 0.1 mm pixel in the raw beam at nominal exposure


@dataclass
class Exposure:
    """The stored image and its display window.

    Attributes:
        values: (rows, columns) uint16 presentation values, brighter = denser (MONOCHROME2 sense).
        window: (center, width) covering the anatomy, in stored values.
        field: True inside the collimated (exposed) field.
    """

    values: np.ndarray
    window: tuple[float, float]
    field: np.ndarray


def _downsample(image: np.ndarray, factor: int) -> np.ndarray:
    """Block means on a grid ``factor`` times coarser (edge-padded to a multiple of the factor)."""
    rows, cols = image.shape
    pad = (-rows % factor, -cols % factor)
    if pad != (0, 0):
        image = np.pad(image, ((0, pad[0]), (0, pad[1])), mode="edge")
    h, w = image.shape[0] // factor, image.shape[1] // factor
    return image.reshape(h, factor, w, factor).mean((1, 3), dtype=np.float32)


def _smooth_wide(
    small: np.ndarray, sigma_px: float, factor: int, shape: tuple[int, int], weight: np.ndarray | None = None
) -> np.ndarray:
    """Blur a downsampled image and bring it back to ``shape`` (wide blurs for scatter and processing).

    With ``weight`` (same grid), a normalised convolution: pixels of weight 0 (metal) do not pull
    their neighbourhood's average and get their neighbourhood's value themselves.
    """
    from orthoseg.synth.render import upsample

    sigma = sigma_px / factor
    if weight is None:
        blurred = ndimage.gaussian_filter(small, sigma, mode="nearest")
    else:
        norm = ndimage.gaussian_filter(weight, sigma, mode="nearest")
        blurred = ndimage.gaussian_filter(small * weight, sigma, mode="nearest") / np.maximum(norm, 1e-3)
    return upsample(blurred.astype(np.float32), factor, shape)


def _blur3(image: np.ndarray, sigma_px: float) -> np.ndarray:
    """Separable 3-tap blur [w, 1-2w, w] with the variance of a Gaussian of ``sigma_px`` (<= 0.707 px)."""
    w = np.float32(min(sigma_px**2 / 2.0, 0.25))
    centre = np.float32(1.0 - 2.0 * w)
    rows = image * centre
    rows[1:] += w * image[:-1]
    rows[:-1] += w * image[1:]
    rows[0] += w * image[0]
    rows[-1] += w * image[-1]
    out = rows * centre
    out[:, 1:] += w * rows[:, :-1]
    out[:, :-1] += w * rows[:, 1:]
    out[:, 0] += w * rows[:, 0]
    out[:, -1] += w * rows[:, -1]
    return out


def gaussian_noise(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Zero-mean, unit-variance noise, float32: a sum of three uniform bytes (Irwin-Hall, near Gaussian).

    Three times faster than ``standard_normal`` at the same determinism, and indistinguishable from
    Gaussian quantum noise at radiographic photon counts.
    """
    size = int(np.prod(shape))
    raw = np.frombuffer(rng.bytes(3 * size), dtype=np.uint8)
    total = raw[:size].astype(np.float32)
    total += raw[size : 2 * size]
    total += raw[2 * size :]
    total -= np.float32(3 * 127.5)
    total *= np.float32(1.0 / np.sqrt(3 * (256**2 - 1) / 12.0))
    return total.reshape(shape)


def collimation_margins_px(
    shape: tuple[int, int], spec: ImageSpec, spacing_mm: float
) -> tuple[int, int, int, int]:
    """Collimator margins (top, bottom, left, right) in pixels, never closing the field."""
    top, bottom, left, right = (int(round(m / spacing_mm)) for m in spec.collimation_mm)
    top, bottom = min(top, shape[0] // 4), min(bottom, shape[0] // 4)
    left, right = min(left, shape[1] // 4), min(right, shape[1] // 4)
    return top, bottom, left, right


def collimation_is_square(spec: ImageSpec) -> bool:
    """True when the shutters are parallel to the film's edges and no corner is cut off."""
    return spec.collimation_angle_deg == 0.0 and spec.collimation_corner < 0


def collimation_field(shape: tuple[int, int], spec: ImageSpec, spacing_mm: float) -> np.ndarray:
    """Exposed field: the image minus the collimator's shadow.

    Each closed shutter is a straight edge ``collimation_mm`` in from its film edge at the edge's middle,
    all four turned by ``collimation_angle_deg`` about the film's centre (an open shutter, margin 0,
    lies beyond the film and casts nothing); an oblique corner cut is one more straight edge. Square to
    the film (angle 0, no corner), the field is the rectangle within the margins, as it always was.
    """
    top, bottom, left, right = collimation_margins_px(shape, spec, spacing_mm)
    rows, cols = shape
    if collimation_is_square(spec):
        field = np.zeros(shape, dtype=bool)
        field[top : rows - bottom, left : cols - right] = True
        return field
    # Pixel centres relative to the film's centre; the film spans -half-0.5 .. half+0.5 around it.
    half_y, half_x = (rows - 1) / 2.0, (cols - 1) / 2.0
    y = (np.arange(rows, dtype=np.float64) - half_y)[:, None]
    x = (np.arange(cols, dtype=np.float64) - half_x)[None, :]
    theta = np.radians(spec.collimation_angle_deg)
    cos, sin = float(np.cos(theta)), float(np.sin(theta))
    # Coordinates in the collimator's (turned) frame.
    u = cos * x + sin * y
    v = -sin * x + cos * y
    field = np.ones(shape, dtype=bool)
    if top:
        field &= v >= -half_y - 0.5 + top
    if bottom:
        field &= v <= half_y + 0.5 - bottom
    if left:
        field &= u >= -half_x - 0.5 + left
    if right:
        field &= u <= half_x + 0.5 - right
    if spec.collimation_corner >= 0:
        corner = spec.collimation_corner
        sy = -1.0 if corner in (0, 1) else 1.0  # the corner's side: top (-1) or bottom (+1)
        sx = -1.0 if corner in (0, 2) else 1.0  # left (-1) or right (+1)
        phi = np.radians(spec.collimation_corner_angle_deg)
        nx, ny = -sx * float(np.cos(phi)), -sy * float(np.sin(phi))  # inward normal of the cut
        depth = spec.collimation_corner_mm / spacing_mm
        field &= (x - sx * (half_x + 0.5)) * nx + (y - sy * (half_y + 0.5)) * ny >= depth
    return field


def placement_box(field: np.ndarray) -> np.ndarray:
    """The field itself when it is a rectangle; else the largest-ish axis-aligned rectangle inside it,
    found by shrinking the field's bounding box on whichever side has the most shadow on its line, so
    that markers and rulers placed against the field's box stay in the exposed field."""
    rows_f, cols_f = np.flatnonzero(field.any(1)), np.flatnonzero(field.any(0))
    box = np.zeros_like(field)
    if rows_f.size == 0:
        return box
    r0, r1, c0, c1 = int(rows_f[0]), int(rows_f[-1]) + 1, int(cols_f[0]), int(cols_f[-1]) + 1
    while r1 - r0 > 2 and c1 - c0 > 2:
        shadow = (
            (~field[r0, c0:c1]).sum(),
            (~field[r1 - 1, c0:c1]).sum(),
            (~field[r0:r1, c0]).sum(),
            (~field[r0:r1, c1 - 1]).sum(),
        )
        worst = int(np.argmax(shadow))
        if shadow[worst] == 0:
            break
        if worst == 0:
            r0 += 1
        elif worst == 1:
            r1 -= 1
        elif worst == 2:
            c0 += 1
        else:
            c1 -= 1
    box[r0:r1, c0:c1] = True
    return box


def burn_label(presented: np.ndarray, field: np.ndarray, spec: ImageSpec, spacing_mm: float) -> None:
    """The reader's text label, dark print in the widest shutter's shadow (in place, 0..1 values), when
    ``spec.collimation_label`` and that shadow is at least 6 mm deep everywhere the label goes."""
    margins = collimation_margins_px(presented.shape, spec, spacing_mm)
    side = int(np.argmax(margins))
    depth = margins[side]
    if not spec.collimation_label or depth * spacing_mm < 6.0:
        return
    rng = np.random.default_rng([spec.texture_seed, 47])
    char_h = max(3, int(round(rng.uniform(2.0, 3.0) / spacing_mm)))
    lines = int(rng.integers(1, 4))
    height = min(lines * (char_h + max(1, char_h // 3)), int(0.7 * depth))
    length = int(round(rng.uniform(30.0, 70.0) / spacing_mm))
    rows, cols = presented.shape
    along = cols if side in (0, 1) else rows
    length = min(length, along // 3)
    if height < char_h or length < 4 * char_h:
        return
    start = int(rng.integers(along // 6, along - along // 6 - length))
    offset = int(round(0.15 * depth))
    # Character cells: each a block of ink with a random hole pattern, one blank column between.
    text = np.zeros((height, length), dtype=bool)
    char_w = max(2, int(round(0.6 * char_h)))
    for top in range(0, height - char_h + 1, char_h + max(1, char_h // 3)):
        for left in range(0, length - char_w + 1, char_w + 1):
            if rng.random() < 0.15:
                continue  # a space
            glyph = rng.random((char_h, char_w)) < 0.55
            text[top : top + char_h, left : left + char_w] = glyph
    if side in (2, 3):
        text = text.T
    if side == 0:
        r, c = offset, start
    elif side == 1:
        r, c = rows - offset - text.shape[0], start
    elif side == 2:
        r, c = start, offset
    else:
        r, c = start, cols - offset - text.shape[1]
    window = (slice(r, r + text.shape[0]), slice(c, c + text.shape[1]))
    if field[window].any():
        return  # the turned shutter leaves the label's place exposed: no label
    ink = np.float32(rng.uniform(0.05, 0.35))
    presented[window][text] = ink


def _beam_gain(shape: tuple[int, int], spec: ImageSpec) -> np.ndarray:
    """Relative fluence over the detector: heel effect, bilinear (stitched-panel) gain, vignetting and
    the aliased shadow of an anti-scatter grid; (rows, 1), (1, cols) or (rows, cols), float32."""
    rows, cols = shape
    v = (np.arange(rows, dtype=np.float32) / max(rows - 1, 1))[:, None]
    # Heel effect: the beam is weaker towards the anode side (along the long axis of the film).
    gain = 1.0 - np.float32(spec.heel_strength) * (v - 0.5)
    u = (np.arange(cols, dtype=np.float32) / max(cols - 1, 1))[None, :]
    tl, tr, bl, br = (np.float32(g) for g in spec.stitch_gains)
    if any(g != 1.0 for g in (tl, tr, bl, br)):
        gain = gain * ((tl + (tr - tl) * u) * (1.0 - v) + (bl + (br - bl) * u) * v)
    if spec.vignetting > 0:
        gain = gain * (1.0 - np.float32(spec.vignetting * 2.0) * ((u - 0.5) ** 2 + (v - 0.5) ** 2))
    if spec.grid_lines_per_cm > 0 and spec.grid_strength > 0:
        # lines/cm sampled every spacing: what is left is the alias below the detector's Nyquist frequency
        cycles = spec.grid_lines_per_cm / 10.0 * spec.spacing_mm
        alias = abs(cycles - round(cycles))
        n = rows if not spec.grid_vertical else cols
        phase = 2.0 * np.pi * alias * np.arange(n) + spec.grid_phase
        stripes = (1.0 - spec.grid_strength * 0.5 * (1.0 + np.cos(phase))).astype(np.float32)
        gain = gain * (stripes[None, :] if spec.grid_vertical else stripes[:, None])
    return gain.astype(np.float32)


def look_of(spec: ImageSpec) -> Look:
    """The presentation parameters of ``spec``."""
    return Look(
        fine_gain=spec.fine_gain,
        edge_gain=spec.edge_enhancement,
        detail_gain=spec.detail_gain,
        large_gain=spec.large_gain,
        range_compression=spec.range_compression,
        contrast_power=spec.contrast_power,
        tone_slope=spec.tone_slope,
        tone_offset=spec.tone_offset,
        tone_gamma=spec.tone_gamma,
        black_level=spec.black_level,
        white_level=spec.white_level,
        clip_point=spec.clip_point,
    )


def expose(
    line: np.ndarray,
    body: np.ndarray,
    metal: np.ndarray,
    spec: ImageSpec,
    spacing_mm: float,
    rng: np.random.Generator,
) -> Exposure:
    """Simulate the detector and the presentation processing for line integrals ``line``.

    Args:
        line: sum of mu * length per pixel (modified in place).
        body: where rays cross the patient (for the window).
        metal: metal pixels (excluded from the window so that bone keeps its contrast).
        spec: exposure, scatter, blur, heel, collimation, artefacts and presentation look of this image.
        spacing_mm: detector pixel spacing (mm) for physical blur and photon counts.
        rng: the case's random generator (noise).
    """
    shape = line.shape
    rows = shape[0]
    top, bottom, left, right = collimation_margins_px(shape, spec, spacing_mm)
    field = collimation_field(shape, spec, spacing_mm)
    np.minimum(line, 30.0, out=line)
    # Scatter: a broad haze proportional to the primary around each point (scatter-to-primary ratio
    # ~0.15-0.4 for a knee without a grid), spread over ~2 cm; it is all that reaches the film under metal.
    coarse = np.exp(-_downsample(line, 16))
    coarse *= _downsample(field.astype(np.float32), 16)
    scatter = _smooth_wide(coarse * np.float32(spec.scatter_fraction), 20.0 / spacing_mm, 16, shape)
    primary = np.exp(-line)
    if collimation_is_square(spec):
        primary[:top] *= 0.004  # collimator leakage
        primary[rows - bottom :] *= 0.004
        primary[:, :left] *= 0.004
        primary[:, shape[1] - right :] *= 0.004
    else:
        primary[~field] *= 0.004
    primary += scatter
    photons = np.float32(
        PHOTONS_OPEN_FIELD * spec.exposure_scale * (spacing_mm / 0.1) ** 2 / spec.noise_scale**2
    )
    counts = primary
    counts *= photons * _beam_gain(shape, spec)
    # Quantum noise (Poisson, as Gaussian) plus a little electronic noise, then the detector's blur.
    noise = np.sqrt(counts + np.float32(0.0004 * photons))
    noise *= gaussian_noise(rng, shape)
    counts += noise
    counts = _blur3(counts, spec.blur_px)
    np.maximum(counts, 0.3, out=counts)
    log_image = np.log(counts)
    np.subtract(np.float32(np.log(photons)), log_image, out=log_image)
    # Presentation processing (synth/processing.py) on the anatomy scaled to 0..1 (thin skin .. dense
    # bone). Metal, lead and the collimator shadow are holes the filters do not see; they are painted
    # back afterwards as a white plateau with sharp edges, above the brightest bone.
    grid = (body & field)[::3, ::3] & ~ndimage.binary_dilation((metal | ~field)[::3, ::3], iterations=2)
    values = log_image[::3, ::3][grid]
    if values.size < 100:
        values = log_image[::3, ::3].ravel()
    low_v, high_v = (float(v) for v in np.percentile(values, (1.0, 99.8)))
    ceiling = np.float32(high_v + 0.3)
    excess = log_image - ceiling
    holes = metal | ~field | (excess > 0)
    log_image -= np.float32(low_v)
    log_image *= np.float32(1.0 / max(high_v - low_v, 1e-3))
    look = look_of(spec)
    processed = local_contrast(log_image, holes, spacing_mm, look)
    values = processed[::3, ::3][grid]
    if values.size < 100:
        values = processed[::3, ::3].ravel()
    # Histogram analysis: soft tissue -> SOFT_ANCHOR, bone -> BONE_ANCHOR on the tone curve's axis.
    soft, bone, _ = histogram_anchors(values)
    lut_start, lut_stop, lut_size = -1.0, 2.0, 4096
    lut = tone_curve(look, lut_size, lut_start, lut_stop)
    per_unit = lut_size / (lut_stop - lut_start)
    index = processed
    index -= np.float32(soft)
    index *= np.float32(per_unit * (BONE_ANCHOR - SOFT_ANCHOR) / max(bone - soft, 1e-3))
    index += np.float32((SOFT_ANCHOR - lut_start) * per_unit)
    presented = np.take(lut, index.astype(np.intp), mode="clip")
    white = np.float32(look.white_level)
    # Dense cement, lead, steel and the collimator shadow go from the brightest bone towards white by
    # their excess over the bone; under the implant only scatter reaches the film (a level close to the
    # densest bone), so the components, known exactly, are painted as a flat plateau at full white.
    paint = np.clip(excess * np.float32(1.0 / 0.6), 0.0, 1.0, out=excess)
    paint *= (np.float32(1.0) - white) * np.float32(0.85)
    paint += white
    np.maximum(presented, paint, out=presented, where=holes)
    np.maximum(presented, np.float32(COLLIMATOR_LEVEL), out=presented, where=~field)  # shuttered
    burn_label(presented, field, spec, spacing_mm)
    presented[metal] = 1.0
    presented *= np.float32(STORED_MAX)
    stored = np.rint(presented).astype(np.uint16)
    lo_level = float(lut[int((SOFT_ANCHOR - 0.25 - lut_start) * per_unit)])
    hi_level = float(look.white_level)
    center = STORED_MAX * 0.5 * (lo_level + hi_level)
    width = STORED_MAX * (hi_level - lo_level) * 1.15
    return Exposure(stored, (center, width), field)
