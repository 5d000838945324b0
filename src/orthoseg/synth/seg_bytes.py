"""The ground-truth DICOM SEG of a simulated case, written directly as bytes (fast and deterministic).

The object mirrors what ``orthoseg.seg_io.build_seg(..., automatic=False)`` (highdicom) produces for a
single-frame radiograph: Segmentation Storage, BINARY, one frame per structure in label-contract
order, segments labelled by structure name with their coded category and type, per-frame derivation
references to the source image, shared pixel measures. highdicom takes ~50 ms to build and pydicom
~20 ms more to serialise such an object; encoding the few hundred bytes of header by hand takes
microseconds, which matters at ~10 images per second. ``orthoseg.seg_io.read_seg_masks`` reads it
(tested), and so does highdicom.
"""

from __future__ import annotations

import struct
from functools import lru_cache
from typing import Any

import numpy as np

from orthoseg import __version__
from orthoseg.labels import STRUCTURES
from orthoseg.synth.config import SynthCase, SynthConfig
from orthoseg.synth.dicom import seeded_uid

SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
_LONG_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}
# Attributes copied from the source image, as highdicom copies them (patient, study, de-identification).
_FROM_SOURCE = (
    "SpecificCharacterSet",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "ReferringPhysicianName",
    "StudyDescription",
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "PatientIdentityRemoved",
    "DeidentificationMethod",
    "StudyInstanceUID",
    "StudyID",
)


@lru_cache(maxsize=512)
def _tag_vr(keyword: str) -> tuple[int, str]:
    from pydicom.datadict import dictionary_VR, tag_for_keyword

    tag = tag_for_keyword(keyword)
    if tag is None:
        raise KeyError(f"unknown DICOM keyword {keyword!r}")
    vr = str(dictionary_VR(tag))
    return int(tag), vr.split(" or ")[0]  # 'OB or OW' (pixel data) -> OB, 'US or SS' -> US


def _value_bytes(vr: str, value: Any) -> bytes:
    if vr == "SQ":
        out = bytearray()
        for item in value:
            body = _dataset_bytes(item)
            out += struct.pack("<HHI", 0xFFFE, 0xE000, len(body)) + body
        return bytes(out)
    if vr in ("OB", "OW", "UN"):
        data = bytes(value)
        return data + b"\0" * (len(data) % 2)
    values = value if isinstance(value, (list, tuple)) else [value]
    if vr == "US":
        return struct.pack(f"<{len(values)}H", *values)
    if vr == "UL":
        return struct.pack(f"<{len(values)}I", *values)
    if vr == "AT":
        return b"".join(struct.pack("<HH", v >> 16, v & 0xFFFF) for v in values)
    text = "\\".join("" if v is None else str(v) for v in values).encode("latin-1")
    if len(text) % 2:
        text += b"\0" if vr == "UI" else b" "
    return text


def _element_bytes(keyword: str, value: Any) -> tuple[int, bytes]:
    tag, vr = _tag_vr(keyword)
    data = _value_bytes(vr, value)
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr.encode()
    if vr in _LONG_VRS:
        head += struct.pack("<HI", 0, len(data))
    else:
        head += struct.pack("<H", len(data))
    return tag, head + data


def _dataset_bytes(dataset: dict[str, Any]) -> bytes:
    """Explicit VR little endian encoding of a keyword -> value mapping (sequences: lists of dicts)."""
    return b"".join(data for _, data in sorted(_element_bytes(k, v) for k, v in dataset.items()))


def _code(value: str, scheme: str, meaning: str) -> dict[str, str]:
    return {"CodeValue": value, "CodingSchemeDesignator": scheme, "CodeMeaning": meaning}


def pack_frames(masks: np.ndarray) -> bytes:
    """BINARY SEG pixel data: frames' bits concatenated without padding, little-endian bit order."""
    return np.packbits(np.asarray(masks, dtype=bool).reshape(-1), bitorder="little").tobytes()


def encode_seg(
    source: Any,
    masks: np.ndarray,
    *,
    series_uid: str,
    sop_uid: str,
    content_datetime: str,
    series_description: str = "orthoseg ground truth",
) -> bytes:
    """DICOM SEG file bytes (one BINARY segment per structure, manual) for the radiograph ``source``.

    Args:
        source: the radiograph's pydicom dataset.
        masks: (7, H, W) label masks at the image's size.
        series_uid, sop_uid: UIDs of the SEG.
        content_datetime: 'YYYYMMDDHHMMSS' for every creation/content date and time.
        series_description: SeriesDescription of the SEG.
    """
    rows, columns = int(source.Rows), int(source.Columns)
    if masks.shape != (len(STRUCTURES), rows, columns):
        raise ValueError(f"masks are {masks.shape}; the image needs {(len(STRUCTURES), rows, columns)}")
    date, time = content_datetime[:8], content_datetime[8:14]
    source_ref = {
        "ReferencedSOPClassUID": str(source.SOPClassUID),
        "ReferencedSOPInstanceUID": str(source.SOPInstanceUID),
    }
    dimension_uid = seeded_uid(sop_uid, "dimension-organization")
    spacing = getattr(source, "PixelSpacing", None) or getattr(source, "ImagerPixelSpacing", None)
    acquisition = {
        k: str(getattr(source, k))
        for k in ("Manufacturer", "InstitutionName", "ManufacturerModelName", "SoftwareVersions")
        if k in source
    }
    ds: dict[str, Any] = {k: str(getattr(source, k)) for k in _FROM_SOURCE if k in source}
    ds.update(
        {
            "ImageType": ["DERIVED", "PRIMARY"],
            "InstanceCreationDate": date,
            "InstanceCreationTime": time,
            "SOPClassUID": SEGMENTATION_STORAGE,
            "SOPInstanceUID": sop_uid,
            "ContentDate": date,
            "ContentTime": time,
            "Modality": "SEG",
            "Manufacturer": "orthoseg",
            "SeriesDescription": series_description,
            "ManufacturerModelName": "orthoseg ground truth",
            "ReferencedSeriesSequence": [
                {
                    "SeriesInstanceUID": str(source.SeriesInstanceUID),
                    "ReferencedInstanceSequence": [source_ref],
                }
            ],
            "SourceImageSequence": [source_ref],
            "DeviceSerialNumber": "0",
            "SoftwareVersions": __version__,
            "ContributingEquipmentSequence": [
                {
                    **acquisition,
                    "ContributionDateTime": date + time,
                    "ContributionDescription": "Acquisition equipment of the source image(s)",
                    "PurposeOfReferenceCodeSequence": [_code("109101", "DCM", "Acquisition Equipment")],
                },
                {
                    "Manufacturer": "orthoseg",
                    "ManufacturerModelName": "orthoseg.synth",
                    "SoftwareVersions": __version__,
                    "ContributionDateTime": date + time,
                    "ContributionDescription": "Software library used to create this instance",
                    "PurposeOfReferenceCodeSequence": [_code("109102", "DCM", "Processing Equipment")],
                },
            ],
            "SeriesInstanceUID": series_uid,
            "SeriesNumber": "900",
            "InstanceNumber": "1",
            "DimensionOrganizationSequence": [{"DimensionOrganizationUID": dimension_uid}],
            "DimensionIndexSequence": [
                {
                    "DimensionOrganizationUID": dimension_uid,
                    "DimensionIndexPointer": 0x0062000B,
                    "FunctionalGroupPointer": 0x0062000A,
                    "DimensionDescriptionLabel": "Referenced Segment Number",
                }
            ],
            "SamplesPerPixel": 1,
            "PhotometricInterpretation": "MONOCHROME2",
            "NumberOfFrames": str(len(STRUCTURES)),
            "Rows": rows,
            "Columns": columns,
            "BitsAllocated": 1,
            "BitsStored": 1,
            "HighBit": 0,
            "PixelRepresentation": 0,
            "LossyImageCompression": "00",
            "SegmentationType": "BINARY",
            "SegmentSequence": [
                {
                    "SegmentedPropertyCategoryCodeSequence": [
                        _code(s.category.value, s.category.scheme, s.category.meaning)
                    ],
                    "SegmentNumber": s.channel + 1,
                    "SegmentLabel": s.name,
                    "SegmentAlgorithmType": "MANUAL",
                    "SegmentedPropertyTypeCodeSequence": [
                        _code(s.property_type.value, s.property_type.scheme, s.property_type.meaning)
                    ],
                }
                for s in STRUCTURES
            ],
            "SegmentsOverlap": "YES",
            "ContentLabel": "GROUND_TRUTH",
            "ContentDescription": "",
            "ContentCreatorName": "",
            "PresentationLUTShape": "IDENTITY",
            "PerFrameFunctionalGroupsSequence": [
                {
                    "DerivationImageSequence": [
                        {
                            "SourceImageSequence": [
                                {
                                    **source_ref,
                                    "SpatialLocationsPreserved": "YES",
                                    "PurposeOfReferenceCodeSequence": [
                                        _code("121322", "DCM", "Source image for image processing operation")
                                    ],
                                }
                            ],
                            "DerivationCodeSequence": [_code("113076", "DCM", "Segmentation")],
                        }
                    ],
                    "FrameContentSequence": [{"DimensionIndexValues": s.channel + 1}],
                    "SegmentIdentificationSequence": [{"ReferencedSegmentNumber": s.channel + 1}],
                }
                for s in STRUCTURES
            ],
            "PixelData": pack_frames(masks),
        }
    )
    if spacing is not None:
        ds["SharedFunctionalGroupsSequence"] = [
            {
                "PixelMeasuresSequence": [
                    {"SliceThickness": "1.0", "PixelSpacing": [str(spacing[0]), str(spacing[1])]}
                ]
            }
        ]
    meta = _dataset_bytes(
        {
            "FileMetaInformationVersion": b"\x00\x01",
            "MediaStorageSOPClassUID": SEGMENTATION_STORAGE,
            "MediaStorageSOPInstanceUID": sop_uid,
            "TransferSyntaxUID": EXPLICIT_VR_LITTLE_ENDIAN,
            "ImplementationClassUID": "1.2.826.0.1.3680043.10.1467.1",
            "ImplementationVersionName": "ORTHOSEG_" + __version__.replace(".", "")[:6],
        }
    )
    group_length = _dataset_bytes({"FileMetaInformationGroupLength": len(meta)})
    return b"\0" * 128 + b"DICM" + group_length + meta + _dataset_bytes(ds)


def build_label_seg(case: SynthCase, config: SynthConfig) -> bytes:
    """SEG file bytes for ``case``: seven BINARY segments (label contract), manual (ground truth)."""
    del config
    uid = case.sop_instance_uid
    return encode_seg(
        case.dataset,
        case.masks,
        series_uid=seeded_uid(uid, "seg-series"),
        sop_uid=seeded_uid(uid, "seg-instance"),
        content_datetime=str(case.dataset.StudyDate) + str(case.dataset.StudyTime),
    )
