"""DICOM SEG in and out: multi-label masks (one BINARY segment per structure) referencing their image."""

from __future__ import annotations

import copy
import io
import logging
from typing import TYPE_CHECKING

import numpy as np

from orthoseg import __version__
from orthoseg.labels import NUM_STRUCTURES, STRUCTURES, CodedConcept, Structure

if TYPE_CHECKING:
    from highdicom.seg import Segmentation, SegmentDescription
    from pydicom import Dataset
    from pydicom.sr.coding import Code

logger = logging.getLogger(__name__)

# Type-2 patient/study attributes highdicom copies from the source image; real exports may lack them.
_TYPE2_SOURCE_ATTRIBUTES = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "AccessionNumber",
    "StudyID",
)


class SegmentationError(ValueError):
    """A SEG that cannot be read as this project's label masks; the message says why."""


def _code(concept: CodedConcept) -> Code:
    from pydicom.sr.coding import Code

    return Code(concept.value, concept.scheme, concept.meaning)


def _segment_description(
    structure: Structure, number: int, automatic: bool, algorithm: str
) -> SegmentDescription:
    import highdicom as hd

    algorithm_identification = None
    algorithm_type = hd.seg.SegmentAlgorithmTypeValues.MANUAL
    if automatic:
        algorithm_type = hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC
        algorithm_identification = hd.AlgorithmIdentificationSequence(
            name=algorithm,
            version=__version__,
            family=_code_obj("123109", "DCM", "Artificial Intelligence"),
        )
    return hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=structure.name,
        segmented_property_category=_code(structure.category),
        segmented_property_type=_code(structure.property_type),
        algorithm_type=algorithm_type,
        algorithm_identification=algorithm_identification,
        tracking_uid=None,
        tracking_id=None,
    )


def _code_obj(value: str, scheme: str, meaning: str) -> Code:
    from pydicom.sr.coding import Code

    return Code(value, scheme, meaning)


def prepare_source(source: Dataset) -> Dataset:
    """A copy of the source image carrying what highdicom needs to reference it.

    Real exports often omit type-2 attributes (empty is legal, absent is not for highdicom), and
    projection images with PixelSpacing need a SliceThickness for the SEG's pixel measures.
    """
    prepared = copy.deepcopy(source)
    for keyword in _TYPE2_SOURCE_ATTRIBUTES:
        if keyword not in prepared:
            setattr(prepared, keyword, "")
    if "PixelSpacing" not in prepared:
        spacing = getattr(prepared, "ImagerPixelSpacing", None)
        if spacing is not None:
            prepared.PixelSpacing = list(spacing)
    if "PixelSpacing" in prepared and "SliceThickness" not in prepared:
        prepared.SliceThickness = 1.0
    return prepared


def build_seg(
    source: Dataset,
    masks: np.ndarray,
    *,
    automatic: bool,
    algorithm: str = "orthoseg",
    series_description: str = "orthoseg segmentation",
    series_number: int = 900,
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
    content_datetime: str | None = None,
) -> Segmentation:
    """Build a DICOM SEG (BINARY) for one radiograph.

    Args:
        source: the radiograph's pydicom dataset (pixels not needed).
        masks: (C, H, W) boolean masks in label-contract channel order, at the image's native size.
        automatic: True for model output (algorithm identification recorded), False for ground truth.
        algorithm: algorithm name for automatic segments, e.g. ``orthoseg-knee v3``.
        series_description: SeriesDescription of the SEG.
        series_number: SeriesNumber of the SEG.
        series_instance_uid: SeriesInstanceUID of the SEG; a new random UID when None.
        sop_instance_uid: SOPInstanceUID of the SEG; a new random UID when None.
        content_datetime: 'YYYYMMDDHHMMSS' written to every creation/content date and time instead of
            the clock; together with the two UIDs (and a DimensionOrganizationUID derived from the
            SOPInstanceUID) this makes the SEG byte-identical across runs, as the simulator needs.

    Returns:
        A ``highdicom.seg.Segmentation`` (a pydicom Dataset).

    Raises:
        ValueError: when the masks do not match the label contract or the image size.
    """
    import highdicom as hd
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    masks = np.asarray(masks)
    if masks.ndim != 3 or masks.shape[0] != NUM_STRUCTURES:
        raise ValueError(f"masks must have shape ({NUM_STRUCTURES}, H, W); got {masks.shape}")
    rows, columns = int(source.Rows), int(source.Columns)
    if masks.shape[1:] != (rows, columns):
        raise ValueError(f"masks are {masks.shape[1:]} but the image is {(rows, columns)}")
    prepared = prepare_source(source)
    descriptions = [
        _segment_description(structure, index + 1, automatic, algorithm)
        for index, structure in enumerate(STRUCTURES)
    ]
    # highdicom wants (frames, rows, columns, segments); one frame here.
    pixel_array = np.moveaxis(masks.astype(np.uint8), 0, -1)[None]
    seg = hd.seg.Segmentation(
        source_images=[prepared],
        pixel_array=pixel_array,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=series_instance_uid or generate_uid(),
        series_number=series_number,
        sop_instance_uid=sop_instance_uid or generate_uid(),
        instance_number=1,
        manufacturer="orthoseg",
        manufacturer_model_name=algorithm if automatic else "orthoseg ground truth",
        software_versions=__version__,
        device_serial_number="0",
        series_description=series_description,
        transfer_syntax_uid=ExplicitVRLittleEndian,
        omit_empty_frames=False,
    )
    if content_datetime is not None:
        _fix_clock_and_random_values(seg, content_datetime)
    return seg


def _fix_clock_and_random_values(seg: Dataset, content_datetime: str) -> None:
    """Replace what highdicom takes from the clock or draws at random with values fixed by the caller."""
    import uuid

    date, time = content_datetime[:8], content_datetime[8:14] or "000000"
    seg.InstanceCreationDate = date
    seg.InstanceCreationTime = time
    seg.ContentDate = date
    seg.ContentTime = time
    if "SeriesDate" in seg:
        seg.SeriesDate = date
        seg.SeriesTime = time
    for item in getattr(seg, "ContributingEquipmentSequence", []):
        if "ContributionDateTime" in item:
            item.ContributionDateTime = date + time
    sop_uid = str(seg.SOPInstanceUID)
    # Name-based UUID (pydicom's generate_uid ignores entropy sources when prefix is None).
    dimension_uid = f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, sop_uid + '|dimension-organization').int}"
    for sequence in ("DimensionOrganizationSequence", "DimensionIndexSequence"):
        for item in getattr(seg, sequence, []):
            if "DimensionOrganizationUID" in item:
                item.DimensionOrganizationUID = dimension_uid


def seg_to_bytes(seg: Dataset) -> bytes:
    """Serialise a SEG (or any pydicom dataset) to DICOM file bytes."""
    buffer = io.BytesIO()
    seg.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def read_seg_masks(data: bytes) -> tuple[np.ndarray, str]:
    """Read a SEG into (C, H, W) boolean masks in label-contract order.

    Segments are matched to structures by their label (the structure's machine name); a structure with
    no segment comes back empty.

    Returns:
        The masks and the SOPInstanceUID of the image the SEG references.

    Raises:
        SegmentationError: for files that are not a single-image SEG, or name unknown structures.
    """
    import highdicom as hd
    import pydicom

    try:
        dataset = pydicom.dcmread(io.BytesIO(data))
    except Exception as error:
        raise SegmentationError(f"unreadable DICOM: {type(error).__name__}: {error}") from None
    if str(getattr(dataset, "Modality", "")) != "SEG":
        raise SegmentationError(f"not a segmentation (Modality={getattr(dataset, 'Modality', '')!r})")
    try:
        seg = hd.seg.Segmentation.from_dataset(dataset, copy=False)
        referenced = [
            instance.ReferencedSOPInstanceUID
            for series in seg.ReferencedSeriesSequence
            for instance in series.ReferencedInstanceSequence
        ]
    except Exception as error:
        raise SegmentationError(f"invalid SEG: {type(error).__name__}: {error}") from None
    if len(referenced) != 1:
        raise SegmentationError(f"SEG references {len(referenced)} images; expected exactly one")
    names = {structure.name: structure.channel for structure in STRUCTURES}
    numbers: dict[int, int] = {}
    for description in seg.SegmentSequence:
        label = str(description.SegmentLabel)
        if label not in names:
            raise SegmentationError(f"SEG segment {label!r} is not a known structure ({', '.join(names)})")
        numbers[int(description.SegmentNumber)] = names[label]
    rows, columns = int(seg.Rows), int(seg.Columns)
    masks = np.zeros((NUM_STRUCTURES, rows, columns), dtype=bool)
    try:
        pixels = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=[referenced[0]],
            segment_numbers=sorted(numbers),
            combine_segments=False,
            skip_overlap_checks=True,
        )
    except Exception as error:
        raise SegmentationError(f"SEG pixels could not be read: {type(error).__name__}: {error}") from None
    for position, number in enumerate(sorted(numbers)):
        masks[numbers[number]] = pixels[0, :, :, position] > 0
    return masks, str(referenced[0])
