"""Training augmentation: domain randomisation so models trained on simulated films work on real ones.

Geometry is randomised moderately (a knee is always upright: no vertical flips, rotations of a few tens of
degrees at most); appearance is randomised hard, in the spirit of SynthSeg and SyntheX: vendor processing
(local contrast), display windows, gamma, histogram curves, blur, sharpening, noise, bias fields,
collimation, cropping and burned-in markers. MONAI and torch are imported only when transforms are built,
so ``orthoseg.settings`` can import ``AugmentConfig`` cheaply.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    PositiveFloat,
    field_validator,
    model_validator,
)

if TYPE_CHECKING:
    import torch
    from monai.transforms import Compose

logger = logging.getLogger(__name__)

Probability = Annotated[float, Field(ge=0.0, le=1.0)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


class AugmentConfig(BaseModel):
    """Which augmentations run, how often (probabilities per sample) and how strongly.

    Pixel quantities refer to the canvas (256 px at 1 mm/px by default); fractions are of the canvas side
    unless stated otherwise. Each ``*_probability`` of 0 removes that transform.

    Attributes:
        enabled: False leaves samples unchanged (only converted to float32 tensors).
        zoom_crop_probability: show a random off-centre window magnified ``zoom_crop_range`` times, so
            partial knees are seen.
        zoom_crop_range: magnification of the zoom-crop.
        affine_probability: rotate, scale, shear and translate.
        rotate_deg: rotation limit in degrees (either direction).
        scale_range: isotropic magnification of the anatomy.
        shear: shear factor limit per axis (projection obliquity).
        translate_px: translation limit per axis, canvas pixels.
        elastic_probability: smooth random deformation (soft-tissue and positioning variety).
        elastic_spacing_px: control-point spacing of the deformation, canvas pixels.
        elastic_magnitude_px: range of the control-point displacement standard deviation, canvas pixels.
        flip_probability: left-right mirror (a right knee becomes a left one; labels are not side-specific).
        collimation_probability: straight, slightly tilted film edges; outside them the film is white
            (collimated) or black (cropped) and the labels are removed.
        collimation_depth_fraction: how far each edge cuts into the film, fraction of the film's extent.
        collimation_tilt_deg: tilt limit of each edge.
        collimation_white_probability: chance the border is white rather than black.
        collimation_parallel_probability: chance all edges share one tilt (a turned collimator, as on
            real films) rather than each edge its own.
        collimation_corner_probability: chance of an extra oblique cut across one corner.
        text_marker_probability: burn in letters ("L", "R", "AP", "STANDING"), digits, rulers or boxes.
        text_marker_max_count: at most this many markers per sample.
        text_marker_height_fraction: letter height, fraction of the canvas height.
        bias_field_probability: smooth multiplicative intensity field (heel effect, scatter, detector gain).
        bias_field_coefficient_max: limit of its Legendre coefficients (log-intensity units).
        local_contrast_probability: multi-scale unsharp masking as clinical DR/CR processing applies.
        local_contrast_sigma_fraction: sigma of its one or two scales, fraction of the canvas side.
        local_contrast_strength_range: gain of each scale.
        gamma_probability: gamma curve.
        gamma_range: gamma exponent (< 1 brightens).
        window_probability: a different display window, then clipped to [0, 1].
        window_low_range: window lower bound, image units.
        window_high_range: window upper bound, image units (above 1 flattens the image; synthetic bone
            sits at about 0.5-0.8 and metal at 1.0 on the canvas).
        histogram_shift_probability: random monotone intensity curve.
        histogram_control_points: number of its control points (at least 3).
        blur_probability: Gaussian blur (detector unsharpness, motion).
        blur_sigma_px: blur sigma range, canvas pixels.
        sharpen_probability: edge enhancement.
        sharpen_alpha_range: edge-enhancement gain.
        noise_probability: additive Gaussian noise (electronic noise).
        noise_std_max: its standard deviation is uniform in [0, noise_std_max], image units.
        signal_noise_probability: brightness-dependent quantum noise.
        signal_noise_std_max: its standard deviation on the brightest pixels is at most this, image units.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    # Geometry: image and label together.
    zoom_crop_probability: Probability = 0.15
    zoom_crop_range: tuple[Annotated[float, Field(ge=1.0)], Annotated[float, Field(ge=1.0)]] = (1.2, 2.0)
    affine_probability: Probability = 0.8
    rotate_deg: float = Field(default=15.0, ge=0.0, le=180.0)
    scale_range: tuple[PositiveFloat, PositiveFloat] = (0.8, 1.2)
    shear: float = Field(default=0.08, ge=0.0, le=1.0)
    translate_px: NonNegativeFloat = 16.0
    elastic_probability: Probability = 0.15
    elastic_spacing_px: int = Field(default=32, ge=4)
    elastic_magnitude_px: tuple[NonNegativeFloat, NonNegativeFloat] = (0.5, 2.0)
    flip_probability: Probability = 0.5
    collimation_probability: Probability = 0.3
    collimation_depth_fraction: tuple[Fraction, Fraction] = (0.02, 0.2)
    collimation_tilt_deg: float = Field(default=4.0, ge=0.0, le=45.0)
    collimation_white_probability: Probability = 0.5
    collimation_parallel_probability: Probability = 0.5
    collimation_corner_probability: Probability = 0.15
    # Appearance: image only.
    text_marker_probability: Probability = 0.4
    text_marker_max_count: int = Field(default=3, ge=1, le=20)
    text_marker_height_fraction: tuple[Fraction, Fraction] = (0.03, 0.08)
    bias_field_probability: Probability = 0.3
    bias_field_coefficient_max: float = Field(default=0.25, ge=0.0, le=2.0)
    local_contrast_probability: Probability = 0.5
    local_contrast_sigma_fraction: tuple[Fraction, Fraction] = (0.02, 0.15)
    local_contrast_strength_range: tuple[NonNegativeFloat, NonNegativeFloat] = (0.5, 3.0)
    gamma_probability: Probability = 0.5
    gamma_range: tuple[PositiveFloat, PositiveFloat] = (0.6, 1.7)
    window_probability: Probability = 0.6
    window_low_range: tuple[NonNegativeFloat, NonNegativeFloat] = (0.0, 0.15)
    # Down to 0.55: cortical bone saturates as bright as metal, as on strongly processed clinical films,
    # so implants must be told from bone by shape and texture, not by brightness alone.
    window_high_range: tuple[PositiveFloat, PositiveFloat] = (0.55, 1.15)
    histogram_shift_probability: Probability = 0.3
    histogram_control_points: tuple[Annotated[int, Field(ge=3)], Annotated[int, Field(ge=3)]] = (5, 10)
    blur_probability: Probability = 0.2
    blur_sigma_px: tuple[PositiveFloat, PositiveFloat] = (0.3, 1.2)
    sharpen_probability: Probability = 0.15
    sharpen_alpha_range: tuple[NonNegativeFloat, NonNegativeFloat] = (1.0, 5.0)
    noise_probability: Probability = 0.4
    noise_std_max: float = Field(default=0.04, ge=0.0, le=1.0)
    signal_noise_probability: Probability = 0.3
    signal_noise_std_max: float = Field(default=0.05, ge=0.0, le=1.0)

    @field_validator("*")
    @classmethod
    def _check_ranges(cls, value: Any) -> Any:
        if isinstance(value, tuple) and value[0] > value[1]:
            raise ValueError(f"range low must not exceed high, got {value}")
        return value

    @model_validator(mode="after")
    def _check_window(self) -> AugmentConfig:
        if self.window_low_range[1] >= self.window_high_range[0]:
            raise ValueError(
                f"window_low_range {self.window_low_range} must lie below window_high_range "
                f"{self.window_high_range}"
            )
        return self


def build_train_transforms(config: AugmentConfig) -> Compose:
    """The training augmentation as a MONAI ``Compose`` over ``{"image": (1,S,S), "label": (C,S,S)}``.

    Geometry first (zoom-crop, affine and elastic in one resampling, flip), then film framing and markers,
    then appearance in roughly the order an imaging chain applies it. The output image is a float32 tensor
    clipped to [0, 1], the label a float32 tensor in {0, 1}; inputs are never modified.

    Seed with ``transforms.set_random_state(seed)`` (``augment_batch`` can do it). Unseeded, MONAI
    transforms share one process-wide random state drawn at import, so forked data-loader workers would
    repeat each other's augmentations: give every worker its own seed (MONAI's ``DataLoader`` does).
    """
    from monai.transforms import (
        Compose,
        RandAdjustContrastd,
        RandBiasFieldd,
        RandGaussianNoised,
        RandGaussianSharpend,
        RandGaussianSmoothd,
        RandHistogramShiftd,
    )

    from orthoseg import augment_transforms as t

    keys = (t.IMAGE, t.LABEL)
    c = config
    stages: list[tuple[float, Callable[[], Any]]] = [
        (
            max(c.zoom_crop_probability, c.affine_probability, c.elastic_probability),
            lambda: t.RandWarpd(
                c.zoom_crop_probability,
                c.zoom_crop_range,
                c.affine_probability,
                c.rotate_deg,
                c.scale_range,
                c.shear,
                c.translate_px,
                c.elastic_probability,
                c.elastic_spacing_px,
                c.elastic_magnitude_px,
            ),
        ),
        # Left-right only: the femur is always above the tibia.
        (c.flip_probability, lambda: t.RandFlipColumnsd(c.flip_probability)),
        (
            c.collimation_probability,
            lambda: t.RandCollimationd(
                c.collimation_probability,
                c.collimation_depth_fraction,
                c.collimation_tilt_deg,
                c.collimation_white_probability,
                c.collimation_parallel_probability,
                c.collimation_corner_probability,
            ),
        ),
        (
            c.text_marker_probability,
            lambda: t.RandTextMarkerd(
                c.text_marker_probability, c.text_marker_max_count, c.text_marker_height_fraction
            ),
        ),
        (
            c.bias_field_probability,
            lambda: RandBiasFieldd(
                t.IMAGE,
                degree=3,
                coeff_range=(-c.bias_field_coefficient_max, c.bias_field_coefficient_max),
                prob=c.bias_field_probability,
            ),
        ),
        (
            c.local_contrast_probability,
            lambda: t.RandLocalContrastd(
                c.local_contrast_probability, c.local_contrast_sigma_fraction, c.local_contrast_strength_range
            ),
        ),
        (
            c.gamma_probability,
            lambda: RandAdjustContrastd(t.IMAGE, prob=c.gamma_probability, gamma=c.gamma_range),
        ),
        (
            c.window_probability,
            lambda: t.RandRewindowd(c.window_probability, c.window_low_range, c.window_high_range),
        ),
        (
            c.histogram_shift_probability,
            lambda: RandHistogramShiftd(
                t.IMAGE, num_control_points=c.histogram_control_points, prob=c.histogram_shift_probability
            ),
        ),
        (
            c.blur_probability,
            lambda: RandGaussianSmoothd(
                t.IMAGE, sigma_x=c.blur_sigma_px, sigma_y=c.blur_sigma_px, prob=c.blur_probability
            ),
        ),
        (
            c.sharpen_probability,
            lambda: RandGaussianSharpend(t.IMAGE, alpha=c.sharpen_alpha_range, prob=c.sharpen_probability),
        ),
        (
            c.noise_probability,
            lambda: RandGaussianNoised(t.IMAGE, prob=c.noise_probability, std=c.noise_std_max),
        ),
        (
            c.signal_noise_probability,
            lambda: t.RandSignalNoised(c.signal_noise_probability, c.signal_noise_std_max),
        ),
    ]
    transforms: list[Any] = [t.ToFloatTensord(keys)]
    if config.enabled:
        transforms += [make() for probability, make in stages if probability > 0]
    transforms.append(t.FinalizeAugmentd())
    return Compose(transforms)


def augment_batch(
    images: torch.Tensor,
    masks: torch.Tensor,
    transforms: Callable[[dict], dict],
    generator_seed: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment every sample of a batch independently (each draws its own random parameters).

    Args:
        images: (N, 1, S, S) images in [0, 1].
        masks: (N, C, S, S) binary masks, any numeric dtype.
        transforms: from ``build_train_transforms``.
        generator_seed: re-seeds ``transforms`` first, for a reproducible batch; None continues its stream.

    Returns:
        Augmented (N, 1, S, S) float32 images in [0, 1] and (N, C, S, S) float32 {0, 1} masks, on the
        device of ``images``.

    Raises:
        ValueError: when images and masks disagree in batch size or canvas.
        TypeError: when a seed is given but ``transforms`` cannot be seeded.
    """
    import torch

    if images.ndim != 4 or masks.ndim != 4 or images.shape[0] != masks.shape[0]:
        raise ValueError(
            f"expected (N,1,S,S) images and (N,C,S,S) masks, got {tuple(images.shape)}, {tuple(masks.shape)}"
        )
    if images.shape[-2:] != masks.shape[-2:]:
        raise ValueError(f"images {tuple(images.shape)} and masks {tuple(masks.shape)} differ in canvas size")
    if generator_seed is not None:
        if not hasattr(transforms, "set_random_state"):
            raise TypeError(f"{type(transforms).__name__} has no set_random_state; cannot seed it")
        transforms.set_random_state(seed=generator_seed)
    out_images, out_masks = [], []
    for image, mask in zip(images.detach().cpu(), masks.detach().cpu(), strict=True):
        sample = transforms({"image": image, "label": mask})
        out_images.append(sample["image"])
        out_masks.append(sample["label"])
    device = images.device
    return torch.stack(out_images).to(device), torch.stack(out_masks).to(device)


def _unit_rgb(rgb: tuple[int, int, int]) -> tuple[float, float, float]:
    """A 0-255 colour as matplotlib's 0-1 floats."""
    return rgb[0] / 255.0, rgb[1] / 255.0, rgb[2] / 255.0


def _overlay(image: np.ndarray, masks: np.ndarray) -> np.ndarray:
    from orthoseg.labels import STRUCTURES
    from orthoseg.overlay import mask_outline

    rgb = np.repeat(np.clip(image, 0.0, 1.0)[..., None], 3, axis=2)
    for structure in STRUCTURES:
        if structure.channel < masks.shape[0]:
            rgb[mask_outline(masks[structure.channel] > 0.5)] = np.array(structure.color_rgb) / 255.0
    return rgb


def augmentation_preview_png(
    images: np.ndarray, masks: np.ndarray, config: AugmentConfig, path: Path, seed: int = 0, samples: int = 8
) -> None:
    """Write a contact sheet: per sample the original and three augmented versions, with mask outlines.

    Args:
        images: (N, 1, S, S) or (N, S, S) images in [0, 1].
        masks: (N, C, S, S) binary masks.
        config: the augmentation to preview.
        path: PNG to write (parent folders are created).
        seed: seeds the augmentation, so the sheet is reproducible.
        samples: at most this many samples (rows).
    """
    import torch
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    from orthoseg.labels import STRUCTURES

    images = np.asarray(images, dtype=np.float32)
    if images.ndim == 3:
        images = images[:, None]
    masks = np.asarray(masks)
    count = min(samples, images.shape[0])
    if count == 0:
        raise ValueError("no samples to preview")
    transforms = build_train_transforms(config)
    transforms.set_random_state(seed=seed)
    versions = 3
    tile_in, height_in = 2.6, 2.6 * count + 0.6
    figure = Figure(figsize=(tile_in * (versions + 1), height_in), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.subplots(count, versions + 1, squeeze=False)
    for row in range(count):
        tiles = [(images[row, 0], masks[row], "original")]
        for version in range(versions):
            sample = transforms(
                {"image": torch.from_numpy(images[row]), "label": torch.from_numpy(masks[row])}
            )
            tiles.append((sample["image"][0].numpy(), sample["label"].numpy(), f"augmented {version + 1}"))
        for column, (image, mask, title) in enumerate(tiles):
            axis = axes[row, column]
            axis.imshow(_overlay(image, mask), interpolation="nearest")
            axis.set_axis_off()
            if row == 0:
                axis.set_title(title, fontsize=9, color="white")
    handles = [Line2D([], [], color=_unit_rgb(s.color_rgb), lw=2, label=s.name) for s in STRUCTURES]
    figure.legend(handles=handles, loc="lower center", ncol=4, fontsize=7, frameon=False, labelcolor="white")
    figure.subplots_adjust(left=0.01, right=0.99, top=1 - 0.3 / height_in, bottom=0.5 / height_in)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", facecolor="black")
    logger.info("wrote augmentation preview of %d samples to %s", count, path)
