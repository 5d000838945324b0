"""The inference writer: per-image files, completion markers, and the clean-up after a killed run."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import pytest

from orthoseg.inference_analysis import ImageAnalysis
from orthoseg.inference_writer import ResultWriter, remove_stale_temp_files, row_key
from orthoseg.radiograph import Radiograph
from orthoseg.storage import LocalStore, StoreError

PREFIX = "predictions/3/run1"


def _writer(store: LocalStore) -> ResultWriter:
    return ResultWriter(store, PREFIX, "orthoseg-knee", "3", "run1", overlay_max_side_px=256)


def _temp_file(directory: Path) -> Path:
    """A temporary file named exactly as ``LocalStore.put_bytes`` names its own."""
    directory.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    with open(fd, "wb") as handle:
        handle.write(b"half a SEG")
    return Path(name)


def test_stale_temp_files_of_the_run_are_removed_and_nothing_else(local_store: LocalStore) -> None:
    run = local_store.local_path(PREFIX)
    local_store.put_bytes(f"{PREFIX}/seg/1.2.dcm", b"whole SEG")
    local_store.put_bytes(f"{PREFIX}/measurements.parquet", b"table")
    stale = [_temp_file(run / folder) for folder in ("seg", "overlays", "thumbnails", "rows")]
    stale.append(_temp_file(run))  # the driver's files (measurements.parquet, report.html) at the root
    kept = [
        run / "seg" / ".tmp-notours.txt",  # not the writer's naming
        run / "seg" / ".tmp-abc",
        run / "rows" / "x.tmp-abcd1234",
        run / "seg" / "deeper" / ".tmp-abcd1234",  # not a folder the writer writes into
        local_store.local_path("predictions/3/other-run/seg") / ".tmp-abcd1234",  # another run
        local_store.local_path("incoming/b1/images") / ".tmp-abcd1234",
    ]
    for path in kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    (run / "overlays" / ".tmp-zzzzzzzz").mkdir()  # a folder, whatever its name

    assert remove_stale_temp_files(local_store, PREFIX) == len(stale)

    assert not any(path.exists() for path in stale)
    assert all(path.exists() for path in kept)
    assert (run / "overlays" / ".tmp-zzzzzzzz").is_dir()
    assert local_store.get_bytes(f"{PREFIX}/seg/1.2.dcm") == b"whole SEG"
    assert local_store.get_bytes(f"{PREFIX}/measurements.parquet") == b"table"
    # Nothing there (a first run), or nothing left: nothing to do.
    assert remove_stale_temp_files(local_store, PREFIX) == 0
    assert remove_stale_temp_files(local_store, "predictions/3/never-ran") == 0


def test_a_store_without_temporary_files_is_left_alone() -> None:
    class NoFiles:
        def list_keys(self, prefix: str = "") -> list[str]:
            raise AssertionError("an object store is not listed for temporary files")

    assert remove_stale_temp_files(NoFiles(), PREFIX) == 0  # type: ignore[arg-type]


def _analysis() -> ImageAnalysis:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    pixels = np.random.default_rng(0).integers(0, 4000, (48, 40)).astype(np.uint16)
    header = Dataset()
    header.file_meta = FileMetaDataset()
    header.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    header.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    header.SOPInstanceUID, header.StudyInstanceUID, header.SeriesInstanceUID = (
        "1.2.3",
        generate_uid(),
        "1.2.4",
    )
    header.Modality, header.PatientID, header.PatientName = "DX", "P1", "TEST^P"
    header.Rows, header.Columns = pixels.shape
    header.BitsAllocated, header.BitsStored, header.HighBit, header.PixelRepresentation = 16, 12, 11, 0
    header.SamplesPerPixel, header.PhotometricInterpretation = 1, "MONOCHROME2"
    header.PixelData = pixels.tobytes()
    masks = np.zeros((7, *pixels.shape), bool)
    masks[0, 5:20, 5:20] = True
    radiograph = Radiograph(pixels.astype(np.float32), (0.2, 0.2), "1.2.3", "MONOCHROME2")
    return ImageAnalysis(radiograph, header, masks=masks)


def test_an_image_is_written_under_its_uid(local_store: LocalStore) -> None:
    writer = _writer(local_store)
    written = writer.write_image(_analysis())
    assert written.seg_key == f"{PREFIX}/seg/1.2.3.dcm"
    assert local_store.get_bytes(written.seg_key)[128:132] == b"DICM"
    assert local_store.get_bytes(written.overlay_key)[:8] == b"\x89PNG\r\n\x1a\n"
    assert local_store.get_bytes(written.thumbnail_key)[:3] == b"\xff\xd8\xff"
    # No half file and no temporary file left beside them.
    assert not list(local_store.local_path(PREFIX).rglob(".tmp-*"))

    failed = ImageAnalysis(_analysis().radiograph, None, error=ValueError("no canvas"))
    with pytest.raises(ValueError, match="no canvas"):
        writer.write_image(failed)


def test_a_marker_that_cannot_be_written_is_logged_and_returned(
    local_store: LocalStore, caplog: pytest.LogCaptureFixture
) -> None:
    class Full(LocalStore):
        def put_bytes(self, key: str, data: bytes) -> None:
            raise StoreError("disk full")

    assert _writer(local_store).write_marker("a.dcm", '{"status": "ok"}') is None
    assert local_store.get_bytes(row_key(PREFIX, "a.dcm")) == b'{"status": "ok"}'
    with caplog.at_level(logging.ERROR):
        assert _writer(Full(local_store.root)).write_marker("b.dcm", "{}") == "StoreError: disk full"
    assert "completion marker" in caplog.text and "b.dcm" not in caplog.text  # keys stay out of logs
