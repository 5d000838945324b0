"""DICOM SEG round trip: the masks that go in come out, referencing their image."""

from __future__ import annotations

import highdicom as hd
import numpy as np
import pydicom
import pytest

from orthoseg.seg_io import SegmentationError, build_seg, read_seg_masks, seg_to_bytes
from tests.dicom_factory import make_dx, to_bytes


def _masks(shape: tuple[int, int]) -> np.ndarray:
    masks = np.zeros((7, *shape), dtype=bool)
    masks[0, 10:60, 10:90] = True
    masks[3, 20:40, 30:70] = True  # patella overlaps the femur: multi-label
    masks[4, 40:70, 20:80] = True
    return masks


def test_round_trip_keeps_every_overlapping_mask() -> None:
    source = make_dx(np.zeros((100, 100), np.uint16))
    masks = _masks((100, 100))
    data = seg_to_bytes(build_seg(source, masks, automatic=False))
    restored, referenced_uid = read_seg_masks(data)
    np.testing.assert_array_equal(restored, masks)
    assert referenced_uid == source.SOPInstanceUID


def test_seg_is_a_valid_highdicom_binary_seg_with_coded_segments() -> None:
    source = make_dx(np.zeros((64, 64), np.uint16))
    data = seg_to_bytes(
        build_seg(source, _masks((64, 64))[:, :64, :64], automatic=True, algorithm="orthoseg-knee v1")
    )
    seg = hd.seg.segread(pydicom.filebase.DicomBytesIO(data))
    assert seg.SegmentationType == "BINARY"
    labels = [item.SegmentLabel for item in seg.SegmentSequence]
    assert labels[0] == "femur" and labels[-1] == "cement"
    assert seg.SegmentSequence[0].SegmentAlgorithmType == "AUTOMATIC"


def test_source_without_type2_attributes_still_builds() -> None:
    source = make_dx(np.zeros((32, 32), np.uint16))
    for keyword in ("StudyInstanceUID",):
        assert keyword in source
    assert "PatientBirthDate" not in source and "AccessionNumber" not in source
    build_seg(source, np.zeros((7, 32, 32), bool), automatic=False)
    assert "PatientBirthDate" not in source  # the caller's dataset is left untouched


def test_wrong_shapes_and_non_seg_files_are_refused() -> None:
    source = make_dx(np.zeros((32, 32), np.uint16))
    with pytest.raises(ValueError, match="shape"):
        build_seg(source, np.zeros((3, 32, 32), bool), automatic=False)
    with pytest.raises(ValueError, match="image is"):
        build_seg(source, np.zeros((7, 16, 32), bool), automatic=False)
    with pytest.raises(SegmentationError, match="not a segmentation"):
        read_seg_masks(to_bytes(source))
