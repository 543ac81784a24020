"""A stop while the run is still starting (the run directory is there, telemetry and the plan are
not yet), by every door: the run ends as ``interrupted`` with no cell and exit code 130, whatever
the moment, never with a traceback, a manifest left "running" or a cell it did not run."""

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


def _stopped_while_starting(argv: list[str], results, delay_s: float, sig: int) -> str:
    """Start ``argv``; ``delay_s`` after its manifest appears, send ``sig``; its output."""
    proc = subprocess.Popen(argv, cwd=ROOT, env=harness_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: any(results.glob("*/manifest.json")), 60, "the run directory's manifest",
                 interval=0.005)   # the window before the engine runs is short
        time.sleep(delay_s)
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=90)
    finally:
        stop(proc)
    assert "Traceback" not in out and "AttributeError" not in out, out[-3000:]
    assert proc.returncode == 130, out[-3000:]
    man = json.loads(next(results.glob("*/manifest.json")).read_text())
    assert man["status"] == "interrupted", man
    # the plan's first cell had at most begun its warm-up: no cell is done
    assert man.get("cells_done", []) == [], man
    return out


@pytest.mark.parametrize("delay_s", [0.0, 0.15, 0.4])
def test_ctrl_c_while_locust_starts_closes_the_run_as_interrupted(emu, tmp_path, delay_s):
    scenario = tmp_path / "early.yaml"
    scenario.write_text(SCENARIO)
    _stopped_while_starting([sys.executable, "-m", "locust", "-f", LOCUSTFILE, "--headless", "--scenario",
                             str(scenario), "--host", emu, "--slm-results", str(tmp_path / "res")],
                            tmp_path / "res", delay_s, signal.SIGINT)


@pytest.mark.parametrize("command,sig,delay_s", [
    ("run", signal.SIGINT, 0.0), ("run", signal.SIGTERM, 0.0), ("run", signal.SIGTERM, 0.3),
    ("sweep", signal.SIGINT, 0.0), ("sweep", signal.SIGTERM, 0.0)])
def test_a_stop_while_run_or_sweep_starts_closes_the_run_as_interrupted(tmp_path, command, sig, delay_s):
    """The run directory is opened before the engine's own handlers are in place: a signal then
    used to leave the manifest "running" (SIGTERM even killed the process, exit -15)."""
    scenario = tmp_path / "early.yaml"
    scenario.write_text(SCENARIO)
    out = _stopped_while_starting([sys.executable, "-m", "harness", command, str(scenario), "--results",
                                   str(tmp_path / "res")], tmp_path / "res", delay_s, sig)
    assert f"{command} stopped" in out, out[-2000:]
