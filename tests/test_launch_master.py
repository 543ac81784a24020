"""The compose stack's Locust master without docker: a real Locust (web UI, ``--autostart``)
against a real emulator. Its exit code is Locust's own, the engine's (harness/engine/outcome.py),
and the report is the one the plugin wrote."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from harness.analysis.summary import analyze
from harness.engine.outcome import exit_code
from tests.support.ports import free_port
from tests.support.processes import LOCUSTFILE, harness_env
from tests.support.runs import measuring

SCENARIO = """
name: master
target: {protocol: tgi}
workload: {seed: 2, prompt_tokens: {dist: fixed, value: 16}, output_tokens: {dist: fixed, value: 16}}
load: {mode: concurrency, levels: [4], warmup_s: 1, duration_s: DURATION, cooldown_s: 0.2}
slo: {ttft_s: {p99: 0.0001}}
telemetry: {enabled: false}
"""


def _master(tmp_path: Path, url: str, duration: float) -> tuple[subprocess.Popen, Path]:
    scen = tmp_path / "master.yaml"
    scen.write_text(SCENARIO.replace("DURATION", str(duration)))
    results = tmp_path / "results"
    p = subprocess.Popen(
        [sys.executable, "-m", "harness.launch.master", "--results", str(results),
         "--linger-s", "0", "--health-timeout-s", "30", "--",
         "-f", LOCUSTFILE, "--scenario", str(scen), "--host", url,
         "--web-host", "127.0.0.1", "--web-port", str(free_port()), "--autostart"],
        cwd=tmp_path, env=harness_env(),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return p, results


def _finish(p: subprocess.Popen, timeout: float = 120) -> tuple[int, str]:
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate()
        raise AssertionError(f"the master did not end:\n{out[-3000:]}") from None
    return p.returncode, out


def _run_dir(results: Path) -> Path:
    (d,) = [x for x in results.iterdir() if x.is_dir() and not x.is_symlink()]
    assert (results / "latest").resolve() == d.resolve()
    return d


def test_a_finished_run_exits_with_the_engines_code_and_the_plugins_report(emu, tmp_path):
    p, results = _master(tmp_path, emu, 2.0)
    code, out = _finish(p)
    run = _run_dir(results)
    summary = json.loads((run / "locust-summary.json").read_text())
    assert summary["slo_ok"] is False                  # TTFT p99 under 0.1 ms: violated
    manifest = json.loads((run / "manifest.json").read_text())
    want = exit_code(manifest["status"], analyze(run), "every")
    assert want in (1, 4) and code == want, out[-3000:]
    assert f"; exit {want}" in out and (want != 1 or "SLO violated; exit 1" in out)
    for f in ("report.html", "summary.json", "cells.csv"):   # written by the plugin
        assert (run / f).stat().st_size > 0, f


def test_a_run_stopped_mid_cell_exits_130(emu, tmp_path):
    p, results = _master(tmp_path, emu, 60.0)
    # the cell is under way once its measured window has rows in the journal, however long a
    # loaded machine took to get there (not a fixed 2 s after the manifest's first attempt)
    rows = measuring(results, "r1-c4")
    deadline = time.monotonic() + 60
    while not (results.exists() and rows()):
        assert p.poll() is None and time.monotonic() < deadline, p.communicate()[0][-3000:]
        time.sleep(0.2)
    p.send_signal(signal.SIGTERM)                      # passed on to Locust
    code, out = _finish(p)
    assert code == 130, out[-3000:]
    assert "stopped early; exit 130" in out
    run = _run_dir(results)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["cells_partial"] == ["r1-c4"]
    assert (run / "report.html").exists()
