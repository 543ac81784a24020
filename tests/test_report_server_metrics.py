"""Server metrics in the report: the replicas' own /metrics, scraped during a run on the records'
clock, plotted per replica over time (emulated TGI replicas)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

from harness.analysis.rundata import load_run
from harness.report.timeline import build_timeline
from harness.report.timeseries import server_metrics_figure
from tests.support.processes import ROOT, harness_env, start_emulator, stop

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
                       timeout=180, env=harness_env(), check=False)
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
    assert _panels(run) == {"tgi_queue_size": 2, "tgi_batch_current_size": 2,
                            "tgi_batch_current_max_tokens": 2, "power": 1}


def _panels(run: Path) -> dict[str, int]:
    """The server-metrics figure's data lines: gauge (or "power") -> how many (one per replica,
    one per GPU), each on the timeline's clock (seconds since the first cell started)."""
    rd = load_run(run)
    tl = build_timeline(rd)
    out: dict[str, int] = {}
    for ax in server_metrics_figure(rd, tl).axes:
        for ln in ax.lines:
            if ln.get_gid():
                what, who = ln.get_gid().split(" ", 1)
                assert who in set(rd.server.replica) | {"0"}, who
                out[what] = out.get(what, 0) + 1
                xs = ln.get_xdata()
                assert min(xs) > -2 and max(xs) < tl.bin_mid_s.max() + 5
    return out


VLLM = """
name: sm-vllm
target: {{protocol: openai-completions, model: m, launcher: {{kind: endpoints, urls: {urls}}}}}
workload: {{seed: 2, prompt_tokens: {{dist: fixed, value: 16}}, output_tokens: {{dist: fixed, value: 32}}}}
load: {{mode: concurrency, levels: [8], replicas: [2], warmup_s: 0.5, duration_s: 2, cooldown_s: 0.2}}
telemetry: {{source: emulated, rate_hz: 20, server_metrics: {{rate_hz: 4}}}}
"""


def test_vllm_replicas_metrics_are_plotted_under_their_own_names(tmp_path):
    """The emulator as vLLM (vllm:* gauges, KV cache as a 0-1 share): the report's figure shows
    the waiting queue, the running batch and the KV cache per replica, in %."""
    emu, urls = start_emulator(tmp_path, "--server", "vllm", "-n", "2", profile="h100-smollm2-135m")
    try:
        scen = tmp_path / "v.yaml"
        scen.write_text(VLLM.format(urls=json.dumps(urls)))
        p = subprocess.run([sys.executable, "-m", "harness", "run", str(scen), "--results",
                            str(tmp_path / "res"), "-q"], cwd=ROOT, capture_output=True, text=True,
                           timeout=180, env=harness_env(), check=False)
    finally:
        stop(emu)
    assert p.returncode in (0, 1), p.stderr[-3000:]
    (run,) = list((tmp_path / "res").iterdir())
    assert _panels(run) == {"vllm:num_requests_waiting": 2, "vllm:num_requests_running": 2,
                            "vllm:gpu_cache_usage_perc": 2, "power": 1}
    fig = server_metrics_figure(load_run(run), None)
    kv = next(ax for ax in fig.axes if ax.get_ylabel() == "KV cache used (%)")
    sm = pd.read_parquet(run / "server_metrics.parquet")
    share = sm[sm.name == "vllm:gpu_cache_usage_perc"].value.max()
    assert 0 < share < 1
    assert max(max(ln.get_ydata()) for ln in kv.lines if ln.get_gid()) == share * 100
