"""Reading a store's Parquet table must not make the process that read it abort at exit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd

from orthoseg.parquet import frame_from_parquet_bytes

READ_AND_EXIT = """
import sys
from pathlib import Path
from orthoseg.parquet import frame_from_parquet_bytes
frame = frame_from_parquet_bytes(Path(sys.argv[1]).read_bytes())
print(len(frame), frame["sop_instance_uid"].iloc[-1])
"""


def _manifest_like(rows: int) -> pd.DataFrame:
    """Shaped like a dataset manifest: a dozen and more text and number columns, one of them all null."""
    columns: dict[str, list[object]] = {
        "sop_instance_uid": [f"1.2.826.0.1.{index}" for index in range(rows)],
        "truth_key": [None] * rows,
        "rows": [2048 + index for index in range(rows)],
        "pixel_spacing_mm": [0.143] * rows,
    }
    for name in ("image_key", "label_key", "sha256", "split", "batch", "view", "laterality", "modality"):
        columns[name] = [f"{name}-{index % 7}" for index in range(rows)]
    for name in ("columns", "bits", "spacing_col_mm", "exposure"):
        columns[name] = [float(index) for index in range(rows)]
    return pd.DataFrame(columns)


def test_the_table_comes_back_whole(tmp_path: Path) -> None:
    frame = _manifest_like(400)
    path = tmp_path / "manifest.parquet"
    frame.to_parquet(path)
    pd.testing.assert_frame_equal(frame_from_parquet_bytes(path.read_bytes()), frame)


def test_a_process_that_reads_a_table_and_exits_exits_cleanly(tmp_path: Path) -> None:
    """pyarrow's threaded read made short commands abort at shutdown (SIGABRT) in most runs here."""
    path = tmp_path / "manifest.parquet"
    _manifest_like(40).to_parquet(path)
    outcomes = [
        subprocess.run(
            [sys.executable, "-c", READ_AND_EXIT, str(path)], capture_output=True, text=True, check=False
        )
        for _ in range(10)
    ]
    assert [(run.returncode, run.stderr.strip()) for run in outcomes] == [(0, "")] * 10
    assert [run.stdout.split() for run in outcomes] == [["40", "1.2.826.0.1.39"]] * 10
