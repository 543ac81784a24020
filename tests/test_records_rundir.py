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


# ---------------------------------------------------------------------------------------------
# Durability: a killed writer's rows come back; compaction neither loses nor doubles a row
# ---------------------------------------------------------------------------------------------
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

from harness.records.rundir import journals_of, read_table
from harness.records.schema import RequestRecord

ROOT = Path(__file__).resolve().parents[1]

_KILLED_WRITER = r"""
import sys, time
from harness.records.rundir import RunDir
from harness.records.schema import RequestRecord, CellWindow
rd = RunDir(sys.argv[1], "run-k", flush_rows=100)
def rec(i):
    return RequestRecord(run_id="run-k", cell="r1-c4", replicas=1, level=4.0, phase="measure",
                         replica="u", worker="w", request_id=i, intended_ns=i, start_ns=i, end_ns=i + 1)
for i in range(250):
    rd.requests.append(rec(i))
rd.windows.append(CellWindow(run_id="run-k", cell="r1-c4", replicas=1, level=4.0,
                             level_kind="concurrency", phase="measure", start_ns=0, end_ns=10))
rd.flush()                        # the cell-end checkpoint: 250 rows and the window
for i in range(250, 260):         # buffered, never flushed: these may go
    rd.requests.append(rec(i))
print("flushed", flush=True)
time.sleep(60)
"""


def test_sigkilled_writer_leaves_every_flushed_row_readable(tmp_path):
    run = tmp_path / "run"
    p = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(run)], cwd=ROOT,
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "flushed"
    p.send_signal(signal.SIGKILL)
    p.wait(10)
    assert not (run / "requests.parquet").exists() and journals_of(run / "requests.parquet")
    req = read_table(run, "requests")
    assert req["request_id"].tolist() == list(range(250))
    assert req["attempt"].tolist() == [1] * 250         # stamped by the run directory
    assert len(read_table(run, "windows")) == 1
    assert json.loads((run / "manifest.json").read_text())["status"] == "running"


def test_torn_last_group_keeps_the_groups_before_it(tmp_path):
    ap = ParquetAppender(tmp_path / "t.parquet", SCHEMA, flush_rows=10)
    for i in range(30):
        ap.append({"i": i, "s": "x"})
    ap.flush(sync=True)
    (j,) = journals_of(tmp_path / "t.parquet")
    size = j.stat().st_size
    ap.append({"i": 99, "s": "y" * 5000})
    ap.flush()
    with open(j, "r+b") as f:               # a power cut in the middle of the last group
        f.truncate(size + (j.stat().st_size - size) // 2)
    from harness.records.rundir import read_arrow

    assert read_arrow(tmp_path, "t", SCHEMA).column("i").to_pylist() == list(range(30))


def test_compaction_interrupted_after_the_rename_does_not_double_rows(tmp_path):
    from harness.records import rundir

    ap = ParquetAppender(tmp_path / "c.parquet", SCHEMA, flush_rows=7)
    for i in range(20):
        ap.append({"i": i, "s": "x"})
    ap.flush(sync=True)
    journals = journals_of(tmp_path / "c.parquet")
    saved = {j: j.read_bytes() for j in journals}
    ap.close()                               # compacted: the journals are gone
    assert not journals_of(tmp_path / "c.parquet")
    for j, b in saved.items():               # as if the process died before deleting them
        j.write_bytes(b)
    t = rundir.read_arrow(tmp_path, "c", SCHEMA)
    assert t.column("i").to_pylist() == list(range(20))
    rundir.compact(tmp_path / "c.parquet", SCHEMA)
    assert pq.read_table(tmp_path / "c.parquet").column("i").to_pylist() == list(range(20))
    assert not journals_of(tmp_path / "c.parquet")


def test_rows_after_close_are_kept_by_the_next_close(tmp_path):
    ap = ParquetAppender(tmp_path / "l.parquet", SCHEMA, flush_rows=5, background=True)
    for i in range(12):
        ap.append({"i": i, "s": "x"})
    ap.close()
    ap.append({"i": 12, "s": "late"})        # e.g. a record drained after a signal closed the run
    ap.flush()
    from harness.records.rundir import read_arrow

    assert read_arrow(tmp_path, "l", SCHEMA).column("i").to_pylist() == list(range(13))
    ap.close()
    ap.close()
    assert pd.read_parquet(tmp_path / "l.parquet")["i"].tolist() == list(range(13))


def test_close_from_a_signal_handler_while_append_holds_the_lock(tmp_path):
    """The handler runs in the thread it interrupts, possibly inside ``append``: close() must not
    deadlock on the appender's lock, and the interrupted append's row must not be lost."""
    rd = RunDir(tmp_path / "run", "run-s", flush_rows=3)
    rec = dict(run_id="run-s", cell="r1-c1", replicas=1, level=1.0, phase="measure", replica="u",
               worker="w", intended_ns=0, start_ns=0, end_ns=1)
    for i in range(5):
        rd.requests.append(RequestRecord(request_id=i, **rec))

    class Rows(list):
        fired = False

        def append(self, d):
            list.append(self, d)
            if not Rows.fired:              # inside append, lock held: the "signal" arrives
                Rows.fired = True
                rd.close("interrupted")

    rows = Rows(rd.requests._rows)
    rd.requests._rows = rows
    rd.requests.append(RequestRecord(request_id=5, **rec))
    rd.requests._rows = list(rd.requests._rows)
    rd.requests.append(RequestRecord(request_id=6, **rec))
    rd.close("interrupted")
    got = sorted(read_table(rd.path, "requests")["request_id"].tolist())
    assert got == list(range(7))
    assert json.loads((rd.path / "manifest.json").read_text())["status"] == "interrupted"


def test_reopen_drops_the_unfinished_cell_and_counts_it(tmp_path):
    from harness.records.schema import CellWindow

    rd = RunDir(tmp_path / "run", "run-r", flush_rows=4)

    def rec(cell, i):
        return RequestRecord(run_id="run-r", cell=cell, replicas=1, level=1.0, phase="measure",
                             replica="u", worker="w", request_id=i, intended_ns=i, start_ns=i,
                             end_ns=i + 1)

    for cell, n in (("r1-c1", 10), ("r1-c2", 6)):
        rd.begin_cell(cell)
        for i in range(n):
            rd.requests.append(rec(cell, i))
        rd.windows.append(CellWindow(run_id="run-r", cell=cell, replicas=1, level=1.0,
                                     level_kind="concurrency", phase="warmup", start_ns=0, end_ns=1))
    rd.flush()                                # killed here, r1-c2 unfinished: no close
    rd2 = RunDir.reopen(tmp_path / "run", finished=["r1-c1"])
    assert rd2.begin_cell("r1-c2") == 2
    for i in range(3):
        rd2.requests.append(rec("r1-c2", 100 + i))
    rd2.close()
    req = pd.read_parquet(tmp_path / "run" / "requests.parquet")
    assert (req.cell == "r1-c1").sum() == 10
    assert req[req.cell == "r1-c2"].request_id.tolist() == [100, 101, 102]
    assert set(req[req.cell == "r1-c2"].attempt) == {2}
    m = json.loads((tmp_path / "run" / "manifest.json").read_text())
    (d,) = m["discarded"]
    assert (d["cell"], d["attempt"], d["requests"], d["windows"]) == ("r1-c2", 1, 6, 1)
    assert m["counts"]["requests"] == 13 and m["attempts"] == {"r1-c1": 1, "r1-c2": 2}


def test_readers_leave_out_a_superseded_attempt(tmp_path):
    """Rows of an earlier attempt that are still on disk (a resume killed before it compacted)
    are not analysed: the manifest's latest attempt wins."""
    rd = RunDir(tmp_path / "run", "run-a")
    base = dict(run_id="run-a", replicas=1, level=1.0, phase="measure", replica="u", worker="w",
                intended_ns=0, start_ns=0, end_ns=1)
    for attempt, ids in ((1, range(5)), (2, range(5, 8))):
        for i in ids:
            rd.requests.append(RequestRecord(cell="r1-c8", request_id=i, attempt=attempt, **base))
    rd.requests.append(RequestRecord(cell="r1-c4", request_id=9, **base))
    rd.write_manifest(attempts={"r1-c8": 2})
    rd.close()
    req = read_table(rd.path, "requests")
    assert sorted(req.request_id) == [5, 6, 7, 9]
    assert len(pd.read_parquet(rd.path / "requests.parquet")) == 9      # the file keeps them
