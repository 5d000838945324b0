"""Every knee on a film: a standing bilateral AP is split between its two knees, each measured alone.

``measure_image`` measures one knee and refuses a film marked bilateral (``ImageLaterality`` 'B'), since
one row cannot hold two knees' angles. ``measure_knees`` finds the two femora of such a film, cuts the
film at the middle of the gap between them and measures each side as a knee of its own, with the side's
laterality (on an AP the patient's right knee lies at the columns away from the patient's left). A film
whose two knees cannot be told apart keeps the single refused record.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from orthoseg.labels import structure
from orthoseg.measure.config import MeasurementConfig
from orthoseg.measure.drawing import MeasurementDrawing, Segment, ZoneMark
from orthoseg.measure.image import measure_image
from orthoseg.measure.result import ImageMeasurements

FEMUR = structure("femur").channel


def split_column(
    masks: np.ndarray, pixel_spacing_mm: tuple[float, float] | None, config: MeasurementConfig
) -> int | None:
    """Column between the two knees of a bilateral film, or None when two femora are not found.

    The two largest femur regions must each reach ``min_bone_area_mm2`` and must not overlap in columns.
    """
    labels, count = ndimage.label(masks[FEMUR])
    if count < 2:
        return None
    sizes = np.bincount(labels.ravel())[1:]
    first, second = (int(i) + 1 for i in np.argsort(sizes)[::-1][:2])
    area = 1.0 if pixel_spacing_mm is None else float(pixel_spacing_mm[0]) * float(pixel_spacing_mm[1])
    if sizes[second - 1] * area < config.min_bone_area_mm2:
        return None
    columns = [np.nonzero(np.any(labels == index, axis=0))[0] for index in (first, second)]
    left, right = sorted(columns, key=lambda c: float(c.mean()))
    if left.max() >= right.min():
        return None
    return int((left.max() + right.min()) // 2) + 1


def _shifted(drawing: MeasurementDrawing, columns: int) -> MeasurementDrawing:
    """The same drawing moved ``columns`` pixels to the right."""
    out = MeasurementDrawing()
    for seg in drawing.segments:
        out.segments.append(
            Segment(seg.label, (seg.start[0], seg.start[1] + columns), (seg.end[0], seg.end[1] + columns))
        )
    for zone in drawing.zones:
        points = zone.points + np.array([0.0, float(columns)])
        anchor = (zone.anchor[0], zone.anchor[1] + columns)
        out.zones.append(ZoneMark(zone.zone, zone.width_mm, anchor, points, zone.flagged))
    return out


def measure_knees(
    masks: np.ndarray,
    pixel_spacing_mm: tuple[float, float] | None,
    *,
    laterality: str = "",
    view_position: str = "",
    columns_toward_patient_left: bool = True,
    config: MeasurementConfig | None = None,
    pixels: np.ndarray | None = None,
    drawing: MeasurementDrawing | None = None,
    exposed_field: np.ndarray | None = None,
) -> list[tuple[str, ImageMeasurements]]:
    """(knee side, measurements) of every knee on the film: one for a single knee, two for a bilateral
    film whose knees separate (right knee first); the side is the film's laterality for a single knee.

    Arguments as ``measure_image``; ``drawing`` collects both knees' geometry in the film's coordinates.
    """
    config = config or MeasurementConfig()
    side = laterality.strip().upper()
    split = split_column(np.asarray(masks).astype(bool), pixel_spacing_mm, config) if side == "B" else None
    if split is None:
        result = measure_image(
            masks,
            pixel_spacing_mm,
            laterality=laterality,
            pixels=pixels,
            drawing=drawing,
            exposed_field=exposed_field,
            view_position=view_position,
            columns_toward_patient_left=columns_toward_patient_left,
            config=config,
        )
        return [(side if side in ("L", "R") else "", result)]
    # Columns run toward the patient's left on an AP: the right knee lies before the split.
    halves = [("R", slice(0, split)), ("L", slice(split, None))]
    if not columns_toward_patient_left:
        halves = [("R", slice(split, None)), ("L", slice(0, split))]
    out = []
    for knee_side, columns in sorted(halves, key=lambda h: h[0] != "R"):
        part = MeasurementDrawing()
        result = measure_image(
            masks[:, :, columns],
            pixel_spacing_mm,
            laterality=knee_side,
            pixels=None if pixels is None else pixels[:, columns],
            drawing=part,
            exposed_field=None if exposed_field is None else exposed_field[:, columns],
            view_position=view_position,
            columns_toward_patient_left=columns_toward_patient_left,
            config=config,
        )
        if drawing is not None:
            moved = _shifted(part, columns.start or 0)
            drawing.segments.extend(moved.segments)
            drawing.zones.extend(moved.zones)
        out.append((knee_side, result))
    return out
