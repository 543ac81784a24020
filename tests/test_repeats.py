"""Repeats end to end: ``sweep --repeats 2`` on emulated replicas runs every level, then every
level again, and reports one pooled row per configuration with repeats+requests intervals; the
exit code is 4 when a cell is invalid."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pandas as pd
import pytest

from harness.engine.outcome import exit_code
from tests.support.processes import harness

SCENARIO = """
name: rep
target: {protocol: tgi, launcher: {kind: emulator, profile: h100-smollm2-135m}}
workload: {seed: 2, prompt_tokens: {dist: fixed, value: 16}, output_tokens: {dist: fixed, value: 16}}
load: {mode: concurrency, levels: [4, 8], replicas: [1], warmup_s: 0.5, duration_s: 1.5, cooldown_s: 0.2}
slo: {ttft_s: {p99: 2.0}}
telemetry: {source: emulated, rate_hz: 20}
validity: {idle_baseline_s: 0.5}
"""


def test_sweep_repeats_interleave_and_pool(tmp_path):
    scen = tmp_path / "rep.yaml"
    scen.write_text(SCENARIO)
    p = harness("sweep", str(scen), "--repeats", "2", "--results", str(tmp_path / "res"), "--plain",
                timeout=240)
    assert p.returncode in (0, 1, 4), p.stderr[-3000:]
    (run,) = list((tmp_path / "res").iterdir())
    manifest = json.loads((run / "manifest.json").read_text())
    # interleaved: every level once, then every level again
    assert manifest["cells_done"] == ["r1-c4", "r1-c8", "r1-c4-n2", "r1-c8-n2"]
    s = json.loads((run / "summary.json").read_text())
    rows = {c["cell"]: c for c in s["cells"]}
    assert sorted(rows) == ["r1-c4", "r1-c8"]
    assert rows["r1-c4"]["repeats"] == ["r1-c4", "r1-c4-n2"]
    assert rows["r1-c4"]["interval_method"] == "repeats+requests"
    wins = {w["cell"]: w for w in s["windows"]}
    assert sorted(wins) == ["r1-c4", "r1-c4-n2", "r1-c8", "r1-c8-n2"]
    assert all(w["interval_method"] == "requests" for w in wins.values())
    # pooled: rates are the mean of the repeats, counts add up
    for name in ("r1-c4", "r1-c8"):
        a, b = wins[name], wins[f"{name}-n2"]
        assert rows[name]["output_tokens_per_s"] == pytest.approx(
            (a["output_tokens_per_s"] + b["output_tokens_per_s"]) / 2)
        assert rows[name]["requests_ok"] == a["requests_ok"] + b["requests_ok"]
        lo, hi = rows[name]["intervals"]["output_tokens_per_s"]
        assert lo <= rows[name]["output_tokens_per_s"] <= hi
        lo, hi = rows[name]["intervals"]["ttft_p50_s"]
        assert lo <= rows[name]["ttft_p50_s"] <= hi
    # the idle baseline was measured before the group's first cell
    win = pd.read_parquet(run / "windows.parquet")
    idle = win[win.phase == "idle"]
    assert list(idle.cell) == ["r1-c4"] and (idle.end_ns - idle.start_ns).iloc[0] >= 0.5e9
    assert "idle_power_w" in rows["r1-c4"]["checks"]
    csv = pd.read_csv(run / "cells.csv").set_index("cell")
    assert csv.loc["r1-c8", "output_tokens_per_s_lo"] == pytest.approx(
        rows["r1-c8"]["intervals"]["output_tokens_per_s"][0])
    html = (run / "report.html").read_text()
    assert "tok/s 95% CI" in html and "over repeats, then the requests within each" in html
    assert 'class="badge' in html


def test_exit_code_4_when_a_cell_is_invalid_and_stops_come_first():
    a = SimpleNamespace(cells=[1], invalid_cells=["r1-c8"],
                        recommendation=SimpleNamespace(meets_slo=True))
    assert exit_code("complete", a, "every") == 4
    assert exit_code("complete", a, "recommended") == 4
    assert exit_code("interrupted", a) == 130 and exit_code("launch-failed", a) == 3
    a.invalid_cells = []
    assert exit_code("complete", a, "recommended") == 0
