"""Which way is medial (AP) or anterior (lateral) on the image, and how that was decided.

AP: a right knee's medial side faces the patient's left, a left knee's the patient's right; image
columns run toward the patient's left on the radiological AP convention (``columns_toward_patient_left``,
from PatientOrientation). Without a usable laterality the fibula decides: it lies lateral to the tibia.
Lateral: the patella lies anterior to the femur; without a patella the fibula (posterior) decides.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from orthoseg.measure.geometry import Spacing, points_mm, unit

LATERAL_VIEWS = frozenset({"LL", "ML", "LM", "RL", "LAT", "LATERAL", "XCL", "LLD", "RLD"})


def is_lateral_view(view_position: str) -> bool:
    """True for a lateral (sagittal) view position."""
    return view_position.strip().upper() in LATERAL_VIEWS


@dataclass(frozen=True)
class Side:
    """A unit image direction (mm coordinates) and what it was decided from."""

    direction: np.ndarray
    source: str


def _across(up: np.ndarray) -> np.ndarray:
    """The image direction perpendicular to ``up`` pointing toward increasing columns."""
    n = np.array([-up[1], up[0]])
    return n if n[1] >= 0 else -n


def medial_side(
    laterality: str,
    columns_toward_patient_left: bool,
    up: np.ndarray,
    tibia: np.ndarray,
    fibula: np.ndarray,
    spacing: Spacing,
    min_fibula_px: int = 50,
) -> Side | None:
    """The medial direction on an AP image (perpendicular to ``up``), or None when undecidable."""
    across = _across(unit(up))
    side = laterality.strip().upper()
    if side in ("L", "R"):
        medial_toward_left = side == "R"
        toward_plus_columns = medial_toward_left == columns_toward_patient_left
        return Side(across if toward_plus_columns else -across, f"laterality {side}")
    if np.count_nonzero(fibula) >= min_fibula_px and np.count_nonzero(tibia) >= min_fibula_px:
        offset = points_mm(fibula, spacing).mean(axis=0) - points_mm(tibia, spacing).mean(axis=0)
        lateral = float(offset @ across)
        return Side(-across if lateral > 0 else across, "fibula lateral to tibia")
    return None


def anterior_side(
    up: np.ndarray,
    femur: np.ndarray,
    patella: np.ndarray,
    tibia: np.ndarray,
    fibula: np.ndarray,
    spacing: Spacing,
    min_px: int = 50,
) -> Side | None:
    """The anterior direction on a lateral image (perpendicular to ``up``), or None when undecidable."""
    across = _across(unit(up))
    if np.count_nonzero(patella) >= min_px and np.count_nonzero(femur) >= min_px:
        offset = points_mm(patella, spacing).mean(axis=0) - points_mm(femur, spacing).mean(axis=0)
        return Side(across if float(offset @ across) > 0 else -across, "patella anterior to femur")
    if np.count_nonzero(fibula) >= min_px and np.count_nonzero(tibia) >= min_px:
        offset = points_mm(fibula, spacing).mean(axis=0) - points_mm(tibia, spacing).mean(axis=0)
        return Side(-across if float(offset @ across) > 0 else across, "fibula posterior to tibia")
    return None
