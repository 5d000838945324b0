"""RandCollimationd draws turned collimators (parallel shutter edges) and oblique corner cuts."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from orthoseg.augment_transforms import RandCollimationd

S = 120


def _sample() -> dict[str, torch.Tensor]:
    image = torch.full((1, S, S), 0.3)
    label = torch.ones((2, S, S))
    return {"image": image, "label": label}


def test_a_corner_cut_is_a_triangle_at_one_corner() -> None:
    """Edges at the film's border and square (depth 0, tilt 0) hide nothing; the cut hides a triangle
    5-25 % of the shorter side deep at one corner, and only there are labels removed."""
    transform = RandCollimationd(1.0, (0.0, 0.0), 0.0, 1.0, parallel_probability=0.0, corner_probability=1.0)
    transform.set_random_state(seed=2)
    corners_seen = set()
    for _ in range(12):
        out = transform(_sample())
        hidden = (out["image"][0] != 0.3).numpy()
        assert hidden.any()
        corners = {
            i for i, (r, c) in enumerate(((0, 0), (0, S - 1), (S - 1, 0), (S - 1, S - 1))) if hidden[r, c]
        }
        assert len(corners) == 1
        corners_seen |= corners
        area = hidden.sum()
        assert (0.05 * S) ** 2 * 0.9 <= area <= 1.2 * (0.25 * S) ** 2 / math.sin(math.radians(60)) + S
        np.testing.assert_array_equal(out["label"][0].numpy() == 0, hidden)
    assert len(corners_seen) >= 3


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_a_turned_collimator_keeps_opposite_edges_parallel(seed: int) -> None:
    """With every shutter closed in (depth 20 %) and one tilt, the exposed field is a turned rectangle:
    its top and bottom boundaries have the same slope, as have its left and right."""
    transform = RandCollimationd(1.0, (0.2, 0.2), 6.0, 1.0, parallel_probability=1.0, corner_probability=0.0)
    transform.set_random_state(seed=seed)
    checked = 0
    for _ in range(8):
        out = transform(_sample())
        field = (out["label"][0] > 0).numpy()
        cols = np.arange(40, 80)
        top = np.array([np.flatnonzero(field[:, c])[0] for c in cols if field[:, c].any()])
        bottom = np.array([np.flatnonzero(field[:, c])[-1] for c in cols if field[:, c].any()])
        if len(top) < 40 or top.min() == 0 or bottom.max() == S - 1:
            continue  # that draw left the top or bottom shutter open
        slope_top = np.polyfit(cols, top, 1)[0]
        slope_bottom = np.polyfit(cols, bottom, 1)[0]
        assert abs(slope_top - slope_bottom) <= 0.03
        assert abs(math.degrees(math.atan(slope_top))) <= 6.5
        checked += 1
    assert checked >= 1
