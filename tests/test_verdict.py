"""Cell verdicts: each check on hand-made cells, and a load generator starved on purpose (pinned
to one core beside busy loops) judged invalid, exit 4, while the same run unstarved is not."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from harness.analysis.metrics import CellMetrics
from harness.analysis.verdict import judge, refresh_period_s
from harness.records.schema import GPU_SCHEMA, REQUEST_SCHEMA
from harness.scenario.models import Validity
from tests.loadgen_fakes import fake_server
from tests.support.processes import ROOT, bare_env

TH = Validity()


def cell(**kw) -> CellMetrics:
    base = dict(run_id="r", cell="r1-c8", replicas=1, level=8, level_kind="concurrency",
                start_ns=0, end_ns=10_000_000_000, duration_s=10.0, requests_started=2000,
                requests_ok=2000)
    base.update(kw)
    return CellMetrics(**base)


def empty(schema) -> pd.DataFrame:
    return schema.empty_table().to_pandas()


def run_judge(c, gen=None, started=None, gpu=None, windows=None, q=99.0):
    return judge(c, gen=gen, started=empty(REQUEST_SCHEMA) if started is None else started,
                 gpu=empty(GPU_SCHEMA) if gpu is None else gpu,
                 windows=pd.DataFrame({"phase": []}) if windows is None else windows,
                 th=TH, q=q)


HEALTHY = {"reader_lag_max_ms": 0.0, "late_read_passes": 0, "cpu_share": 0.2, "wait_share": 0.01}


def test_a_healthy_cell_is_valid():
    v = run_judge(cell(), HEALTHY)
    assert v.status == "valid", v.reasons


@pytest.mark.parametrize("gen,status,words", [
    ({**HEALTHY, "reader_lag_max_ms": 30.0}, "warn", "fell behind"),
    ({**HEALTHY, "reader_lag_max_ms": 150.0}, "warn", "up to 150.0 ms"),
    ({**HEALTHY, "wait_share": 0.15}, "warn", "waited for a CPU 15%"),
    ({**HEALTHY, "wait_share": 0.6}, "invalid", "waited for a CPU 60%"),
    ({**HEALTHY, "cpu_share": 0.95}, "warn", "ran 95%"),
])
def test_generator_checks(gen, status, words):
    v = run_judge(cell(), gen)
    assert v.status == status and any(words in r for r in v.reasons), v.reasons


def test_reader_lag_invalid_when_the_scenario_says_so():
    strict = TH.model_copy(update={"reader_lag_invalid_ms": 100.0})
    v = judge(cell(), gen={**HEALTHY, "reader_lag_max_ms": 150.0}, started=empty(REQUEST_SCHEMA),
              gpu=empty(GPU_SCHEMA), windows=pd.DataFrame({"phase": []}), th=strict, q=99.0)
    assert v.status == "invalid" and "limit 100 ms" in v.reasons[0]


def test_open_loop_send_lag_p99():
    n = 1000
    started = pd.DataFrame({"intended_ns": [0] * n, "start_ns": [0] * 980 + [200_000_000] * 20,
                            "error_class": [None] * n, "first_token_ns": [1] * n})
    v = run_judge(cell(level_kind="rate"), HEALTHY, started=started)
    assert v.status == "invalid" and v.checks["send_lag_p99_ms"] == pytest.approx(200.0)
    # a closed loop sends when the previous request ends: no send-lag check
    assert "send_lag_p99_ms" not in run_judge(cell(), HEALTHY, started=started).checks


def test_sample_size_against_the_percentile():
    v = run_judge(cell(requests_ok=50, requests_started=50), HEALTHY)
    assert v.status == "warn" and any("the p99 is the slowest request" in r for r in v.reasons)
    v = run_judge(cell(requests_ok=500, requests_started=500), HEALTHY)   # 5 beyond the p99
    assert v.status == "warn" and any("1000 requests" in r for r in v.reasons)
    assert run_judge(cell(requests_ok=500, requests_started=500), HEALTHY, q=90).status == "valid"


def test_steadiness_and_errors():
    assert run_judge(cell(steadiness=0.3), HEALTHY).status == "warn"
    assert run_judge(cell(steadiness=-0.6), HEALTHY).status == "warn"
    strict = TH.model_copy(update={"steadiness_invalid": 0.5})
    v = judge(cell(steadiness=-0.6), gen=HEALTHY, started=empty(REQUEST_SCHEMA), gpu=empty(GPU_SCHEMA),
              windows=pd.DataFrame({"phase": []}), th=strict, q=99.0)
    assert v.status == "invalid" and any("changed by 60%" in r for r in v.reasons)
    started = pd.DataFrame({"error_class": ["incomplete"] * 200 + [None] * 1800,
                            "first_token_ns": [1] * 2000})
    v = run_judge(cell(requests_failed=200, requests_ok=1800), HEALTHY, started=started)
    assert v.status == "warn" and v.checks["partial_requests"] == 200
    assert any("10.0% of the window's requests failed" in r for r in v.reasons)


def gpu_samples(t0_ns: int, t1_ns: int, every_ns: int, refresh_ns: int, power=100.0, **extra):
    rows = []
    for t in range(t0_ns, t1_ns + 1, every_ns):
        rows.append({"ts_ns": t, "gpu": 0, "source": "nvml-power",
                     "power_w": power + (t // refresh_ns) % 2, **extra})
    return pd.DataFrame(rows, columns=GPU_SCHEMA.names)


def test_power_refresh_period_and_short_windows():
    gpu = gpu_samples(0, 10_000_000_000, 50_000_000, 100_000_000)   # 20 Hz, value changes at 10 Hz
    assert refresh_period_s(gpu) == pytest.approx(0.1)
    c = cell(end_ns=50_000_000, duration_s=0.05, energy_j=5.0, energy_source="power-integral",
             energy_coverage=1.0)
    v = run_judge(c, HEALTHY, gpu=gpu)
    assert v.status == "invalid" and any("shorter than the power refresh" in r for r in v.reasons)
    c = cell(end_ns=500_000_000, duration_s=0.5, energy_j=50.0, energy_source="power-integral",
             energy_coverage=1.0, requests_ok=2000)
    v = run_judge(c, HEALTHY, gpu=gpu)
    assert v.status == "warn" and any("only 5 power readings" in r for r in v.reasons)


def test_emulated_power_has_no_refresh_period_to_judge_a_window_by():
    gpu = gpu_samples(0, 10_000_000_000, 50_000_000, 2_000_000_000)   # flat for 2 s at a time
    assert refresh_period_s(gpu) == pytest.approx(2.0)                 # as hardware: too coarse
    gpu["source"] = "emulated"
    assert refresh_period_s(gpu) is None
    c = cell(end_ns=1_000_000_000, duration_s=1.0, energy_j=100.0, energy_source="power-integral",
             energy_coverage=1.0, requests_ok=2000)
    v = run_judge(c, HEALTHY, gpu=gpu)
    assert not any("power refresh" in r or "power readings" in r for r in v.reasons), v.reasons


def test_counter_against_integral_and_throttling():
    gpu = gpu_samples(0, 10_000_000_000, 50_000_000, 100_000_000, power=100.0,
                      sm_clock_mhz=1980.0, throttle_reasons=0x4)
    # the integral is ~1005 J over 10 s; a counter of 1200 J disagrees by -16%
    c = cell(energy_j=1200.0, energy_source="window:nvml-counter", energy_coverage=1.0)
    v = run_judge(c, HEALTHY, gpu=gpu)
    assert v.checks["energy_integral_vs_counter"] == pytest.approx(1005.0 / 1200 - 1, abs=0.01)
    assert any("differs from the energy counter" in r for r in v.reasons)
    assert any("throttled inside the window: power cap" in r for r in v.reasons)
    c = cell(energy_j=1005.0, energy_source="window:nvml-counter", energy_coverage=1.0)
    v = run_judge(c, HEALTHY, gpu=gpu.assign(throttle_reasons=0x1))   # idle bit: not a throttle
    assert v.status == "valid", v.reasons
    idle = pd.DataFrame({"phase": ["idle"], "replicas": [1], "start_ns": [0], "end_ns": [2_000_000_000]})
    v = run_judge(c, HEALTHY, gpu=gpu.assign(throttle_reasons=0), windows=idle)
    assert v.checks["idle_power_w"] == pytest.approx(100.5, abs=0.1) and v.status == "valid"


# ---------------------------------------------------------------------------------------------
# end to end: `slm-harness run` pinned to one core, once alone and once starved
# ---------------------------------------------------------------------------------------------
SCENARIO = """
name: starve
target: {protocol: tgi}
workload: {seed: 3, prompt_tokens: {dist: fixed, value: 16}, output_tokens: {dist: fixed, value: 64}}
load: {mode: concurrency, levels: [16], warmup_s: 0.5, duration_s: 2, cooldown_s: 0.2}
validity: {cpu_wait_invalid: 0.3}
"""


def _run(tmp_path: Path, url: str, name: str, starve: bool) -> tuple[subprocess.CompletedProcess, dict]:
    cpu = min(os.sched_getaffinity(0))
    scen = tmp_path / f"{name}.yaml"
    scen.write_text(SCENARIO)
    busy = []
    if starve:   # busy loops on the generator's core, spinning once the generator has started
        spin = "import time; time.sleep(1.0)\nwhile True: pass"
        busy = [subprocess.Popen(["taskset", "-c", str(cpu), sys.executable, "-c", spin])
                for _ in range(6)]
    try:
        cmd = ["taskset", "-c", str(cpu)]
        p = subprocess.run(cmd + [sys.executable, "-m", "harness", "run", str(scen), "--url", url,
                                  "--results", str(tmp_path / name)], cwd=ROOT, capture_output=True,
                           text=True, timeout=120, env=bare_env())
    finally:
        for b in busy:
            b.kill()
            b.wait()
    (d,) = list((tmp_path / name).iterdir())
    return p, json.loads((d / "summary.json").read_text())


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores: one for the server")
def test_a_starved_generator_is_invalid_and_a_healthy_one_is_not(tmp_path):
    mine = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {max(mine)})   # the server inherits a core other than the generator's
    try:
        server = fake_server(ttft_ms=20, itl_ms=2)
        url = server.__enter__()
    finally:
        os.sched_setaffinity(0, mine)
    try:
        ok, ok_sum = _run(tmp_path, url, "healthy", starve=False)
        bad, bad_sum = _run(tmp_path, url, "starved", starve=True)
    finally:
        server.__exit__(None, None, None)
    (c_ok,), (c_bad,) = ok_sum["cells"], bad_sum["cells"]
    print("healthy", c_ok["checks"], "\nstarved", c_bad["checks"])
    assert c_ok["verdict"] != "invalid", c_ok["verdict_reasons"]
    assert ok.returncode in (0, 1), ok.stdout + ok.stderr
    assert c_bad["verdict"] == "invalid", (c_bad["verdict_reasons"], c_bad["checks"])
    assert any("waited for a CPU" in r for r in c_bad["verdict_reasons"])
    assert bad.returncode == 4 and "r1-c16: invalid: the load generator waited for a CPU" in bad.stdout
    assert bad_sum["verdicts"]["invalid"] == ["r1-c16"] and bad_sum["frontier"]["cells"] == []
    assert c_bad["checks"]["generator_cpu_wait_share"] > c_ok["checks"]["generator_cpu_wait_share"]
