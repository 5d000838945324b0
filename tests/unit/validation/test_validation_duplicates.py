"""Copies of one image (same SOPInstanceUID): the best readable copy is kept whatever the listing order."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from orthoseg.storage import LocalStore
from orthoseg.validation import ValidationConfig
from orthoseg.validation.duplicates import mark_duplicates
from orthoseg.validation.inventory import take_inventory
from orthoseg.validation.reader import ReaderContext, read_image
from tests.validation_builders import dicom_bytes, dx_dataset, uid_for


def _read_rows(tmp_path: Path, files: dict[str, bytes], header_only: bool = False) -> list[dict[str, Any]]:
    """Real reader rows (in this process) of the given files."""
    for key, data in files.items():
        (tmp_path / key).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / key).write_bytes(data)
    store = LocalStore(tmp_path)
    context = ReaderContext(store.uri, None, header_only, ValidationConfig(workers=1), "salt")
    return [read_image(store, file, context) for file in take_inventory(store).images]


def _verdicts(rows: list[dict[str, Any]]) -> dict[str, str]:
    return {row["file_key"]: row["duplicate_of"] for row in rows if row["readable"]}


def test_the_complete_copy_is_kept_over_a_truncated_one_in_every_listing_order(tmp_path: Path) -> None:
    complete = dicom_bytes(dx_dataset(1))
    files = {
        "images/a_resent_truncated.dcm": complete[: len(complete) * 2 // 3],
        "images/m_complete.dcm": complete,
        "images/z_cut_short.dcm": complete[: len(complete) - 100],
    }
    rows = _read_rows(tmp_path, files)
    by_key = {row["file_key"]: row for row in rows}
    # The truncated copies parse (their header is whole) but their pixels do not decode.
    assert by_key["images/a_resent_truncated.dcm"]["readable"] is True
    assert by_key["images/a_resent_truncated.dcm"]["pixel_decoded"] is False
    for order in itertools.permutations(rows):
        fresh = [dict(row) for row in order]
        kept = mark_duplicates(fresh, known={})
        assert kept == {uid_for(1): "images/m_complete.dcm"}
        assert _verdicts(fresh) == {
            "images/a_resent_truncated.dcm": "images/m_complete.dcm",
            "images/m_complete.dcm": "",
            "images/z_cut_short.dcm": "images/m_complete.dcm",
        }
    refused = next(r for r in fresh if r["file_key"] == "images/a_resent_truncated.dcm")
    detail = refused["duplicate_detail"]
    assert "images/m_complete.dcm, which is kept" in detail and uid_for(1) in detail
    assert "its pixels do not decode" in detail and "pixel data truncated" in detail


def test_equal_copies_keep_the_first_key_and_header_only_rows_keep_the_larger(tmp_path: Path) -> None:
    data = dicom_bytes(dx_dataset(2))
    rows = _read_rows(tmp_path / "full", {"images/b.dcm": data, "images/a.dcm": data})
    mark_duplicates(rows, known={})
    assert _verdicts(rows) == {"images/a.dcm": "", "images/b.dcm": "images/a.dcm"}
    # A header-only pre-screen decodes nothing: the larger copy (not cut short) is kept.
    header_rows = _read_rows(
        tmp_path / "header",
        {"images/a_short.dcm": data[: len(data) - 64], "images/b_whole.dcm": data},
        header_only=True,
    )
    assert all(row["pixel_decoded"] is None for row in header_rows)
    mark_duplicates(header_rows, known={})
    assert _verdicts(header_rows) == {"images/a_short.dcm": "images/b_whole.dcm", "images/b_whole.dcm": ""}


def test_the_copy_matching_the_dataset_wins_and_unreadable_files_are_no_copies(tmp_path: Path) -> None:
    original = dx_dataset(3)
    edited = dx_dataset(3)
    edited.ImageComments = "re-exported with a longer header, same image"
    rows = _read_rows(
        tmp_path,
        {
            "images/a_reexport.dcm": dicom_bytes(edited),
            "images/b_original.dcm": dicom_bytes(original),
            "images/c_header_cut.dcm": dicom_bytes(original)[:300],
        },
    )
    known_sha = next(r["sha256"] for r in rows if r["file_key"] == "images/b_original.dcm")
    kept = mark_duplicates(rows, known={uid_for(3): known_sha})
    assert kept == {uid_for(3): "images/b_original.dcm"}
    by_key = {row["file_key"]: row for row in rows}
    assert by_key["images/a_reexport.dcm"]["duplicate_of"] == "images/b_original.dcm"
    assert by_key["images/a_reexport.dcm"]["dataset_conflict"] is True
    assert (
        "differs from the copy already in the dataset" in by_key["images/a_reexport.dcm"]["duplicate_detail"]
    )
    # Unreadable: not a copy of anything (refused as unreadable), and never the copy kept.
    assert by_key["images/c_header_cut.dcm"]["readable"] is False
    assert by_key["images/c_header_cut.dcm"]["duplicate_of"] is None


def test_a_copy_refused_on_its_own_never_costs_a_clean_copy(tmp_path: Path) -> None:
    clean, mislabelled = dx_dataset(4), dx_dataset(4)
    mislabelled.ImagerPixelSpacing = [5.0, 5.0]
    mislabelled.ImageComments = "a longer header: this copy is the larger file"
    rows = _read_rows(
        tmp_path,
        {"images/a_mislabelled.dcm": dicom_bytes(mislabelled), "images/b_clean.dcm": dicom_bytes(clean)},
    )
    assert all(row["pixel_decoded"] for row in rows)
    without = [dict(row) for row in rows]
    assert mark_duplicates(without, known={}) == {uid_for(4): "images/a_mislabelled.dcm"}  # the larger file
    refused = {"images/a_mislabelled.dcm": ["pixel_spacing_implausible"]}
    for order in (rows, rows[::-1]):
        fresh = [dict(row) for row in order]
        assert mark_duplicates(fresh, known={}, refused=refused) == {uid_for(4): "images/b_clean.dcm"}
    detail = next(r for r in fresh if r["file_key"] == "images/a_mislabelled.dcm")["duplicate_detail"]
    assert "this copy: refused on its own for pixel_spacing_implausible" in detail
