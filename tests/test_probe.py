"""The probe before ``levels: auto`` (harness/engine/probe.py) against a real emulated replica:
its estimate of where throughput saturates uses the scenario's ``load.auto_min_gain``, the same
share the explore's plateau signal uses."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from harness.analysis.knee import ProbeEstimate, estimate_start
from tests.support.emulator import write_profile
from tests.support.processes import ROOT, harness_env

# Locust monkey-patches on import, so the probe runs in its own process, as every door does
SCRIPT = """
import locust  # gevent's monkey patching first
import json, sys, tempfile
from pathlib import Path
from harness.engine.probe import run_probe
from harness.launch.emulator import EmulatorLauncher
from harness.scenario import parse_scenario

sc = parse_scenario(sys.stdin.read())
with tempfile.TemporaryDirectory() as d, EmulatorLauncher(sc.target, 1, Path(d)) as reps:
    est = run_probe(sc, list(reps.urls), 1, run_id="probe", run_dir=Path(d))
print("ESTIMATE " + json.dumps(est.to_json() if est else None))
"""


def test_the_probe_estimates_saturation_with_the_scenarios_minimum_gain(tmp_path):
    # each decode step: 5 ms plus 0.5 ms per sequence, so e2e grows linearly with the streams
    prof = write_profile(tmp_path, "host-bound", timing="""  mode: roofline
  host_step_ms: 5
  host_per_seq_ms: 0.5""", limits="  max_batch_prefill_tokens: 4096\n  max_batch_size: 4096")
    scenario = f"""
name: probe-gain
target: {{protocol: tgi, launcher: {{kind: emulator, profile: {prof}}}}}
workload: {{seed: 1, prompt_tokens: {{dist: fixed, value: 8}}, output_tokens: {{dist: fixed, value: 16}}}}
load: {{mode: concurrency, levels: auto, auto_probe_s: 1, auto_max_level: 100000,
       auto_min_gain: 0.2}}
"""
    p = subprocess.run([sys.executable, "-c", SCRIPT], input=scenario, cwd=ROOT, env=harness_env(),
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    (line,) = [x for x in p.stdout.splitlines() if x.startswith("ESTIMATE ")]
    got = json.loads(line.removeprefix("ESTIMATE "))
    assert got is not None, p.stderr[-3000:]
    est = ProbeEstimate.from_json(got)
    assert [pt.streams for pt in est.points] == [1, 8]
    # the line e2e = a + b * streams through the two measured points
    lo, hi = (pt.latency["e2e_s.p50"] for pt in est.points)
    b = (hi - lo) / 7
    a = lo - b
    assert a > 0 and b > 0, est.points                # 8 streams were slower than 1
    # a doubling gains less than 20% beyond 0.8 * a / (0.4 * b) streams: the estimate, and the
    # explore starts 4 times below it
    assert est.saturation_streams == pytest.approx(0.8 * a / (0.4 * b))
    assert est.estimate == pytest.approx(est.saturation_streams)
    assert est.start == max(1, round(est.estimate / 4))
    # the same points under the default 5% put saturation 4.75 times further out
    default = estimate_start(est.points, None, mode="concurrency", min_gain=0.05,
                             max_level=100000, window_s=est.window_s)
    assert default.saturation_streams == pytest.approx(4.75 * est.saturation_streams)
    assert default.start != est.start
