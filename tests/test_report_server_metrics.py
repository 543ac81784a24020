"""Server metrics in the report: the replicas' own /metrics, scraped during a run on the records'
clock, plotted per replica over time (emulated TGI replicas)."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd

from tests.support.processes import ROOT, harness_env

SCENARIO = """
name: sm
target: {protocol: tgi, launcher: {kind: emulator, profile: h100-smollm2-135m}}
workload: {seed: 2, prompt_tokens: {dist: fixed, value: 16}, output_tokens: {dist: fixed, value: 32}}
load: {mode: concurrency, levels: [8], replicas: [2], warmup_s: 0.5, duration_s: 2, cooldown_s: 0.2}
telemetry: {source: emulated, rate_hz: 20}
"""


def test_emulated_replicas_metrics_land_in_the_run_directory_and_report(tmp_path):
    scen = tmp_path / "sm.yaml"
    scen.write_text(SCENARIO)
    p = subprocess.run([sys.executable, "-m", "harness", "run", str(scen), "--results",
                        str(tmp_path / "res"), "-q"], cwd=ROOT, capture_output=True, text=True,
                       timeout=180, env=harness_env())
    assert p.returncode in (0, 1), p.stderr[-3000:]
    (run,) = list((tmp_path / "res").iterdir())
    sm = pd.read_parquet(run / "server_metrics.parquet")
    win = pd.read_parquet(run / "windows.parquet")
    req = pd.read_parquet(run / "requests.parquet")
    assert set(req.replica) == set(sm.replica) and sm.replica.nunique() == 2
    for name in ("tgi_queue_size", "tgi_batch_current_size", "tgi_request_count_total"):
        assert (sm.name == name).sum() >= 2 * 4, name     # both replicas, scraped at ~2 Hz
    # on the requests' clock: scrapes inside the measured window saw the streams running
    m = win[win.phase == "measure"].iloc[0]
    inside = sm[(sm.ts_ns >= m.start_ns) & (sm.ts_ns < m.end_ns) & (sm.name == "tgi_batch_current_size")]
    assert len(inside) >= 2 and inside.value.max() > 0
    # the request counter grows by what was sent
    total = sm[sm.name == "tgi_request_count_total"].sort_values("ts_ns").groupby("replica").value.last()
    assert 0 < total.sum() <= len(req)
    html = (run / "report.html").read_text()
    assert 'alt="server metrics per replica" src="data:image/png;base64,' in html
