"""Custom MONAI dictionary transforms for radiograph augmentation: geometry, framing, markers, processing.

Imported only by ``orthoseg.augment.build_train_transforms``, so it may import torch and MONAI at the top.
Every transform works on ``{"image": (1, H, W) float32 tensor, "label": (C, H, W) float32 tensor}`` and
draws its randomness from MONAI's ``self.R`` so that ``Compose.set_random_state`` makes it reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import MapTransform, RandomizableTransform, Transform

IMAGE = "image"
LABEL = "label"


def as_float_tensor(value: Any, copy: bool = False) -> torch.Tensor:
    """A plain (non-Meta) float32 CPU tensor; with ``copy`` it never shares memory with ``value``."""
    if isinstance(value, torch.Tensor):
        tensor = value.as_tensor() if hasattr(value, "as_tensor") else value
        return tensor.detach().to(device="cpu", dtype=torch.float32, copy=copy)
    return torch.tensor(np.asarray(value), dtype=torch.float32)


def film_box(image: torch.Tensor) -> tuple[int, int, int, int] | None:
    """(row0, row1, col0, col1), end-exclusive, of the exposed film on a zero-padded canvas; None if blank."""
    exposed = image.reshape(-1, *image.shape[-2:]).amax(dim=0) > 0
    rows = torch.nonzero(exposed.any(dim=1)).flatten()
    cols = torch.nonzero(exposed.any(dim=0)).flatten()
    if rows.numel() == 0:
        return None
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _gaussian_kernel(sigma: float) -> torch.Tensor:
    radius = max(1, int(math.ceil(3.0 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


def blur_large(image: torch.Tensor, sigma_px: float) -> torch.Tensor:
    """Gaussian blur of (N, 1, H, W) at a large sigma, done on a coarse copy (cost independent of sigma)."""
    height, width = image.shape[-2:]
    sigma_px = max(float(sigma_px), 0.3)
    factor = max(1, int(sigma_px / 1.5))
    small_size = (max(1, math.ceil(height / factor)), max(1, math.ceil(width / factor)))
    small = F.interpolate(image, size=small_size, mode="area") if factor > 1 else image
    kernel = _gaussian_kernel(sigma_px / factor)
    pad = kernel.numel() // 2
    mode = "reflect" if min(small.shape[-2:]) > pad else "replicate"
    small = F.conv2d(F.pad(small, (pad, pad, 0, 0), mode=mode), kernel.view(1, 1, 1, -1))
    small = F.conv2d(F.pad(small, (0, 0, pad, pad), mode=mode), kernel.view(1, 1, -1, 1))
    if factor == 1:
        return small
    return F.interpolate(small, size=(height, width), mode="bilinear", align_corners=False)


class ToFloatTensord(MapTransform):
    """Copy image and label into plain float32 tensors; labels are binarised (any value > 0.5 is inside)."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        d[IMAGE] = as_float_tensor(d[IMAGE], copy=True)
        label = d[LABEL]
        label = label.as_tensor() if hasattr(label, "as_tensor") else torch.as_tensor(np.asarray(label))
        d[LABEL] = (label.detach().cpu() > 0.5).to(torch.float32)
        return d


class FinalizeAugmentd(Transform):
    """Hand plain tensors to the trainer: image clipped to [0, 1] (NaN-free), label strictly {0, 1}."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        image = as_float_tensor(d[IMAGE])
        d[IMAGE] = torch.nan_to_num(image, nan=0.0, posinf=1.0, neginf=0.0).clamp_(0.0, 1.0)
        d[LABEL] = (as_float_tensor(d[LABEL]) > 0.5).to(torch.float32)
        return d


class RandFlipColumnsd(RandomizableTransform, MapTransform):
    """Left-right mirror of image and label together (the column axis), never upside down.

    Equivalent to MONAI's ``RandFlipd(spatial_axis=1)`` without its metadata bookkeeping, which costs
    ~1 ms per call whether or not it flips.
    """

    def __init__(self, prob: float) -> None:
        MapTransform.__init__(self, (IMAGE, LABEL))
        RandomizableTransform.__init__(self, prob)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize(None)
        if self._do_transform:
            for key in self.key_iterator(d):
                d[key] = torch.flip(as_float_tensor(d[key]), dims=(-1,))
        return d


class RandWarpd(RandomizableTransform, MapTransform):
    """Zoom-crop, isotropic affine and coarse-grid elastic deformation, composed into one resampling.

    One grid serves image (bilinear) and label (nearest), so they stay aligned, interpolation blur is paid
    once, and the cost is one ``grid_sample`` (~2 ms at 256², against ~10 ms for MONAI's ``RandAffined``
    and ~18 ms for ``Rand2DElasticd``). Magnification is isotropic because a radiograph's geometric
    magnification is; shear stands in for projection obliquity. Outside the film is zero, as the canvas
    padding is.

    Args:
        zoom_probability: chance of showing a random off-centre window magnified ``zoom_range`` times, so
            partial knees appear.
        affine_probability: chance of a rotation / scale / shear / translation.
        rotate_deg: rotation is uniform in [-rotate_deg, rotate_deg].
        scale_range: isotropic magnification (> 1 enlarges the anatomy).
        shear: shear factors uniform in [-shear, shear] per axis.
        translate_px: translation uniform in [-translate_px, translate_px] canvas pixels per axis.
        elastic_probability: chance of a smooth random displacement field.
        elastic_spacing_px: distance between its control points.
        elastic_magnitude_px: standard deviation of control-point displacements is drawn in this range.
    """

    def __init__(
        self,
        zoom_probability: float,
        zoom_range: tuple[float, float],
        affine_probability: float,
        rotate_deg: float,
        scale_range: tuple[float, float],
        shear: float,
        translate_px: float,
        elastic_probability: float,
        elastic_spacing_px: int,
        elastic_magnitude_px: tuple[float, float],
    ) -> None:
        MapTransform.__init__(self, (IMAGE, LABEL))
        RandomizableTransform.__init__(self, prob=1.0)
        self.zoom_probability = zoom_probability
        self.zoom_range = zoom_range
        self.affine_probability = affine_probability
        self.rotate_deg = rotate_deg
        self.scale_range = scale_range
        self.shear = shear
        self.translate_px = translate_px
        self.elastic_probability = elastic_probability
        self.elastic_spacing_px = elastic_spacing_px
        self.elastic_magnitude_px = elastic_magnitude_px
        self._matrix = np.eye(2)
        self._offset = np.zeros(2)
        self._displacement: torch.Tensor | None = None
        self._base: dict[tuple[int, int], torch.Tensor] = {}

    def randomize(self, data: tuple[int, int]) -> None:
        """Draw the warp for an output of ``data`` = (height, width) pixels (coordinates are (x, y))."""
        height, width = data
        matrix, offset = np.eye(2), np.zeros(2)
        if self.R.rand() < self.zoom_probability:
            zoom = self.R.uniform(*self.zoom_range)
            room = 0.5 * np.array([width, height]) * (1.0 - 1.0 / zoom)
            matrix = matrix / zoom
            offset = self.R.uniform(-room, room)
        if self.R.rand() < self.affine_probability:
            angle = math.radians(self.R.uniform(-self.rotate_deg, self.rotate_deg))
            scale = self.R.uniform(*self.scale_range)
            shear_x, shear_y = self.R.uniform(-self.shear, self.shear, size=2)
            rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
            shearing = np.array([[1.0, shear_x], [shear_y, 1.0]])
            affine = rotation @ shearing / scale
            translation = self.R.uniform(-self.translate_px, self.translate_px, size=2)
            matrix, offset = affine @ matrix, affine @ offset + translation
        self._matrix, self._offset = matrix, offset
        self._displacement = None
        if self.R.rand() < self.elastic_probability:
            grid = (
                math.ceil(height / self.elastic_spacing_px) + 1,
                math.ceil(width / self.elastic_spacing_px) + 1,
            )
            magnitude = self.R.uniform(*self.elastic_magnitude_px)
            coarse = torch.from_numpy(self.R.standard_normal((1, 2, *grid)).astype(np.float32)) * magnitude
            self._displacement = F.interpolate(
                coarse, size=(height, width), mode="bicubic", align_corners=True
            )

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        image, label = as_float_tensor(d[IMAGE]), as_float_tensor(d[LABEL])
        height, width = image.shape[-2:]
        self.randomize((height, width))
        if np.allclose(self._matrix, np.eye(2)) and not self._offset.any() and self._displacement is None:
            d[IMAGE], d[LABEL] = image, label
            return d
        # Output pixel (x, y) relative to the canvas centre samples the input at matrix @ (x, y) + offset.
        base = self._base.get((height, width))
        if base is None:
            ys = torch.arange(height, dtype=torch.float32) - (height - 1) / 2
            xs = torch.arange(width, dtype=torch.float32) - (width - 1) / 2
            base = self._base[(height, width)] = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)
        matrix = torch.from_numpy(self._matrix.astype(np.float32))
        coords = base @ matrix.T + torch.from_numpy(self._offset.astype(np.float32))
        if self._displacement is not None:
            coords = coords + self._displacement[0].permute(1, 2, 0)
        grid = (2.0 * coords / torch.tensor([width, height], dtype=torch.float32))[None]
        d[IMAGE] = F.grid_sample(
            image[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False
        )[0]
        d[LABEL] = F.grid_sample(
            label[None], grid, mode="nearest", padding_mode="zeros", align_corners=False
        )[0]
        return d


class RandCollimationd(RandomizableTransform, MapTransform):
    """Straight, tilted film edges inside the exposed film: collimator shutters or a cropped film.

    Collimators are seldom square to the detector: with ``parallel_probability`` the framed edges are the
    shutters of one collimator turned by a single angle within +- ``tilt_deg`` (opposite edges stay
    parallel), otherwise each edge is tilted on its own within +- ``tilt_deg``; with
    ``corner_probability`` a corner is cut off as well, by a line at 30-60 degrees reaching 5-25 % of the
    film's shorter side in from the corner.

    Outside the edges the image becomes white (an unexposed collimated border, as on many CR films) or
    black (the film was cropped). Half the white borders are not flat: real shutters leave a penumbra
    and scatter that grade the border's brightness with the distance from the field's edge, and the
    plate's own noise shows on it. The label is set to 0 there in both cases: under a white
    border the anatomy is as invisible as on a cropped film, and a mask over a featureless constant would
    teach the network to invent anatomy. Labels are therefore only ever removed, never created.

    Args:
        prob: chance of framing a sample.
        depth_fraction: each framed edge moves inward by this fraction of the film's extent.
        tilt_deg: each edge (or the whole collimator) is tilted uniformly within +- this angle.
        white_probability: chance the border is white (collimation) rather than black (crop).
        parallel_probability: chance the edges share one tilt (a turned collimator).
        corner_probability: chance of an oblique corner cut besides the edges.
    """

    def __init__(
        self,
        prob: float,
        depth_fraction: tuple[float, float],
        tilt_deg: float,
        white_probability: float,
        parallel_probability: float = 0.5,
        corner_probability: float = 0.15,
    ) -> None:
        MapTransform.__init__(self, (IMAGE, LABEL))
        RandomizableTransform.__init__(self, prob)
        self.depth_fraction = depth_fraction
        self.tilt_deg = tilt_deg
        self.white_probability = white_probability
        self.parallel_probability = parallel_probability
        self.corner_probability = corner_probability

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize(None)
        if not self._do_transform:
            return d
        image, label = as_float_tensor(d[IMAGE]), as_float_tensor(d[LABEL])
        box = film_box(image)
        sides = self.R.rand(4) < 0.5
        sides[self.R.randint(4)] = True
        depths = self.R.uniform(*self.depth_fraction, size=4)
        tilts = np.radians(self.R.uniform(-self.tilt_deg, self.tilt_deg, size=4))
        white = self.R.rand() < self.white_probability
        value = self.R.uniform(0.75, 1.0) if white else self.R.uniform(0.0, 0.05)
        if self.R.rand() < self.parallel_probability:
            tilts[:] = tilts[0]  # one collimator, turned as a whole
        corner = int(self.R.randint(4)) if self.R.rand() < self.corner_probability else -1
        corner_angle = math.radians(self.R.uniform(30.0, 60.0))
        corner_depth = self.R.uniform(0.05, 0.25)
        if box is None:
            return d
        r0, r1, c0, c1 = box
        ys = torch.arange(image.shape[-2], dtype=torch.float32)[:, None]
        xs = torch.arange(image.shape[-1], dtype=torch.float32)[None, :]
        inside_film = (ys >= r0) & (ys < r1) & (xs >= c0) & (xs < c1)
        centre_x, centre_y = (c0 + c1 - 1) / 2, (r0 + r1 - 1) / 2
        # Inward normals (x, y) and edge anchor points of the top, bottom, left and right film edges.
        normals = ((0.0, 1.0), (0.0, -1.0), (1.0, 0.0), (-1.0, 0.0))
        extents = (r1 - r0, r1 - r0, c1 - c0, c1 - c0)
        anchors = ((centre_x, r0), (centre_x, r1 - 1), (c0, centre_y), (c1 - 1, centre_y))
        # Each shutter edge as (anchor x, anchor y, inward normal x, y, the film's extent across it).
        planes: list[tuple[float, float, float, float, float]] = []
        for side in np.flatnonzero(sides):
            nx, ny = normals[side]
            cos, sin = math.cos(tilts[side]), math.sin(tilts[side])
            ax = anchors[side][0] + nx * depths[side] * extents[side]
            ay = anchors[side][1] + ny * depths[side] * extents[side]
            planes.append((ax, ay, cos * nx - sin * ny, sin * nx + cos * ny, extents[side]))
        if corner >= 0:
            sx = 1.0 if corner in (0, 2) else -1.0  # inward from a left (+x) or right (-x) corner
            sy = 1.0 if corner in (0, 1) else -1.0  # inward from a top (+y) or bottom (-y) corner
            nx, ny = sx * math.cos(corner_angle), sy * math.sin(corner_angle)
            reach = corner_depth * min(r1 - r0, c1 - c0)
            ax = (c0 if sx > 0 else c1 - 1) + nx * reach
            ay = (r0 if sy > 0 else r1 - 1) + ny * reach
            planes.append((ax, ay, nx, ny, min(r1 - r0, c1 - c0)))
        outside = torch.zeros_like(inside_film)
        for ax, ay, nx, ny, _ in planes:
            outside |= (xs - ax) * nx + (ys - ay) * ny < 0
        outside &= inside_film
        fill = torch.full_like(image, float(value))
        if white and self.R.rand() < 0.5:
            # Distance into the border from the nearest framed edge, as a fraction of the film's extent.
            depth = torch.zeros_like(fill[0])
            for ax, ay, nx, ny, extent in planes:
                depth = torch.maximum(depth, -((xs - ax) * nx + (ys - ay) * ny) / max(extent, 1))
            slope = self.R.uniform(-0.8, 0.8)
            noise = torch.from_numpy(self.R.standard_normal(tuple(fill.shape)).astype(np.float32))
            fill = (fill + slope * depth + noise * self.R.uniform(0.0, 0.03)).clamp(0.5, 1.0)
        d[IMAGE] = torch.where(outside, fill, image)
        d[LABEL] = label.masked_fill(outside, 0.0)
        return d


_MARKER_WORDS = ("L", "R", "L", "R", "AP", "PA", "LAT", "STANDING", "WB", "SUPINE", "LEFT", "RIGHT", "30cm")


class RandTextMarkerd(RandomizableTransform, MapTransform):
    """Burned-in annotations and lead markers ("L", "R", "AP", "STANDING", digits, rulers) over the image.

    Only the image changes: the anatomy is still there underneath, and the network must learn to segment
    through the occlusion.

    Args:
        prob: chance of adding markers to a sample.
        max_count: 1 to ``max_count`` markers are drawn.
        height_fraction: letter height as a fraction of the canvas height.
    """

    def __init__(self, prob: float, max_count: int, height_fraction: tuple[float, float]) -> None:
        MapTransform.__init__(self, (IMAGE,))
        RandomizableTransform.__init__(self, prob)
        self.max_count = max_count
        self.height_fraction = height_fraction
        self._font: Any = None

    def _text_alpha(self, text: str) -> torch.Tensor:
        from PIL import Image, ImageDraw, ImageFont

        if self._font is None:
            self._font = ImageFont.load_default()
        left, top, right, bottom = self._font.getbbox(text)
        canvas = Image.new("L", (right - left + 2, bottom - top + 2), 0)
        ImageDraw.Draw(canvas).text((1 - left, 1 - top), text, fill=255, font=self._font)
        return torch.from_numpy(np.asarray(canvas, dtype=np.float32) / 255.0)

    def _ruler_alpha(self, length: int, width: int) -> torch.Tensor:
        alpha = torch.zeros(width, length)
        edge = max(1, width // 8)
        alpha[:edge], alpha[-edge:] = 1.0, 1.0
        step = max(3, length // 20)
        for number, x in enumerate(range(0, length, step)):
            alpha[: width if number % 5 == 0 else width // 2, x : x + edge] = 1.0
        return alpha

    def _marker(self, height_px: int) -> tuple[torch.Tensor, float | None]:
        """One marker's alpha mask and, for a burned-in annotation, the value of the box behind it."""
        kind = self.R.rand()
        if kind < 0.15:
            length = int(height_px * self.R.uniform(4, 12))
            alpha = self._ruler_alpha(length, max(3, height_px // 2))
            return (alpha.T if self.R.rand() < 0.5 else alpha), None
        if kind < 0.25:
            return torch.ones(height_px, int(height_px * self.R.uniform(0.6, 2.0))), None
        if self.R.rand() < 0.3:
            text = str(self.R.randint(1, 10 ** self.R.randint(1, 5)))
        else:
            text = _MARKER_WORDS[self.R.randint(len(_MARKER_WORDS))]
        small = self._text_alpha(text)
        width_px = max(1, round(small.shape[1] * height_px / small.shape[0]))
        alpha = F.interpolate(small[None, None], size=(height_px, width_px), mode="bilinear")[0, 0]
        alpha = alpha.clamp(0.0, 1.0)
        if self.R.rand() < 0.5:  # bolder strokes, as lead letters are
            alpha = F.max_pool2d(alpha[None, None], 3, stride=1, padding=1)[0, 0]
        box_value = self.R.uniform(0.0, 0.1) if self.R.rand() < 0.3 else None
        return alpha, box_value

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize(None)
        if not self._do_transform:
            return d
        image = as_float_tensor(d[IMAGE], copy=True)
        height, width = image.shape[-2:]
        r0, r1, c0, c1 = film_box(image) or (0, height, 0, width)
        for _ in range(self.R.randint(1, self.max_count + 1)):
            letter_px = max(4, round(height * self.R.uniform(*self.height_fraction)))
            alpha, box_value = self._marker(letter_px)
            alpha = alpha[: height - 2, : width - 2]
            rows, cols = alpha.shape
            top = self.R.randint(min(r0, height - rows), max(min(r0, height - rows), r1 - rows) + 1)
            left = self.R.randint(min(c0, width - cols), max(min(c0, width - cols), c1 - cols) + 1)
            patch = image[:, top : top + rows, left : left + cols]
            if box_value is not None:
                patch.fill_(box_value)
            value = self.R.uniform(0.85, 1.0)
            patch.mul_(1.0 - alpha).add_(value * alpha)
        d[IMAGE] = image
        return d


class RandLocalContrastd(RandomizableTransform, MapTransform):
    """Multi-scale unsharp masking, the strong local-contrast processing of clinical DR/CR films.

    ``image + k * (image - blur(image, sigma))`` at one or two large sigmas, the local mean taken over the
    exposed film only (normalised convolution), so the canvas padding neither darkens the film edge nor
    changes; the result is re-windowed to its 0.5-99.5 % film percentiles.

    Args:
        prob: chance of processing a sample.
        sigma_fraction: blur sigma as a fraction of the canvas side.
        strength_range: gain ``k`` of each scale.
    """

    def __init__(self, prob: float, sigma_fraction: tuple[float, float], strength_range: tuple[float, float]):
        MapTransform.__init__(self, (IMAGE,))
        RandomizableTransform.__init__(self, prob)
        self.sigma_fraction = sigma_fraction
        self.strength_range = strength_range

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize(None)
        if not self._do_transform:
            return d
        scales = 1 + int(self.R.rand() < 0.5)
        sigmas = self.R.uniform(*self.sigma_fraction, size=scales)
        gains = self.R.uniform(*self.strength_range, size=scales)
        image = as_float_tensor(d[IMAGE])
        film = (image > 0).to(torch.float32)
        step = max(1, int(math.sqrt(image.numel() / 4096)))
        if film[..., ::step, ::step].sum() < 16:
            return d
        side = max(image.shape[-2:])
        processed = image.clone()
        stacked = torch.stack((image * film, film))
        for sigma, gain in zip(sigmas, gains, strict=True):
            sums, weights = blur_large(stacked, float(sigma) * side)
            processed += float(gain) * (image - sums / weights.clamp_min(1e-3))
        sample = processed[..., ::step, ::step][film[..., ::step, ::step] > 0]
        low, high = torch.quantile(sample, torch.tensor([0.005, 0.995])).tolist()
        if high - low > 1e-6:
            processed = ((processed - low) / (high - low)).clamp_(0.0, 1.0)
        d[IMAGE] = processed * film
        return d


class RandRewindowd(RandomizableTransform, MapTransform):
    """A different display window: ``(image - low) / (high - low)``, clipped to [0, 1].

    A low above 0 crushes the soft tissue to black, a high below 1 saturates bone and metal, a high above
    1 gives a flat, under-exposed look; zero padding stays zero for ``low >= 0``.

    Args:
        prob: chance of re-windowing a sample.
        low_range: window lower bound, in image units.
        high_range: window upper bound, in image units.
    """

    def __init__(self, prob: float, low_range: tuple[float, float], high_range: tuple[float, float]) -> None:
        MapTransform.__init__(self, (IMAGE,))
        RandomizableTransform.__init__(self, prob)
        self.low_range = low_range
        self.high_range = high_range

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize(None)
        if not self._do_transform:
            return d
        low, high = self.R.uniform(*self.low_range), self.R.uniform(*self.high_range)
        image = as_float_tensor(d[IMAGE])
        d[IMAGE] = ((image - low) / max(high - low, 1e-3)).clamp_(0.0, 1.0)
        return d


class RandSignalNoised(RandomizableTransform, MapTransform):
    """Quantum noise: fewer photons reach the detector behind dense tissue, so bright pixels are noisier.

    The standard deviation is ``std * exp(2 * (image - 1))``: ``std`` on metal, ~14 % of it in air.

    Args:
        prob: chance of adding noise to a sample.
        std_max: ``std`` is uniform in [0, std_max], in image units.
    """

    def __init__(self, prob: float, std_max: float) -> None:
        MapTransform.__init__(self, (IMAGE,))
        RandomizableTransform.__init__(self, prob)
        self.std_max = std_max

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize(None)
        if not self._do_transform:
            return d
        std = self.R.uniform(0.0, self.std_max)
        generator = torch.Generator().manual_seed(int(self.R.randint(2**31 - 1)))
        image = as_float_tensor(d[IMAGE])
        noise = torch.randn(image.shape, generator=generator)
        d[IMAGE] = image + noise * (std * torch.exp(2.0 * (image.clamp(0.0, 1.0) - 1.0)))
        return d
