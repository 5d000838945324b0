"""Reading the small Parquet tables the store holds (dataset manifests, measurement tables).

pyarrow decodes Parquet and converts it to pandas on its CPU thread pool by default; a process that
exits soon after such a read aborts intermittently at interpreter shutdown ("terminate called without
an active exception", SIGABRT, exit 134) with its work done and its output written (apache/arrow#34314;
on a 2-core machine with pyarrow 25 most short commands that read a manifest aborted). A command line
that exits non-zero after succeeding breaks every scheduler and script that calls it. The tables read
here are manifests and per-image rows (kilobytes to a few megabytes), so reading and converting on the
calling thread costs nothing measurable and leaves no pool work behind at exit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd


def frame_from_parquet_bytes(data: bytes) -> pd.DataFrame:
    """The table in ``data`` (a whole Parquet file) as pandas, read without pyarrow's thread pool."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(pa.BufferReader(data), use_threads=False)
    return table.to_pandas(use_threads=False)
