"""Knee Society radiographic angles, with the simulator's definitions (``orthoseg.synth.truth``).

All in degrees, from unit (row, column) image directions in mm coordinates:

* tibiofemoral angle (AP): femoral axis (proximal) against the tibial axis (proximal), signed positive
  when the femur leans toward the lateral side relative to the tibia (valgus positive).
* alpha (AP): femoral axis (proximal) against the distal condylar line pointed medially (ideal ~95-97).
* beta (AP): tibial axis (distal) against the tray line pointed medially (90 = neutral, < 90 = varus).
* gamma (lateral): flexion of the femoral component, the femoral axis' angle minus the component axis'
  angle, both measured toward anterior.
* delta (lateral): tibial axis (distal) against the tray line pointed posteriorly (90 - posterior slope).
"""

from __future__ import annotations

import numpy as np

from orthoseg.measure.geometry import angle_between_deg, oriented, signed_angle_deg


def tibiofemoral_deg(femur_up: np.ndarray, tibia_up: np.ndarray, medial: np.ndarray) -> float:
    """Signed tibiofemoral angle (valgus positive)."""
    return signed_angle_deg(tibia_up, femur_up, -medial, tibia_up)


def alpha_deg(femur_up: np.ndarray, condylar_line: np.ndarray, medial: np.ndarray) -> float:
    """Femoral component angle alpha."""
    return angle_between_deg(femur_up, oriented(condylar_line, medial))


def beta_deg(tibia_down: np.ndarray, tray_line: np.ndarray, medial: np.ndarray) -> float:
    """Tibial component angle beta."""
    return angle_between_deg(tibia_down, oriented(tray_line, medial))


def gamma_deg(femur_up: np.ndarray, component_up: np.ndarray, anterior: np.ndarray) -> float:
    """Femoral component flexion gamma (positive: component flexed relative to the femur)."""
    return signed_angle_deg(oriented(component_up, femur_up), femur_up, anterior, femur_up)


def delta_deg(tibia_down: np.ndarray, tray_line: np.ndarray, anterior: np.ndarray) -> float:
    """Tibial slope angle delta."""
    return angle_between_deg(tibia_down, oriented(tray_line, -anterior))
