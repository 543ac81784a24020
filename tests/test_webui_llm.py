"""The LLM tab in Locust's web UI, rendered by a real headless Chromium, values checked."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from harness.loadgen.hist import HistSet
from tests.support.chromium import chromium
from tests.support.ports import free_port
from tests.support.processes import harness_env, locust_argv, stop, wait_for



def _json(url: str, data: bytes | None = None) -> dict:
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET",
                                 headers={"Content-Type": "application/json"})
    # the run's end (report, plots) keeps Locust's event loop busy a while: 30 s, not 5, for
    # a loaded machine (5 s ran out under 2 CPU hogs)
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def _chromium(url: str, tmp: Path, screenshot: Path | None = None) -> str:
    size = ["--window-size=1400,1700", "--virtual-time-budget=6000"]
    if screenshot is not None:
        chromium([*size, f"--screenshot={screenshot}", url], tmp, timeout=90)
    return chromium([*size, "--dump-dom", url], tmp, timeout=90).stdout


def _rows(dom: str) -> dict[str, list[str]]:
    """Table rows of the page: first cell's text -> the other cells' texts."""
    out = {}
    for tr in re.findall(r"<tr[^>]*>(.*?)</tr>", dom, flags=re.S):
        cells = [html.unescape(re.sub(r"<[^>]+>", "", td)).strip()
                 for td in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", tr, flags=re.S)]
        if cells:
            out[cells[0]] = cells[1:]
    return out


def _complete_run(results: Path) -> Path | None:
    """The run directory under ``results`` once its manifest says complete."""
    dirs = list(results.glob("*/manifest.json")) if results.exists() else []
    return dirs[0].parent if dirs and json.loads(dirs[0].read_text())["status"] == "complete" else None


def test_llm_tab_shows_the_runs_values_in_chromium(emu, tmp_path):
    scen = tmp_path / "s.yaml"
    scen.write_text("""
name: webui
target: {protocol: tgi}
workload: {output_tokens: {dist: fixed, value: 24}}
load: {mode: concurrency, levels: [4, 6], warmup_s: 0, duration_s: 3, cooldown_s: 0}
telemetry: {source: emulated, rate_hz: 10}
""")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(locust_argv("--scenario", str(scen), "--host", emu, "--web-host", "127.0.0.1",
                                        "--web-port", str(port), "--autostart", "--slm-results", str(tmp_path / "res")),
                            env=harness_env(), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:   # until the plan is over and the run dir is complete
        run_dir = wait_for(lambda: _complete_run(tmp_path / "res"), 90, "the run to complete", interval=0.3)
        _json(base + "/llm/power", json.dumps({"power_w": 180.0}).encode())
        api = {r["metric"]: r for r in _json(base + "/llm/stats")["rows"]}
        shot = tmp_path / "llm.png"
        dom = _chromium(base + "/?tab=llm", tmp_path, screenshot=shot)
    finally:
        stop(proc)
    rows = _rows(dom)
    assert "TTFT (ms)" in rows, sorted(rows)[:20]
    # every finished cell in its own row, with the run directory's own figures
    summary = {c["cell"]: c for c in json.loads((run_dir / "summary.json").read_text())["cells"]}
    for name in ("r1-c4", "r1-c6"):
        status, tok_s, ttft50 = rows[name][0], rows[name][1], rows[name][2]
        assert status == "done"
        assert float(tok_s) == pytest.approx(summary[name]["output_tokens_per_s"], rel=0.02)
        assert float(ttft50) == pytest.approx(summary[name]["ttft_p50_s"] * 1000, abs=0.1)
    # live charts over the run: tokens/s, TTFT and ITL percentiles, power, one point a second
    assert dom.count("class=\"slm-chart\"") == 4
    for series in ("tokens_per_s", "ttft_p99_ms", "itl_p50_ms", "power_w"):
        m = re.search(rf'data-series="{series}"[^>]*points="([^"]*)"', dom)
        assert m and len(m.group(1).split()) >= 5, series
    assert max(float(p.split(",")[1]) for p in m.group(1).split()) > 0
    req = pd.read_parquet(run_dir / "requests.parquet")
    m = req[(req.phase == "measure") & (req.cell == "r1-c6")]
    hs = HistSet.decode(json.loads((run_dir / "histograms" / "r1-c6.json").read_text()))
    # columns: Value, p50, p90, p99, Mean, Count
    assert rows["Cell"][0] == "r1-c6 (measured window)"
    for label, metric in (("TTFT (ms)", "ttft"), ("ITL (ms)", "itl"), ("E2E latency (ms)", "e2e")):
        value, p50, p90, p99, mean, count = rows[label]
        assert p50 == f"{hs.percentile_s(metric, 50) * 1000:.2f}"
        assert p99 == f"{hs.percentile_s(metric, 99) * 1000:.2f}"
        assert int(count) == hs.count(metric)
    assert int(rows["TTFT (ms)"][5]) == len(m)
    assert 50.0 <= float(rows["TTFT (ms)"][1]) < 80.0          # the emulator's fixed 50 ms TTFT
    assert 9.0 <= float(rows["ITL (ms)"][1]) < 12.0            # ... and 10 ms ITL
    assert rows["Requests"][0] == str(len(m))
    assert rows["Error rate"][0] == "0.00%"
    assert rows["GPU power (W)"][0] == "180.0"
    basis = float(rows["Energy per output token (J/token)"][5].split()[1])
    assert float(rows["Energy per output token (J/token)"][0]) == pytest.approx(180.0 / basis, rel=1e-3)
    assert rows["TTFT (ms)"][1] == api["TTFT (ms)"]["p50"]
    assert shot.exists() and shot.stat().st_size > 20_000
    if os.environ.get("SLM_WEBUI_SCREENSHOT"):
        shutil.copy(shot, os.environ["SLM_WEBUI_SCREENSHOT"])
