"""Records survive a killed sweep: SIGKILL (the whole process group, as a crash or power cut
would) mid-cell, then ``sweep --resume`` finishes; every finished cell's rows are still there and
the cell that was cut short holds only its final attempt."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pandas as pd
import pytest

from harness.records.rundir import journals_of, read_table
from tests.support.processes import harness
from tests.support.runs import measuring
from tests.support.sweeps import resume_sweep, stop_sweep

# cpu-demo: steps of a few ms, so the second cell's first measured rows reach its journal long
# before its 2.5 s measured window ends; the signal waits for them (tests.support.runs.measuring)
SCENARIO = """
name: killed
target: {protocol: tgi, launcher: {kind: emulator, profile: cpu-demo}}
workload: {seed: 2, prompt_tokens: {dist: fixed, value: 16}, output_tokens: {dist: fixed, value: 16}}
load: {mode: concurrency, levels: [4, 8], replicas: [1], warmup_s: 0.5, duration_s: 2.5, cooldown_s: 0.2}
slo: {ttft_s: {p99: 2.0}}
telemetry: {source: emulated, rate_hz: 20}
"""


def _in_second_cell(line: str) -> bool:
    return line.startswith("[r1-c8] cell")


@pytest.mark.slow
def test_sigkilled_sweep_resumes_with_every_finished_row(tmp_path):
    scen = tmp_path / "s.yaml"
    scen.write_text(SCENARIO)
    # the sweep and its emulated replicas (its process group), with no cleanup
    stopped = stop_sweep(scen, tmp_path / "res", _in_second_cell,
                         until=measuring(tmp_path / "res", "r1-c8"), sig=signal.SIGKILL)
    assert stopped.returncode == -signal.SIGKILL
    run = stopped.run
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "running" and manifest["cells_done"] == ["r1-c4"]
    assert journals_of(run / "requests.parquet")          # the writer never closed
    before = read_table(run, "requests")
    c4 = before[before.cell == "r1-c4"].sort_values("request_id").reset_index(drop=True)
    assert len(c4) > 20 and (before.cell == "r1-c8").sum() > 0     # the cut-short cell wrote rows
    wins = read_table(run, "windows")
    assert {"warmup", "measure", "cooldown"} <= set(wins[wins.cell == "r1-c4"].phase)
    # the report reads what the killed writer left (into another directory: the run stays as is)
    p = harness("report", str(run), "--out", str(tmp_path / "rep"), "-q")
    assert p.returncode in (0, 1), p.stderr[-3000:]
    cells = json.loads((tmp_path / "rep" / "summary.json").read_text())["cells"]
    (c,) = [c for c in cells if c["cell"] == "r1-c4"]
    assert c["requests_ok"] > 0

    p = resume_sweep(scen, run)
    assert p.returncode == 0, p.stderr[-3000:]
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["cells_done"] == ["r1-c4", "r1-c8"]
    assert manifest["attempts"] == {"r1-c4": 1, "r1-c8": 2}
    (d,) = manifest["discarded"]
    assert d["cell"] == "r1-c8" and d["attempt"] == 1 and d["requests"] > 0
    assert not journals_of(run / "requests.parquet")      # compacted at close
    req = pd.read_parquet(run / "requests.parquet")
    after = req[req.cell == "r1-c4"].sort_values("request_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(after, c4, check_dtype=False)   # every finished row, unchanged
    c8 = req[req.cell == "r1-c8"]
    assert len(c8) > 0 and set(c8.attempt) == {2}
    win = pd.read_parquet(run / "windows.parquet")
    phases = win[win.cell == "r1-c8"].phase.tolist()
    assert phases.count("warmup") == phases.count("measure") == phases.count("cooldown") == 1
    summary = json.loads((run / "summary.json").read_text())
    assert [c["cell"] for c in summary["cells"]] == ["r1-c4", "r1-c8"]


@pytest.mark.slow
def test_resumed_cell_holds_only_its_final_attempt_in_influxdb(tmp_path, influxdb):
    """Interrupt (SIGTERM) mid-cell with the store on, resume: the run directory and InfluxDB
    both hold exactly the final attempt's request rows and one warm-up window for that cell."""
    from harness.store import InfluxQLReader, InfluxTarget

    scen = tmp_path / "s.yaml"
    scen.write_text(SCENARIO + f"store: {{influxdb: {{url: '{influxdb.url}', api: v1, "
                               f"database: harness}}}}\n")
    stopped = stop_sweep(scen, tmp_path / "res", _in_second_cell,
                         until=measuring(tmp_path / "res", "r1-c8"))
    assert stopped.returncode == 130
    run = stopped.run
    run_id = json.loads((run / "manifest.json").read_text())["run_id"]
    db = InfluxQLReader(InfluxTarget(url=influxdb.url, api="v1", database="harness"))
    where = f"run_id='{run_id}' AND cell='r1-c8'"
    stale = db.count("request", "request_id", where)
    assert stale > 0 and db.count("window", "end_ns", where + " AND phase='warmup'") == 1

    p = resume_sweep(scen, run)
    assert p.returncode == 0, p.stderr[-3000:]
    manifest = json.loads((run / "manifest.json").read_text())
    (d,) = manifest["discarded"]
    assert d["cell"] == "r1-c8" and d["store"] == "deleted" and d["requests"] == stale
    req = pd.read_parquet(run / "requests.parquet")
    win = pd.read_parquet(run / "windows.parquet")
    for cell in ("r1-c4", "r1-c8"):
        w = f"run_id='{run_id}' AND cell='{cell}'"
        assert db.count("request", "request_id", w) == (req.cell == cell).sum()
        assert db.count("window", "end_ns", w + " AND phase='warmup'") == 1
        assert ((win.cell == cell) & (win.phase == "warmup")).sum() == 1
        assert db.count("request", "request_id", w + " AND phase='measure'") == (
            (req.cell == cell) & (req.phase == "measure")).sum()
    assert set(req[req.cell == "r1-c8"].attempt) == {2}
    attempts = db.query(f"SELECT attempt FROM request WHERE {where}")["attempt"]
    assert set(attempts) == {2}
    db.close()


def test_spooled_points_of_an_aborted_attempt_are_not_replayed(tmp_path):
    """A database away during the aborted attempt leaves its points in the spool: they are
    filtered out before replay (else the resumed cell would get them back)."""
    from harness.records.schema import CellWindow, RequestRecord
    from harness.store import lineproto as lp
    from harness.store.purge import purge_spool
    from harness.store.spool import Spool

    def req(cell, i, run="run 1"):
        return lp.request(RequestRecord(run_id=run, cell=cell, replicas=1, level=8.0, phase="measure",
                                        replica="u", worker="w", request_id=i, intended_ns=i,
                                        start_ns=10**18 + i, end_ns=10**18 + i + 1))

    win = lp.window(CellWindow(run_id="run 1", cell="r1-c8", replicas=1, level=8.0,
                               level_kind="concurrency", phase="warmup", start_ns=1, end_ns=2))
    sp = Spool(tmp_path / "spool")
    a = [req("r1-c4", i) for i in range(3)] + [req("r1-c8", i) for i in range(4)] + [win]
    sp.put(("\n".join(a) + "\n").encode(), len(a))
    b = [req("r1-c8", 9)] + [req("r1-c8", 10, run="other")]   # another run's cell of that name stays
    sp.put(("\n".join(b) + "\n").encode(), len(b))
    assert purge_spool(tmp_path / "spool", "run 1", ["r1-c8"]) == 6
    sp = Spool(tmp_path / "spool")
    assert sp.pending() == (2, 4)
    body = b"".join(f.read_bytes() for f in sorted((tmp_path / "spool").glob("*.lp")))
    assert body.count(b"cell=r1-c4") == 3 and body.count(b"run_id=other") == 1
