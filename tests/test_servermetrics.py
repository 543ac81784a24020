"""Server metrics: the replicas' own /metrics scraped during a run into the run directory and the
report (emulated TGI replicas), and the parser's rules for known and unknown servers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

from harness.servermetrics import parse

ROOT = Path(__file__).resolve().parents[1]

VLLM = """# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="m"} 7.0
# TYPE vllm:gpu_cache_usage_perc gauge
vllm:gpu_cache_usage_perc{model_name="m"} 0.25
# TYPE vllm:e2e_request_latency_seconds histogram
vllm:e2e_request_latency_seconds_bucket{le="1.0",model_name="m"} 3.0
vllm:e2e_request_latency_seconds_bucket{le="+Inf",model_name="m"} 4.0
vllm:e2e_request_latency_seconds_sum{model_name="m"} 2.5
vllm:e2e_request_latency_seconds_count{model_name="m"} 4.0
"""

OTHER = """# TYPE queue_depth gauge
queue_depth 3
# TYPE latency histogram
latency_bucket{le="0.5"} 1
latency_bucket{le="+Inf"} 2
latency_sum 0.9
latency_count 2
"""


def test_known_servers_keep_all_but_buckets_unknown_ones_everything():
    got = {(n, json.loads(lab).get("le")): v for n, lab, v in parse(VLLM)}
    assert got[("vllm:num_requests_running", None)] == 7.0
    assert got[("vllm:gpu_cache_usage_perc", None)] == 0.25
    assert got[("vllm:e2e_request_latency_seconds_count", None)] == 4.0
    assert not any(n.endswith("_bucket") for n, _ in got)
    other = {(n, json.loads(lab).get("le")) for n, lab, _ in parse(OTHER)}
    assert ("latency_bucket", "0.5") in other and ("queue_depth", None) in other


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
                       timeout=180, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert p.returncode in (0, 1), p.stderr[-3000:]
    (run,) = list((tmp_path / "res").iterdir())
    sm = pd.read_parquet(run / "server_metrics.parquet")
    win = pd.read_parquet(run / "windows.parquet")
    req = pd.read_parquet(run / "requests.parquet")
    assert set(req.replica) == set(sm.replica) and sm.replica.nunique() == 2
    for name in ("tgi_queue_size", "tgi_batch_current_size", "tgi_request_count_total"):
        assert (sm.name == name).sum() >= 2 * 4, name     # both replicas, scraped at ~2 Hz
    assert not sm.name.str.endswith("_bucket").any()
    # on the requests' clock: scrapes inside the measured window saw the streams running
    m = win[win.phase == "measure"].iloc[0]
    inside = sm[(sm.ts_ns >= m.start_ns) & (sm.ts_ns < m.end_ns) & (sm.name == "tgi_batch_current_size")]
    assert len(inside) >= 2 and inside.value.max() > 0
    # the request counter grows by what was sent
    total = sm[sm.name == "tgi_request_count_total"].sort_values("ts_ns").groupby("replica").value.last()
    assert 0 < total.sum() <= len(req)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["server_metrics"]["scrapes"] >= 8 and manifest["server_metrics"]["failed"] <= 2
    html = (run / "report.html").read_text()
    assert 'alt="server metrics per replica" src="data:image/png;base64,' in html
