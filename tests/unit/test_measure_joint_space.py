"""Joint space on synthetic AP masks with known gaps (orthoseg.measure.joint_space)."""

from __future__ import annotations

import numpy as np

from orthoseg.measure.config import MeasurementConfig
from orthoseg.measure.joint_space import joint_spaces

SPACING = (0.5, 0.5)
UP = np.array([-1.0, 0.0])  # proximal: toward row 0
MEDIAL = np.array([0.0, 1.0])  # medial: toward increasing columns


def _knee(medial_bottom_row: int, lateral_bottom_row: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat tibia (top row 220, columns 50-349) under two flat condyles ending at the given rows."""
    femur = np.zeros((400, 400), dtype=bool)
    tibia = np.zeros((400, 400), dtype=bool)
    tibia[220:, 50:350] = True
    femur[:100, 60:340] = True
    femur[: lateral_bottom_row + 1, 60:190] = True
    femur[: medial_bottom_row + 1, 260:340] = True
    femur[:170, 190:260] = True  # notch roof, well above the condyles
    return femur, tibia


def _measure(femur: np.ndarray, tibia: np.ndarray) -> tuple[float | None, float | None]:
    centre = np.array([210 * SPACING[0], 200 * SPACING[1]])
    return joint_spaces(femur, tibia, SPACING, centre, UP, MEDIAL, MeasurementConfig())


def test_flat_condyles_give_their_gaps() -> None:
    femur, tibia = _knee(medial_bottom_row=199, lateral_bottom_row=209)
    medial, lateral = _measure(femur, tibia)
    assert medial is not None and lateral is not None
    # Between mask edges: the background rows between the condyle's last row and the plateau's first.
    assert abs(medial - (220 - 199 - 1) * SPACING[0]) < 1e-6
    assert abs(lateral - (220 - 209 - 1) * SPACING[0]) < 1e-6


def test_spine_under_the_notch_is_not_the_joint_space() -> None:
    """A tibial spine reaching toward the notch roof is closer to the femur than the condyle is, but
    it is not the compartment's articular gap: only columns under the condyle count."""
    femur, tibia = _knee(medial_bottom_row=199, lateral_bottom_row=199)
    tibia[180:220, 220:232] = True  # spine inside the medial band, 5 mm below the notch roof
    medial, lateral = _measure(femur, tibia)
    assert medial is not None and lateral is not None
    assert abs(medial - 10.0) < 1e-6
    assert abs(lateral - 10.0) < 1e-6


def test_no_femur_above_a_compartment_is_refused() -> None:
    femur, tibia = _knee(medial_bottom_row=199, lateral_bottom_row=199)
    femur[:, 200:] = False
    medial, lateral = _measure(femur, tibia)
    assert medial is None
    assert lateral is not None


def test_spine_under_the_condyles_edge_is_not_the_joint_space() -> None:
    """A spine that rises under the inner edge of a condyle (the femoral side there is within the condyle
    window of its lowest point) still is not the plateau: columns far above the compartment's median
    tibial height are left out, and the gap is read from condyle to plateau."""
    femur, tibia = _knee(medial_bottom_row=199, lateral_bottom_row=199)
    femur[:200, 250:262] = True  # the medial condyle reaches over the spine
    tibia[196:220, 252:260] = True  # spine 12 mm high, 1.5 mm below the condyle's edge
    medial, lateral = _measure(femur, tibia)
    assert medial is not None and lateral is not None
    assert abs(medial - 10.0) < 1e-6
    assert abs(lateral - 10.0) < 1e-6
