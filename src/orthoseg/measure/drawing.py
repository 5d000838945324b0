"""What a person should see drawn on a measured radiograph: fitted axes, reference lines, zones and lines.

``measure_image`` fills a ``MeasurementDrawing`` when it is given one, so overlays and reports show the
geometry each number came from (a tibiofemoral angle beside the two axes it was measured between, a
zone's width at the interface it was read on). Coordinates are native pixel (row, column) positions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from orthoseg.measure.geometry import Spacing


@dataclass(frozen=True)
class Segment:
    """A straight line to draw.

    Attributes:
        label: what it is (``femur axis``, ``tibia axis``, ``condylar line``, ``tray line``,
            ``component axis``, ``joint space medial`` ...).
        start, end: (row, column) in native pixels.
    """

    label: str
    start: tuple[float, float]
    end: tuple[float, float]


@dataclass(frozen=True)
class ZoneMark:
    """One Knee Society zone where a radiolucent line was read.

    Attributes:
        zone: zone name (``tibia_1M``, ``femur_2`` ...).
        width_mm: the zone's reported width (mm).
        anchor: (row, column) in native pixels where the zone's label goes (middle of its interface).
        points: (N, 2) native (row, column) positions of the interface points read in this zone.
        flagged: the width reaches the configured ``line_flag_mm``.
    """

    zone: str
    width_mm: float
    anchor: tuple[float, float]
    points: np.ndarray
    flagged: bool = False


@dataclass
class MeasurementDrawing:
    """Segments and zone marks of one image, collected while it is measured."""

    segments: list[Segment] = field(default_factory=list)
    zones: list[ZoneMark] = field(default_factory=list)

    def add_line(
        self,
        label: str,
        point_mm: np.ndarray,
        direction: np.ndarray,
        half_length_mm: float,
        spacing: Spacing,
        offset_mm: float = 0.0,
    ) -> None:
        """A segment centred ``offset_mm`` along ``direction`` from ``point_mm`` (mm coordinates)."""
        centre = np.asarray(point_mm, dtype=np.float64) + offset_mm * np.asarray(direction)
        a = centre - half_length_mm * np.asarray(direction)
        b = centre + half_length_mm * np.asarray(direction)
        self.segments.append(
            Segment(label, (a[0] / spacing[0], a[1] / spacing[1]), (b[0] / spacing[0], b[1] / spacing[1]))
        )
