"""Dice as the project defines it: per image, empty-vs-empty is 1.0, means over present structures."""

from __future__ import annotations

import math

import numpy as np
import torch

from orthoseg.evaluation import dice_per_image, meets_quality_floor, summarize_dice
from orthoseg.labels import NUM_STRUCTURES, STRUCTURE_NAMES


def test_dice_per_image_counts_empty_vs_empty_as_one() -> None:
    truth = torch.zeros((2, NUM_STRUCTURES, 4, 4), dtype=torch.bool)
    pred = torch.zeros_like(truth)
    truth[0, 0, :2] = True  # 8 pixels
    pred[0, 0, :1] = True  # 4 pixels, all inside
    pred[1, 1, 0, 0] = True  # a structure invented on an image without it
    dice = dice_per_image(pred, truth)
    assert dice.shape == (2, NUM_STRUCTURES)
    assert math.isclose(float(dice[0, 0]), 2 * 4 / 12, rel_tol=1e-6)
    assert float(dice[1, 1]) == 0.0
    assert float(dice[0, 2]) == 1.0  # absent in both


def test_summarize_dice_leaves_out_structures_absent_from_ground_truth() -> None:
    per_image = np.ones((3, NUM_STRUCTURES), dtype=np.float32)
    per_image[:, 0] = [0.5, 0.7, 0.9]
    present = np.ones(NUM_STRUCTURES, dtype=bool)
    present[-1] = False
    dice, mean = summarize_dice(per_image, present)
    assert STRUCTURE_NAMES[-1] not in dice
    assert math.isclose(dice["femur"], 0.7, rel_tol=1e-6)
    assert math.isclose(mean, (0.7 + (NUM_STRUCTURES - 2)) / (NUM_STRUCTURES - 1), rel_tol=1e-6)


def test_quality_floor() -> None:
    assert meets_quality_floor({"dice_mean": 0.8}, 0.5)
    assert not meets_quality_floor({"dice_mean": 0.4}, 0.5)
    assert not meets_quality_floor({"dice_mean": float("nan")}, 0.0)
