"""Which earlier results a re-run of inference keeps: only complete ones; anything unreadable is redone."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from orthoseg.inference import _completed_rows
from orthoseg.inference_source import InferenceSource
from orthoseg.inference_writer import row_key
from orthoseg.storage import LocalStore

OUT = "inference/run1"


def test_only_complete_rows_count_as_done(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = LocalStore(str(tmp_path))
    keys = ("a.dcm", "b.dcm", "c.dcm", "d.dcm", "e.dcm", "f.dcm", "g.dcm")
    source = InferenceSource(
        store_uri=str(tmp_path), endpoint_url=None, keys=keys, canonical="test", sizes_bytes={"e.dcm": 10}
    )

    def put_row(key: str, body: bytes) -> None:
        store.put_bytes(row_key(OUT, key), body)

    for key in ("a.dcm", "b.dcm"):  # ok rows; only a's SEG and overlay were written
        put_row(
            key,
            json.dumps(
                {"status": "ok", "seg_key": f"{OUT}/{key}.seg", "overlay_key": f"{OUT}/{key}.png"}
            ).encode(),
        )
    store.put_bytes(f"{OUT}/a.dcm.seg", b"seg")
    store.put_bytes(f"{OUT}/a.dcm.png", b"png")
    put_row("c.dcm", b'{"status": "ok", "seg_')  # cut off mid-write
    put_row("d.dcm", b"[1, 2]")  # JSON, but not a row
    put_row("e.dcm", json.dumps({"status": "failed", "retryable": False, "input_size_bytes": 10}).encode())
    put_row("f.dcm", json.dumps({"status": "failed", "retryable": True}).encode())
    # g.dcm: no row at all
    with caplog.at_level(logging.INFO, logger="orthoseg.inference"):
        done = _completed_rows(store, OUT, source)
    assert sorted(done) == ["a.dcm", "e.dcm"]
    assert "redoing c.dcm" in caplog.text and "redoing d.dcm" in caplog.text

    source_changed = InferenceSource(
        store_uri=str(tmp_path), endpoint_url=None, keys=keys, canonical="test", sizes_bytes={"e.dcm": 11}
    )
    assert sorted(_completed_rows(store, OUT, source_changed)) == ["a.dcm"]  # the file changed: try again
