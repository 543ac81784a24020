"""The stack master's store sync reads a run directory through the records layer: a run whose
load generator was killed (rows only in its journals) still reaches InfluxDB, every row once."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from harness.launch.storesync import sync_run_to_store
from harness.records.rundir import journals_of
from harness.store import InfluxQLReader, InfluxTarget

ROOT = Path(__file__).resolve().parents[1]
T0 = time.time_ns() - 3_600 * 10**9   # an hour ago: inside every default query range

_KILLED_WRITER = r"""
import sys
from harness.records.rundir import RunDir
from harness.records.schema import CellWindow, RequestRecord
run, url, t0 = sys.argv[1], sys.argv[2], int(sys.argv[3])
rd = RunDir(run, "run-k", flush_rows=100)
rd.write_scenario("name: k\nstore: {influxdb: {url: '%s', api: v1, database: synced}}\n" % url)
def rec(cell, i):
    return RequestRecord(run_id="run-k", cell=cell, replicas=1, level=4.0, phase="measure",
                         replica="u", worker="w", request_id=i, intended_ns=t0 + i,
                         start_ns=t0 + i * 1000, end_ns=t0 + i * 1000 + 10**6, output_tokens=3)
rd.begin_cell("r1-c4")
for i in range(120):              # an attempt that a later one supersedes: never written
    rd.requests.append(rec("r1-c4", i))
rd.flush()
rd.begin_cell("r1-c4")
for i in range(250):
    rd.requests.append(rec("r1-c4", 1000 + i))
rd.windows.append(CellWindow(run_id="run-k", cell="r1-c4", replicas=1, level=4.0,
                             level_kind="concurrency", phase="measure", start_ns=t0,
                             end_ns=t0 + 10**9))
rd.flush()                        # the cell-end checkpoint
print("flushed", flush=True)
import time; time.sleep(60)
"""


def test_a_killed_runs_records_reach_the_store_once(influxdb, tmp_path):
    influxdb.query("CREATE DATABASE synced")
    run = tmp_path / "run"
    p = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(run), influxdb.url, str(T0)],
                         cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "flushed"
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(10)
    assert not (run / "requests.parquet").exists() and journals_of(run / "requests.parquet")

    st = sync_run_to_store(run)
    assert st["status"] == "written", st
    assert (st["requests"], st["windows"]) == (250, 1)
    reader = InfluxQLReader(InfluxTarget(url=influxdb.url, api="v1", database="synced"))
    try:
        assert reader.count("request", "output_tokens", "run_id = 'run-k'") == 250
    finally:
        reader.close()
    # a second sync finds them there and writes nothing
    assert sync_run_to_store(run) == {"status": "present", "requests": 250}
