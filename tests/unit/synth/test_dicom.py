"""DICOM conformance: the DX carries what a de-identified clinical export carries; the SEG references it."""

from __future__ import annotations

import io

import highdicom as hd
import numpy as np
import pydicom

from orthoseg.labels import STRUCTURE_NAMES
from orthoseg.radiograph import read_radiograph
from orthoseg.seg_io import read_seg_masks
from orthoseg.synth import SynthCase, SynthConfig
from orthoseg.synth.dicom import DX_PRESENTATION_SOP_CLASS
from orthoseg.synth.generate import encode_case

REQUIRED = (
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "Modality",
    "BodyPartExamined",
    "ViewPosition",
    "ImageLaterality",
    "ImagerPixelSpacing",
    "PixelSpacing",
    "PatientOrientation",
    "BitsStored",
    "BitsAllocated",
    "HighBit",
    "PhotometricInterpretation",
    "Manufacturer",
    "PatientIdentityRemoved",
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "AccessionNumber",
    "StudyID",
    "PresentationIntentType",
    "WindowCenter",
    "WindowWidth",
    "KVP",
    "DistanceSourceToDetector",
    "SeriesNumber",
    "InstanceNumber",
)


def test_dx_has_the_tags_of_a_deidentified_export(
    small_cases: list[SynthCase], small_config: SynthConfig
) -> None:
    for case in small_cases[:8]:
        files = encode_case(case, small_config)
        image_key = next(k for k in files if k.startswith("images/"))
        ds = pydicom.dcmread(io.BytesIO(files[image_key]))
        for keyword in REQUIRED:
            assert keyword in ds, keyword
        assert ds.SOPClassUID == DX_PRESENTATION_SOP_CLASS
        assert ds.file_meta.MediaStorageSOPClassUID == DX_PRESENTATION_SOP_CLASS
        assert ds.Modality == "DX" and ds.BodyPartExamined == "KNEE"
        assert ds.ViewPosition in ("AP", "LL")
        assert ds.ImageLaterality in ("L", "R", "B")
        assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation) == (16, 12, 11, 0)
        assert ds.PatientIdentityRemoved == "YES"
        assert str(ds.PatientName).startswith("SYNTH^") and ds.PatientID.startswith("SYN")
        assert float(ds.PixelSpacing[0]) < float(ds.ImagerPixelSpacing[0])  # magnification-corrected
        radiograph = read_radiograph(files[image_key])
        assert radiograph.sop_instance_uid == case.sop_instance_uid
        assert radiograph.pixel_spacing_mm == (float(ds.PixelSpacing[0]), float(ds.PixelSpacing[1]))
        assert radiograph.pixels.shape == case.masks.shape[1:]


def test_seg_opens_with_highdicom_and_references_its_image(
    small_cases: list[SynthCase], small_config: SynthConfig
) -> None:
    for case in small_cases[:6]:
        files = encode_case(case, small_config)
        seg_bytes = files[f"labels/{case.sop_instance_uid}.dcm"]
        seg = hd.seg.Segmentation.from_dataset(pydicom.dcmread(io.BytesIO(seg_bytes)))
        assert seg.SegmentationType == "BINARY"
        assert [s.SegmentLabel for s in seg.SegmentSequence] == list(STRUCTURE_NAMES)
        referenced = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID
        assert referenced == case.sop_instance_uid
        assert seg.StudyInstanceUID == case.dataset.StudyInstanceUID
        assert seg.PatientID == case.dataset.PatientID
        masks, uid = read_seg_masks(seg_bytes)
        assert uid == case.sop_instance_uid
        assert np.array_equal(masks, case.masks)
        # pydicom writes back exactly the same bytes: the hand-encoded file is well formed.
        buffer = io.BytesIO()
        pydicom.dcmread(io.BytesIO(seg_bytes)).save_as(buffer, enforce_file_format=True)
        assert buffer.getvalue() == seg_bytes


def test_paired_views_share_patient_and_study(small_cases: list[SynthCase]) -> None:
    by_study: dict[str, list[SynthCase]] = {}
    for case in small_cases:
        by_study.setdefault(str(case.dataset.StudyInstanceUID), []).append(case)
    pairs = [cases for cases in by_study.values() if len(cases) == 2]
    assert pairs
    for first, second in pairs:
        assert first.dataset.PatientID == second.dataset.PatientID
        assert {first.truth["view"], second.truth["view"]} == {"AP", "LAT"}
        assert first.truth["design_family"] == second.truth["design_family"]
        assert first.truth["joint_space_medial_mm"] == second.truth["joint_space_medial_mm"]
        assert first.sop_instance_uid != second.sop_instance_uid


def test_fast_seg_matches_highdicom_build_seg(small_cases: list[SynthCase]) -> None:
    from orthoseg.seg_io import build_seg, seg_to_bytes
    from orthoseg.synth.seg_bytes import encode_seg

    case = small_cases[3]
    options = {"series_instance_uid": "1.2.826.0.1.1", "sop_instance_uid": "1.2.826.0.1.2"}
    reference = build_seg(
        case.dataset, case.masks, automatic=False, content_datetime="20240102030405", **options
    )
    again = build_seg(case.dataset, case.masks, automatic=False, content_datetime="20240102030405", **options)
    assert seg_to_bytes(reference) == seg_to_bytes(again)  # fixed UIDs and clock: byte-identical
    fast = pydicom.dcmread(
        io.BytesIO(
            encode_seg(
                case.dataset,
                case.masks,
                series_uid="1.2.826.0.1.1",
                sop_uid="1.2.826.0.1.2",
                content_datetime="20240102030405",
            )
        )
    )
    for keyword in (
        "SOPClassUID",
        "Modality",
        "SegmentationType",
        "Rows",
        "Columns",
        "NumberOfFrames",
        "BitsAllocated",
        "PatientID",
        "StudyInstanceUID",
        "SegmentsOverlap",
        "SeriesNumber",
    ):
        assert fast[keyword].value == reference[keyword].value, keyword
    assert [s.SegmentLabel for s in fast.SegmentSequence] == [
        s.SegmentLabel for s in reference.SegmentSequence
    ]
    assert fast.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing == (
        reference.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
    )
    assert fast.PixelData == reference.PixelData
    assert np.array_equal(read_seg_masks(seg_to_bytes(reference))[0], read_seg_masks(seg_to_bytes(fast))[0])


def test_patient_orientation_matches_the_anatomy() -> None:
    """Columns run toward the patient's left on AP; on a lateral, toward the side the patella is on."""
    from orthoseg.labels import BY_NAME
    from orthoseg.synth.case import generate_case

    config = SynthConfig(count=8, seed=5, image_px=256, views=("LAT",), category_weights={"native": 1.0})
    seen = set()
    for index in range(8):
        case = generate_case(index, config)
        columns = np.arange(case.masks.shape[2])
        patella, femur = case.masks[BY_NAME["patella"].channel], case.masks[BY_NAME["femur"].channel]
        if not patella.any():
            continue
        patella_column = float((patella.sum(0) * columns).sum() / patella.sum())
        femur_column = float((femur.sum(0) * columns).sum() / femur.sum())
        expected = "A" if patella_column > femur_column else "P"
        assert case.dataset.PatientOrientation[0] == expected, (index, case.dataset.ImageLaterality)
        seen.add(str(case.dataset.ImageLaterality))
    assert seen == {"L", "R"}
