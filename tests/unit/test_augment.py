"""Training augmentation: contracts (shapes, ranges, binary labels), geometry alignment, seeding, config."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pydantic
import pytest
import torch

from orthoseg.augment import AugmentConfig, augment_batch, augmentation_preview_png, build_train_transforms

S = 96
CHANNELS = 7
PROBABILITIES = [
    name
    for name in AugmentConfig.model_fields
    # Sub-choices of the collimation transform, not transforms of their own.
    if name.endswith("_probability")
    and name
    not in (
        "collimation_white_probability",
        "collimation_parallel_probability",
        "collimation_corner_probability",
    )
]
SPATIAL = {
    "zoom_crop_probability",
    "affine_probability",
    "elastic_probability",
    "flip_probability",
    "collimation_probability",
}
INTENSITY = [name for name in PROBABILITIES if name not in SPATIAL]


def only(name: str, **overrides: object) -> AugmentConfig:
    """A config with every transform off except ``name`` (probability 1)."""
    values: dict[str, object] = {p: 0.0 for p in PROBABILITIES}
    values[name] = 1.0
    values.update(overrides)
    return AugmentConfig(**values)


def blocky_sample(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A film with bright blocks on a dark background, zero padding, and labels that overlap."""
    rng = np.random.default_rng(seed)
    image = np.zeros((1, S, S), dtype=np.float32)
    image[0, 6:90, 12:84] = 0.2 + 0.05 * rng.random((84, 72), dtype=np.float32)
    label = np.zeros((CHANNELS, S, S), dtype=np.uint8)
    label[0, 10:45, 25:70] = 1  # femur
    label[1, 50:88, 28:66] = 1  # tibia
    label[2, 55:85, 68:74] = 1  # fibula
    label[3, 20:34, 58:68] = 1  # patella, over the femur
    label[4, 35:48, 25:70] = 1  # femoral component, overlapping the femur
    label[6, 48:52, 30:64] = 1  # cement
    for channel, value in ((0, 0.7), (1, 0.7), (2, 0.6), (3, 0.8), (4, 1.0), (6, 0.9)):
        image[0][label[channel] > 0] = value
    return image, label


def dice(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(2 * (a & b).sum() / max(1, int(a.sum() + b.sum())))


def test_defaults_keep_shapes_types_and_ranges() -> None:
    image, label = blocky_sample()
    transforms = build_train_transforms(AugmentConfig())
    transforms.set_random_state(seed=1)
    image_before, label_before = image.copy(), label.copy()
    for _ in range(12):
        out = transforms({"image": image, "label": label})
        assert isinstance(out["image"], torch.Tensor) and isinstance(out["label"], torch.Tensor)
        assert out["image"].shape == (1, S, S) and out["image"].dtype == torch.float32
        assert out["label"].shape == (CHANNELS, S, S) and out["label"].dtype == torch.float32
        assert torch.isfinite(out["image"]).all()
        assert 0.0 <= out["image"].min() and out["image"].max() <= 1.0
        assert set(out["label"].unique().tolist()) <= {0.0, 1.0}
    np.testing.assert_array_equal(image, image_before)  # inputs are never modified
    np.testing.assert_array_equal(label, label_before)


def test_disabled_returns_the_input_unchanged() -> None:
    image, label = blocky_sample()
    transforms = build_train_transforms(AugmentConfig(enabled=False))
    out = transforms({"image": torch.from_numpy(image), "label": torch.from_numpy(label)})
    assert torch.equal(out["image"], torch.from_numpy(image))
    assert torch.equal(out["label"], torch.from_numpy(label).float())


def test_flip_mirrors_image_and_label_left_right_only() -> None:
    image, label = blocky_sample()
    transforms = build_train_transforms(only("flip_probability"))
    out = transforms({"image": image, "label": label})
    assert torch.equal(out["image"], torch.from_numpy(image[:, :, ::-1].copy()))
    assert torch.equal(out["label"], torch.from_numpy(label[:, :, ::-1].astype(np.float32)))


@pytest.mark.parametrize("name", ["affine_probability", "elastic_probability", "zoom_crop_probability"])
def test_geometry_keeps_label_aligned_with_image(name: str) -> None:
    rng = np.random.default_rng(3)
    image = np.full((1, S, S), 0.2, dtype=np.float32)
    for _ in range(6):
        r, c = rng.integers(4, S - 30, size=2)
        h, w = rng.integers(10, 26, size=2)
        image[0, r : r + h, c : c + w] = 0.8
    label = np.repeat(image > 0.5, CHANNELS, axis=0).astype(np.uint8)
    overrides = (
        {"elastic_magnitude_px": (2.0, 4.0), "elastic_spacing_px": 16} if name.startswith("elastic") else {}
    )
    transforms = build_train_transforms(only(name, **overrides))
    transforms.set_random_state(seed=0)
    for _ in range(5):
        out = transforms({"image": image, "label": label})
        assert not torch.equal(out["image"], torch.from_numpy(image)), "the geometry did not change"
        bright = out["image"][0] > 0.5
        for channel in range(CHANNELS):
            assert dice(bright, out["label"][channel] > 0.5) > 0.95


@pytest.mark.parametrize("name", INTENSITY)
def test_intensity_transforms_leave_the_label_bit_identical(name: str) -> None:
    image, label = blocky_sample()
    label_float = torch.from_numpy(label).float()
    transforms = build_train_transforms(only(name))
    transforms.set_random_state(seed=2)
    changed = False
    for _ in range(3):
        out = transforms({"image": image, "label": label_float})
        assert torch.equal(out["label"], label_float)
        assert 0.0 <= out["image"].min() and out["image"].max() <= 1.0
        changed |= not torch.equal(out["image"], torch.from_numpy(image))
    assert changed, f"{name} never changed the image"


def test_same_seed_reproduces_and_different_seeds_differ() -> None:
    image, label = blocky_sample()
    images = torch.from_numpy(np.stack([image] * 3))
    masks = torch.from_numpy(np.stack([label] * 3))
    transforms = build_train_transforms(AugmentConfig())
    first = augment_batch(images, masks, transforms, generator_seed=7)
    again = augment_batch(images, masks, transforms, generator_seed=7)
    other = augment_batch(images, masks, transforms, generator_seed=8)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other[0])
    assert not torch.equal(first[0][0], first[0][1]), "samples of a batch must draw their own parameters"


def test_augment_batch_contract() -> None:
    image, label = blocky_sample()
    images = torch.from_numpy(np.stack([image, image]))
    masks = torch.from_numpy(np.stack([label, label]))
    out_images, out_masks = augment_batch(images, masks, build_train_transforms(AugmentConfig()), 0)
    assert out_images.shape == (2, 1, S, S) and out_images.dtype == torch.float32
    assert out_masks.shape == (2, CHANNELS, S, S) and out_masks.dtype == torch.float32
    assert set(out_masks.unique().tolist()) <= {0.0, 1.0}
    with pytest.raises(ValueError, match="expected"):
        augment_batch(images, masks[:1], build_train_transforms(AugmentConfig()))


@pytest.mark.parametrize("white", [0.0, 1.0])
def test_collimation_only_removes_labels(white: float) -> None:
    image, label = blocky_sample()
    config = only(
        "collimation_probability", collimation_white_probability=white, collimation_depth_fraction=(0.1, 0.4)
    )
    transforms = build_train_transforms(config)
    transforms.set_random_state(seed=4)
    removed, graded = False, False
    for _ in range(16):
        out = transforms({"image": image, "label": label})
        assert not (out["label"].bool() & ~torch.from_numpy(label).bool()).any()
        removed |= bool(out["label"].sum() < label.sum())
        hidden = (torch.from_numpy(image) != out["image"])[0]
        if hidden.any():
            assert out["label"][:, hidden].sum() == 0, "labels survived under the border"
            value = out["image"][0][hidden]
            if white:  # bright, flat or graded with the distance from the field (penumbra, plate noise)
                assert value.min() >= 0.5
                graded |= float(value.max() - value.min()) > 0.05
            else:  # a cropped film is black and flat
                assert torch.allclose(value, value[0]) and value[0] < 0.06
    assert removed
    assert graded == bool(white)


def test_zoom_crop_never_creates_label_outside_the_film() -> None:
    image, label = blocky_sample()
    transforms = build_train_transforms(only("zoom_crop_probability"))
    transforms.set_random_state(seed=5)
    for _ in range(5):
        out = transforms({"image": image, "label": label})
        assert not (out["label"].amax(dim=0).bool() & (out["image"][0] == 0)).any()


@pytest.mark.parametrize(
    "bad",
    [
        {"affine_probability": 1.5},
        {"noise_probability": -0.1},
        {"gamma_range": (-0.5, 1.5)},
        {"scale_range": (1.2, 0.8)},
        {"rotate_deg": -5.0},
        {"noise_std_max": -0.01},
        {"window_low_range": (0.0, 0.9), "window_high_range": (0.8, 1.0)},
        {"unknown_field": 1},
    ],
)
def test_invalid_configs_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(pydantic.ValidationError):
        AugmentConfig(**bad)


def test_config_is_frozen_and_round_trips() -> None:
    config = AugmentConfig(rotate_deg=10.0)
    with pytest.raises(pydantic.ValidationError):
        config.rotate_deg = 20.0  # type: ignore[misc]
    assert AugmentConfig.model_validate_json(config.model_dump_json()) == config


def test_importing_the_config_loads_neither_torch_nor_monai() -> None:
    code = "import sys, orthoseg.augment; sys.exit(bool({'torch', 'monai'} & set(sys.modules)))"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_preview_writes_a_png(tmp_path: Path) -> None:
    image, label = blocky_sample()
    path = tmp_path / "sheet" / "preview.png"
    augmentation_preview_png(
        np.stack([image, image]), np.stack([label, label]), AugmentConfig(), path, samples=2
    )
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5_000
