"""Category and fixation rules never contradict: native never fixed, an implant always categorised."""

from __future__ import annotations

import numpy as np
import pytest

from orthoseg.labels import NUM_STRUCTURES, structure
from orthoseg.measure import measure_image
from orthoseg.measure.category import CATEGORIES

SHAPE = (400, 300)
SPACING = (0.5, 0.5)


def _box(r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    mask = np.zeros(SHAPE, dtype=bool)
    mask[r0:r1, c0:c1] = True
    return mask


def _random_knee(rng: np.random.Generator) -> np.ndarray:
    masks = np.zeros((NUM_STRUCTURES, *SHAPE), dtype=bool)
    masks[structure("femur").channel] = _box(0, 190, 120, 180)
    masks[structure("tibia").channel] = _box(210, 400, 115, 185)
    if rng.random() < 0.3:
        masks[structure("fibula").channel] = _box(240, 400, 95, 110)
    if rng.random() < 0.5:
        masks[structure("patella").channel] = _box(140, 180, 180, 200)
    if rng.random() < 0.6:
        c0 = int(rng.integers(115, 160))
        masks[structure("femoral_component").channel] = _box(
            170, int(rng.integers(178, 200)), c0, int(rng.integers(c0 + 1, 186))
        )
    if rng.random() < 0.6:
        c0 = int(rng.integers(115, 160))
        masks[structure("tibial_component").channel] = _box(
            210, int(rng.integers(212, 390)), c0, int(rng.integers(c0 + 1, 186))
        )
    if rng.random() < 0.5:
        masks[structure("cement").channel] = _box(int(rng.integers(200, 230)), 235, 120, 180)
    return masks


@pytest.mark.parametrize("view", ["AP", "LL"])
def test_rules_never_contradict(view: str) -> None:
    rng = np.random.default_rng(7)
    for _ in range(25):
        masks = _random_knee(rng)
        laterality = str(rng.choice(["L", "R", ""]))
        result = measure_image(masks, SPACING, laterality=laterality, view_position=view)
        assert result.implant_type in (*CATEGORIES, "unknown")
        has_component = (result.femoral_component_area_mm2 or 0.0) >= 100.0 or (
            result.tibial_component_area_mm2 or 0.0
        ) >= 100.0
        if result.implant_type == "native":
            assert result.fixation is None
            assert not has_component
        if result.fixation is not None:
            assert result.implant_type not in ("native", "unknown")
            assert result.fixation in ("cemented", "hybrid", "uncemented")
        if has_component and result.quality_flag not in ("no_knee_found", "implausible_anatomy"):
            assert result.implant_type != "native"
            assert result.fixation is not None
        assert result.category_evidence


def test_missing_structures_are_flagged_not_measured() -> None:
    masks = np.zeros((NUM_STRUCTURES, *SHAPE), dtype=bool)
    masks[structure("femur").channel] = _box(0, 190, 120, 180)
    result = measure_image(masks, SPACING, laterality="R", view_position="AP")
    assert result.quality_flag == "no_knee_found"
    assert result.implant_type == "unknown" and result.fixation is None
    assert result.tibiofemoral_angle_deg is None and result.joint_space_medial_mm is None
