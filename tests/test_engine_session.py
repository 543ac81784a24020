"""The session computes a cell's metrics from the run directory: the same figures as from the
records themselves, without holding every record of the cell in memory while it runs."""

from __future__ import annotations

import json
import random
import tracemalloc
from dataclasses import asdict

import pandas as pd

from harness.analysis.metrics import compute_cell
from harness.analysis.rundata import RunData
from harness.analysis.synthetic import request, window
from harness.engine.engine import cell_metrics
from harness.engine.session import Session
from harness.records.schema import GPU_SCHEMA, REQUEST_SCHEMA
from harness.scenario.models import Scenario

SCENARIO = {"name": "mem", "telemetry": {"source": "none"},
            "slo": {"ttft_s": {"p99": 0.4}, "max_error_rate": 0.05}}
REPLICAS = ["http://127.0.0.1:9000", "http://127.0.0.1:9001"]


def _session(tmp_path) -> Session:
    return Session(Scenario.model_validate(SCENARIO), "name: mem\n", tmp_path / "res",
                   command="run")


def _records(cell: str, n: int, seed: int, run_id: str):
    """Requests of one cell around a 0..10 s measured window: some before or after it, some
    failed, some without a first token, over two replicas."""
    rnd = random.Random(seed)
    for i in range(n):
        err = rnd.choice([None] * 12 + ["connect", "timeout", "http_5xx"])
        ttft = None if err == "connect" else rnd.uniform(0.02, 0.6)
        yield request(cell, 2, 8.0, start_s=rnd.uniform(-1.0, 10.5), ttft_s=ttft,
                      e2e_s=(ttft or 0.0) + rnd.uniform(0.05, 2.0), tokens=rnd.randint(1, 64),
                      replica=rnd.choice(REPLICAS), error=err, request_id=i, run_id=run_id,
                      itl_s=rnd.choice([None, 0.01]))


def _as_before(session: Session, rows: list[dict], name: str):
    """The metrics as computed from the cell's record dicts held in memory (the oracle)."""
    req = pd.DataFrame([r for r in rows if r.get("cell") == name], columns=REQUEST_SCHEMA.names)
    run = RunData(path=session.path, manifest={}, scenario=session.scenario, requests=req,
                  gpu=GPU_SCHEMA.empty_table().to_pandas(), windows=pd.DataFrame())
    w = [w for w in session.windows if w.cell == name and w.phase == "measure"][-1]
    return compute_cell(run, {k: getattr(w, k) for k in w.__slots__}, session.scenario.slo)


def _same(a, b) -> None:
    assert json.dumps(asdict(a), sort_keys=True, default=str) == \
        json.dumps(asdict(b), sort_keys=True, default=str)


def test_cell_metrics_from_the_run_directory_equal_those_from_the_records(tmp_path):
    s = _session(tmp_path)
    seen: list[dict] = []
    s.hooks.on_record = seen.append            # the rows as the session saw them (stamped)
    try:
        for cell, seed in (("r2-c4", 1), ("r2-c8", 2)):
            s.cell_started(cell)
            for rec in _records(cell, 1500, seed, s.run_id):
                s.rundir.requests.append(rec)
            s.rundir.windows.append(window(cell, 2, 8.0, 0.0, 10.0, run_id=s.run_id))
            new = cell_metrics(s, cell, None)
            old = _as_before(s, seen, cell)
            assert new.requests_started > 1000 and new.requests_failed > 0
            assert len(new.per_replica) == 2 and new.ttft_p99_s is not None
            _same(new, old)
            s.cell_ended(cell, partial=False)
    finally:
        s.close("complete")
    assert s.cells_done == ["r2-c4", "r2-c8"]


def test_a_running_cell_does_not_hold_its_records_in_memory(tmp_path):
    s = _session(tmp_path)
    n = 15_000                                  # ~20 MiB as record dicts
    try:
        s.cell_started("r2-c8")
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for rec in _records("r2-c8", n, 3, s.run_id):
                s.rundir.requests.append(rec)
            s.rundir.requests.flush()
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        s.rundir.windows.append(window("r2-c8", 2, 8.0, -2.0, 12.0, run_id=s.run_id))
        m = cell_metrics(s, "r2-c8", None)
        s.cell_ended("r2-c8", partial=False)
    finally:
        s.close("complete")
    assert m.requests_started == n                 # every record is still in the cell's metrics
    assert grown < 4 * 2**20, f"{grown / 2**20:.1f} MiB held after {n} records"
