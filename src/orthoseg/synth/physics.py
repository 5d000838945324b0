"""Materials, their linear attenuation coefficients, and the trabecular bone texture.

Coefficients are for the effective energy of a 55-70 kVp knee beam (~50-55 keV), in 1/mm, from NIST
XCOM mass attenuation coefficients times density (rounded; ICRU-44 tissues):

* soft tissue / muscle 0.020 (0.2/cm), adipose 0.018, marrow 0.019
* cortical bone 0.060 (0.6/cm); cancellous bone 0.026-0.038 depending on bone density
* PMMA bone cement with 10 % BaSO4 or 15 % ZrO2: 0.055-0.100 (sampled per case; between cortical bone
  and titanium)
* UHMW polyethylene 0.019 (radiolucent: the "joint space" of an arthroplasty)
* titanium alloy 0.35 (3.5/cm), cobalt-chrome 1.1 (11/cm), stainless steel 0.95, lead 5.7
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

MU_PER_MM: dict[str, float] = {
    "soft": 0.020,
    "fat": 0.018,
    "marrow": 0.019,
    "cortical": 0.060,
    "trabecular": 0.032,
    "polyethylene": 0.019,
    "titanium": 0.35,
    "cobalt_chrome": 1.10,
    "steel": 0.95,
    "lead": 5.7,
    "plastic": 0.022,
}

TEXTURE_TILE_PX = 512


@lru_cache(maxsize=32)
def trabecular_tile(seed: int = 7, period_px: float = 5.0, anisotropy: float = 2.4) -> np.ndarray:
    """A periodic (tileable) texture of trabecular bone in projection, zero mean, unit std, float32.

    Superimposed plates and rods project as fine streaks along the load direction (the bone axis,
    image rows) with a coarser mottle: ridged band-pass noise ``period_px`` apart, stretched along
    the rows by ``anisotropy``, plus a band twice as coarse. Made once per process and period.
    Calibrated by eye and by spectrum against the cancellous distal tibia of RG3_J2KR.dcm (real CR):
    fine streaks ~1-1.5 mm apart, oriented along the shaft.
    """
    rng = np.random.default_rng(seed)
    n = TEXTURE_TILE_PX
    fy = np.fft.fftfreq(n)[:, None]
    fx = np.fft.fftfreq(n)[None, :]
    radius = np.sqrt((fy * anisotropy) ** 2 + fx**2)

    def band(f0: float, width: float) -> np.ndarray:
        spectrum = np.fft.fft2(rng.standard_normal((n, n))) * np.exp(
            -0.5 * ((radius - f0) / (width * f0)) ** 2
        )
        out = np.fft.ifft2(spectrum).real
        return out / (out.std() + 1e-12)

    fine = 1.0 - np.abs(np.tanh(1.5 * band(1.0 / period_px, 0.35)))  # bright ridges: trabeculae
    coarse = band(0.5 / period_px, 0.5)
    texture = fine**3 + 0.3 * coarse
    texture = (texture - texture.mean()) / (texture.std() + 1e-12)
    return texture.astype(np.float32)


def texture_field(shape: tuple[int, int], rng: np.random.Generator, spacing_mm: float = 0.2) -> np.ndarray:
    """The trabecular texture over an image of ``shape``: a random shift and flip of the tiled tile.

    Trabeculae are ~1 mm apart whatever the pixel size, so the tile's period follows the spacing
    (quantised to 0.5 px so that a few tiles serve every image).
    """
    period_px = float(np.clip(np.round(1.0 / spacing_mm), 3.0, 8.0))
    tile = trabecular_tile(period_px=period_px)
    if rng.random() < 0.5:
        tile = tile[:, ::-1]
    if rng.random() < 0.5:
        tile = tile[::-1]
    r, c = (int(x) for x in rng.integers(0, TEXTURE_TILE_PX, 2))
    reps = (shape[0] // TEXTURE_TILE_PX + 2, shape[1] // TEXTURE_TILE_PX + 2)
    return np.tile(tile, reps)[r : r + shape[0], c : c + shape[1]]
