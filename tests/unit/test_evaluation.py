"""Scores as the project defines them: Dice (empty-vs-empty is 1.0), HD95 in mm, misses, groups, bands."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from orthoseg.evaluation import EvaluationResult, dice_per_image, meets_quality_floor, summarize_dice
from orthoseg.labels import NUM_STRUCTURES, STRUCTURE_NAMES
from orthoseg.metrics import group_dice, hd95_mm, image_dice_mean, score_native, summarize_hd95
from orthoseg.real_check import label_row_band, score_in_row_band


def _square(shape: tuple[int, int], top: int, left: int, side: int) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[top : top + side, left : left + side] = True
    return mask


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
    assert not meets_quality_floor({}, 0.0)  # a KFP output without the key (NaN left out)
    assert not meets_quality_floor({"dice_mean": None}, 0.0)


def test_hd95_is_in_millimetres_and_scales_with_spacing() -> None:
    truth = _square((64, 64), 20, 20, 20)
    shifted = _square((64, 64), 20, 23, 20)  # 3 px to the right
    assert math.isclose(hd95_mm(shifted, truth, (0.5, 0.5)), 1.5, rel_tol=1e-5)
    assert math.isclose(hd95_mm(shifted, truth, (1.0, 1.0)), 3.0, rel_tol=1e-5)
    # A column shift only sees the column spacing.
    assert math.isclose(hd95_mm(shifted, truth, (0.1, 0.5)), 1.5, rel_tol=1e-5)
    assert hd95_mm(truth, truth, (0.5, 0.5)) == 0.0


def test_hd95_absent_in_both_is_not_scored_and_present_in_one_is_a_miss() -> None:
    empty = np.zeros((16, 16), dtype=bool)
    some = _square((16, 16), 2, 2, 5)
    assert math.isnan(hd95_mm(empty, empty, (0.2, 0.2)))
    assert math.isinf(hd95_mm(some, empty, (0.2, 0.2)))
    assert math.isinf(hd95_mm(empty, some, (0.2, 0.2)))
    with pytest.raises(ValueError):
        hd95_mm(some, some[:8], (0.2, 0.2))


def test_score_native_identical_masks() -> None:
    truth = np.zeros((NUM_STRUCTURES, 48, 48), dtype=bool)
    truth[0] = _square((48, 48), 4, 4, 20)
    truth[1] = _square((48, 48), 26, 10, 15)
    score = score_native(truth.copy(), truth, (0.3, 0.3))
    assert score["dice"] == {name: 1.0 for name in STRUCTURE_NAMES}
    assert score["hd95_mm"]["femur"] == 0.0 and score["hd95_mm"]["tibia"] == 0.0
    assert all(math.isnan(score["hd95_mm"][n]) for n in STRUCTURE_NAMES[2:])
    assert score["truth_present"]["femur"] and not score["truth_present"]["cement"]
    assert image_dice_mean(score) == 1.0


def test_score_native_counts_an_invented_structure() -> None:
    truth = np.zeros((NUM_STRUCTURES, 32, 32), dtype=bool)
    truth[0] = _square((32, 32), 4, 4, 10)
    pred = truth.copy()
    pred[6] = _square((32, 32), 20, 20, 4)  # cement invented
    score = score_native(pred, truth, (0.2, 0.2))
    assert score["dice"]["cement"] == 0.0
    assert math.isinf(score["hd95_mm"]["cement"])
    assert image_dice_mean(score) == 0.5  # femur 1.0, cement 0.0; silent structures do not count


def test_summarize_hd95_counts_misses_instead_of_averaging_infinity() -> None:
    nan, inf = math.nan, math.inf
    per_image = np.full((3, NUM_STRUCTURES), nan)
    per_image[:, 0] = [1.0, 3.0, inf]  # femur missed on the third image
    per_image[:, 6] = [inf, nan, nan]  # cement invented once, never in any truth
    hd95, mean, missing = summarize_hd95(per_image)
    assert hd95 == {"femur": 2.0}
    assert mean == 2.0
    assert missing["femur"] == 1 and missing["cement"] == 1 and missing["tibia"] == 0
    assert set(missing) == set(STRUCTURE_NAMES)
    empty_hd95, empty_mean, _ = summarize_hd95(np.full((2, NUM_STRUCTURES), nan))
    assert empty_hd95 == {} and math.isnan(empty_mean)


def test_group_dice_summarises_each_group_over_its_own_structures() -> None:
    per_image = np.ones((4, NUM_STRUCTURES))
    per_image[:, 0] = [0.8, 0.6, 0.9, 0.5]
    per_image[:, 4] = [0.4, 0.2, 1.0, 1.0]  # femoral component
    present = np.zeros((4, NUM_STRUCTURES), dtype=bool)
    present[:, 0] = True
    present[:2, 4] = True  # only the TKA images have a component
    groups = group_dice(per_image, present, ["tka", "tka", "native", "native"])
    assert list(groups) == ["native", "tka"]
    assert groups["tka"]["femur"] == pytest.approx(0.7)
    assert groups["tka"]["femoral_component"] == pytest.approx(0.3)
    assert groups["tka"]["dice_mean"] == pytest.approx(0.5)
    assert "femoral_component" not in groups["native"]  # not credited 1.0 for an absent implant
    assert groups["native"]["dice_mean"] == pytest.approx(0.7)
    assert groups["native"]["images"] == 2
    by_view = group_dice(per_image, present, ["AP", "LL", "AP", "LL"])
    assert by_view["AP"]["femur"] == pytest.approx(0.85)
    with pytest.raises(ValueError):
        group_dice(per_image, present, ["AP"])


def test_evaluation_result_never_dumps_non_finite_numbers() -> None:
    result = EvaluationResult(
        dataset_version="v1",
        images=2,
        dice={"femur": 0.9, "cement": math.nan},
        dice_mean=math.nan,
        hd95_mm={"femur": 1.2, "tibia": math.inf},
        hd95_mm_mean=math.nan,
        hd95_missing={"tibia": 1},
        by_category={"tka": {"femur": 0.9, "dice_mean": math.nan, "images": 2.0}},
        by_view={"AP": {"femur": 0.9}},
        per_image=[{"sop_instance_uid": "1.2", "dice_femur": 0.9, "hd95_mm_tibia": math.inf}],
    )
    dumped = result.model_dump()
    assert result.resolution == "native"
    assert dumped["dice"] == {"femur": 0.9}
    assert dumped["dice_mean"] is None and dumped["hd95_mm_mean"] is None
    assert dumped["hd95_mm"] == {"femur": 1.2}
    assert dumped["by_category"] == {"tka": {"femur": 0.9, "images": 2.0}}
    assert dumped["per_image"] == [{"sop_instance_uid": "1.2", "dice_femur": 0.9}]
    compact = result.model_dump(mode="json", exclude_none=True)
    assert "dice_mean" not in compact
    json.dumps(compact, allow_nan=False)  # valid JSON for a KFP step output


def test_label_row_band() -> None:
    label = np.zeros((10, 4), dtype=bool)
    assert label_row_band(label) is None
    label[3:7, 1] = True
    assert label_row_band(label) == (3, 6)


def test_band_dice_perfect_prediction_scores_one() -> None:
    truth = np.zeros((40, 20), dtype=bool)
    truth[10:20, 5:15] = True
    score = score_in_row_band(truth.copy(), truth, (0.14, 0.14))
    assert score["band_rows"] == [10, 19]
    assert score["dice"] == 1.0
    assert score["hd95_mm"] == 0.0 and not score["hd95_miss"]


def test_band_dice_ignores_prediction_outside_the_band() -> None:
    truth = np.zeros((40, 20), dtype=bool)
    truth[10:20, 5:15] = True
    pred = truth.copy()
    pred[:10] = True  # the rest of the bone, above the labelled band
    pred[25:] = True
    assert score_in_row_band(pred, truth, (0.14, 0.14))["dice"] == 1.0
    half = truth.copy()
    half[10:20, 10:15] = False  # inside the band, half the bone missing
    assert score_in_row_band(half, truth, (0.14, 0.14))["dice"] == pytest.approx(2 * 50 / 150)


def test_band_dice_miss_and_empty_truth() -> None:
    truth = np.zeros((30, 30), dtype=bool)
    truth[5:10, 5:10] = True
    missed = score_in_row_band(np.zeros_like(truth), truth, (0.2, 0.2))
    assert missed["dice"] == 0.0 and missed["hd95_mm"] is None and missed["hd95_miss"]
    nothing = score_in_row_band(truth, np.zeros_like(truth), (0.2, 0.2))
    assert nothing == {"band_rows": None, "dice": None, "hd95_mm": None, "hd95_miss": False}
