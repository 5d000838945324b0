"""Vendor-style presentation processing of a log (attenuation) image: multi-scale local contrast and a
film-like tone curve, randomised per image (domain randomisation of appearance).

Clinical DR/CR chains (Agfa MUSICA, Carestream EVP, Philips UNIQUE, Fuji MFP...) decompose the log image
into band-pass layers, pass each layer through a gain that is larger for small contrasts than for large
ones, damp the coarsest layer (latitude / range compression), and map the result through a sigmoid
characteristic curve. That is what turns a flat, grey raw image into the familiar look: dark soft tissue,
bright bone, crisp cortices, the limb's overall thickness flattened.

Here the decomposition is a Laplacian pyramid (2x2 block means down, bilinear up, exact reconstruction)
with push-pull hole filling: pixels marked as holes (metal, lead, collimator shadow) are replaced at
every level by their coarser neighbourhood, so the bands never see them (no processing halo around
implants) and the caller paints them back as a flat white plateau with sharp edges.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from orthoseg.synth.render import upsample


@dataclass(frozen=True)
class Look:
    """Presentation parameters of one image (from ``ImageSpec``).

    Attributes:
        fine_gain: gain of the finest bands (< ~0.5 mm: noise grain, trabecular texture).
        edge_gain: gain of the ~0.6-2 mm bands (edges, cortices).
        detail_gain: gain of the ~2-8 mm bands (bone-sized structures, condyles).
        large_gain: gain of the ~8-30 mm bands.
        range_compression: how much of the coarsest layer (limb thickness, > ~3 cm) is removed (0-1).
        contrast_power: MUSICA-like exponent (< 1 lifts small contrasts more than large ones).
        tone_slope: slope of the sigmoid characteristic curve over the anatomy range.
        tone_offset: where its midpoint sits in the anatomy range (0 = thinnest, 1 = densest).
        tone_gamma: power applied after the sigmoid (> 1 darkens the soft tissue).
        black_level: presentation value of the raw beam (fraction of full scale).
        white_level: presentation value of the densest bone (fraction; metal is above it).
        clip_point: anatomy level above which the bright end is clipped flat (>= 1: no clipping).
    """

    fine_gain: float = 1.0
    edge_gain: float = 2.0
    detail_gain: float = 2.0
    large_gain: float = 1.3
    range_compression: float = 0.7
    contrast_power: float = 0.7
    tone_slope: float = 5.0
    tone_offset: float = 0.55
    tone_gamma: float = 1.2
    black_level: float = 0.01
    white_level: float = 0.93
    clip_point: float = 1.2


def _down2(image: np.ndarray) -> np.ndarray:
    """2x2 block means (edge-padded to even size)."""
    rows, cols = image.shape
    if rows % 2 or cols % 2:
        image = np.pad(image, ((0, rows % 2), (0, cols % 2)), mode="edge")
    out = image[0::2, 0::2] + image[1::2, 0::2]
    out += image[0::2, 1::2]
    out += image[1::2, 1::2]
    out *= np.float32(0.25)
    return out


def levels_for(spacing_mm: float) -> int:
    """Pyramid depth whose coarsest layer holds structures of ~3 cm and up (the limb's thickness)."""
    return int(np.clip(round(math.log2(40.0 / max(spacing_mm, 1e-3))), 3, 9))


def band_gain(scale_mm: float, look: Look) -> float:
    """Gain of the band holding structures of ``scale_mm`` (piecewise linear in log2 of the scale)."""
    anchors = (
        (0.35, look.fine_gain),
        (1.2, look.edge_gain),
        (4.0, look.detail_gain),
        (16.0, look.large_gain),
    )
    x = math.log2(max(scale_mm, 1e-3))
    xs = [math.log2(a) for a, _ in anchors]
    return float(np.interp(x, xs, [g for _, g in anchors]))


def local_contrast(image: np.ndarray, holes: np.ndarray | None, spacing_mm: float, look: Look) -> np.ndarray:
    """Multi-scale processing of ``image`` (anatomy normalised to ~0..1, float32).

    Each band-pass layer L goes through ``gain * L * (knee + power * |L|) / (knee + |L|)``: the full gain
    for faint detail, ``power`` times less for strong edges (skin line, joint margins), which therefore
    do not ring. The coarsest layer is scaled by ``1 - range_compression`` around its median. The finest
    layer is linear (it is mostly quantum noise). Values inside ``holes`` are meaningless on return.
    """
    levels = levels_for(spacing_mm)
    weight = None if holes is None or not holes.any() else (~holes).astype(np.float32)
    gauss: list[np.ndarray] = [image]
    weights: list[np.ndarray | None] = [weight]
    for _ in range(levels):
        g, w = gauss[-1], weights[-1]
        if w is None:
            gauss.append(_down2(g))
            weights.append(None)
            continue
        w_next = _down2(w)
        g_next = _down2(g * w)
        g_next /= np.maximum(w_next, np.float32(1e-4))
        gauss.append(g_next)
        weights.append(w_next)
    top, top_w = gauss[-1], weights[-1]
    if top_w is not None:
        valid = top_w > 0.05
        fill = float(np.average(top[valid], weights=top_w[valid])) if valid.any() else float(top.mean())
        top = np.where(valid, top, np.float32(fill)).astype(np.float32)
    base = np.float32(np.median(top))
    recon = (top - base) * np.float32(1.0 - look.range_compression) + base
    filled = top
    power = np.float32(look.contrast_power)
    for k in range(levels - 1, 0, -1):
        shape = gauss[k].shape
        up = upsample(filled, 2, shape)
        g, w = gauss[k], weights[k]
        if w is not None:
            # push-pull: where the level has little support, take the coarser neighbourhood instead
            g = g * w + up * (1.0 - w)
        band = g - up
        filled = g
        gain = np.float32(band_gain(spacing_mm * 2**k, look))
        knee = np.float32(0.03 * math.sqrt(2**k))  # stronger contrasts at coarser scales
        magnitude = np.abs(band)
        compress = magnitude * power
        compress += knee
        magnitude += knee
        compress /= magnitude
        compress *= gain
        band *= compress
        recon = upsample(recon, 2, shape)
        recon += band
    # Finest layer, linear: recon0 = up(recon1) + gain0 * (image - up(filled1)), with one upsampling.
    gain0 = np.float32(band_gain(spacing_mm, look))
    recon -= gain0 * filled
    out = upsample(recon, 2, image.shape)
    out += gain0 * image
    return out


def tone_curve(look: Look, size: int = 4096, start: float = -1.0, stop: float = 2.0) -> np.ndarray:
    """Characteristic curve as a look-up table (fractions of full scale) over anatomy levels [start, stop).

    A sigmoid of slope ``tone_slope`` centred at ``tone_offset``, normalised so that anatomy -0.15 -> 0 and
    1 -> ~1, raised to ``tone_gamma``, mapped to [black_level, white_level]; below -0.15 it is black (raw
    beam), above ``clip_point`` it is flat (saturated bright end).
    """
    x = np.linspace(start, stop, size, endpoint=False)
    x = np.minimum(x, look.clip_point)
    k, c = look.tone_slope, look.tone_offset
    foot = -0.15  # the thinnest skin (anatomy 0) stays just above black, the raw beam goes to black

    def sig(v: np.ndarray | float) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-k * (np.asarray(v, dtype=float) - c)))

    s = np.clip((sig(x) - sig(foot)) / (sig(1.0) - sig(foot)), 0.0, None) ** look.tone_gamma
    # above ~1: a soft shoulder (unless clipped flat earlier by clip_point)
    s = np.where(s > 0.9, 0.9 + 0.1 * np.tanh((s - 0.9) / 0.1), s)
    y = look.black_level + (look.white_level - look.black_level) * s
    return np.clip(y, 0.0, 1.0).astype(np.float32)


def histogram_anchors(values: np.ndarray) -> tuple[float, float, float]:
    """Soft-tissue and bone levels of the anatomy's histogram, and its dense end (p99.8).

    Otsu's threshold splits the values (thin skin .. dense bone) into two classes; their medians are
    the anchors the tone curve is placed on, as the histogram analysis of a DR/CR console does
    ("exposure recognition"), so that soft tissue and bone land at consistent levels whatever the
    exposure, thickness and processing.
    """
    low, high = np.percentile(values, (0.5, 99.8))
    counts, edges = np.histogram(np.clip(values, low, high), bins=128, range=(low, high))
    centres = 0.5 * (edges[1:] + edges[:-1])
    weight = np.cumsum(counts).astype(float)
    mean = np.cumsum(counts * centres)
    total, grand = weight[-1], mean[-1]
    between = (grand * weight - total * mean) ** 2 / np.maximum(weight * (total - weight), 1e-9)
    threshold = centres[int(np.argmax(between[:-1]))]
    soft = float(np.median(values[values <= threshold]))
    bone = float(np.median(values[values > threshold]))
    bone = max(bone, soft + 0.15 * float(high - low))
    return soft, bone, float(high)
