"""The run directory's Parquet appenders: rows come back complete and in order, also when a
background OS thread writes them (the load generator's request records)."""

from __future__ import annotations

import threading

import pandas as pd
import pyarrow as pa

from harness.records.rundir import ParquetAppender, RunDir

SCHEMA = pa.schema([("i", pa.int64()), ("s", pa.string())])


def test_background_appender_keeps_every_row_in_order(tmp_path):
    ap = ParquetAppender(tmp_path / "x.parquet", SCHEMA, flush_rows=100, background=True)
    before = threading.active_count()
    for i in range(2345):
        ap.append({"i": i, "s": f"r{i}"})
    ap.flush()                      # returns only once everything handed over is written
    assert ap.count == 2345
    ap.close()
    df = pd.read_parquet(tmp_path / "x.parquet")
    assert df["i"].tolist() == list(range(2345))
    assert df["s"].iloc[-1] == "r2344"
    assert threading.active_count() <= before + 1     # the writer thread does not pile up


def test_background_write_error_is_kept_and_the_run_goes_on(tmp_path):
    ap = ParquetAppender(tmp_path / "y.parquet", SCHEMA, flush_rows=2, background=True)
    ap.append({"i": 1, "s": "a"})
    ap.append({"i": "not a number", "s": "b"})      # this group cannot be converted
    ap.append({"i": 3, "s": "c"})
    ap.append({"i": 4, "s": "d"})
    ap.close()
    assert ap.error is not None
    df = pd.read_parquet(tmp_path / "y.parquet")
    assert df["i"].tolist() == [3, 4]               # the other groups are written


def test_empty_rundir_files_are_typed_and_readable(tmp_path):
    with RunDir(tmp_path / "run", "run-1") as rd:
        pass
    for name in ("requests", "gpu_samples", "windows"):
        df = pd.read_parquet(rd.path / f"{name}.parquet")
        assert len(df) == 0 and len(df.columns) > 3


def test_close_twice_keeps_the_rows(tmp_path):
    ap = ParquetAppender(tmp_path / "z.parquet", SCHEMA, flush_rows=10, background=True)
    for i in range(25):
        ap.append({"i": i, "s": "x"})
    ap.close()
    ap.close()                      # idempotent: must not reopen (and empty) the file
    assert pd.read_parquet(tmp_path / "z.parquet")["i"].tolist() == list(range(25))
