"""Ctrl-C to ``locust --headless`` while the run is still starting (the run directory is there,
telemetry and the plan are not yet): the run ends as ``interrupted`` with no cell, whatever the
moment, and never with a traceback or a cell it did not run."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from tests.support.processes import LOCUSTFILE, ROOT, harness_env, stop, wait_for

SCENARIO = """
name: early
target: {protocol: tgi, launcher: {kind: emulator, profile: fixed-50ms-10ms}}
workload: {seed: 4, prompt_tokens: {dist: fixed, value: 16}, output_tokens: {dist: fixed, value: 24}}
load: {mode: concurrency, levels: [4, 8], warmup_s: 1.5, duration_s: 30, cooldown_s: 0.3}
slo: {ttft_s: {p99: 1.0}, max_error_rate: 0.0}
telemetry: {source: emulated, rate_hz: 20}
"""


@pytest.mark.parametrize("delay_s", [0.0, 0.15, 0.4])
def test_ctrl_c_while_the_run_starts_closes_it_as_interrupted(emu, tmp_path, delay_s):
    scenario = tmp_path / "early.yaml"
    scenario.write_text(SCENARIO)
    results = tmp_path / "res"
    proc = subprocess.Popen([sys.executable, "-m", "locust", "-f", LOCUSTFILE, "--headless", "--scenario",
                             str(scenario), "--host", emu, "--slm-results", str(results)], cwd=ROOT,
                            env=harness_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: any(results.glob("*/manifest.json")), 60, "the run directory's manifest")
        time.sleep(delay_s)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=90)
    finally:
        stop(proc)
    assert "Traceback" not in out and "AttributeError" not in out, out[-3000:]
    assert proc.returncode == 130, out[-3000:]
    man = json.loads(next(results.glob("*/manifest.json")).read_text())
    assert man["status"] == "interrupted", man
    # the plan's first cell had at most begun its warm-up: no cell is done
    assert man.get("cells_done", []) == [], man
