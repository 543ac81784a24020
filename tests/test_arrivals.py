"""Arrivals: gamma burstiness, exponential ramps, and the open loop's cap on requests in flight,
checked through real ``slm-harness run`` processes against the emulator and its ground truth."""

from __future__ import annotations

import glob
import json
import math
import statistics

import pandas as pd
import pytest

from harness.scenario.loader import parse_scenario
from harness.scenario.models import Load
from harness.workload import Arrivals, build_plan
from tests.support.emulator import emulate_process, get_json
from tests.support.processes import bare_env
from tests.support.runs import run_cli, run_dir, write


@pytest.mark.parametrize("k", [0.25, 1.0, 4.0])
def test_gamma_gaps_keep_the_mean_and_spread_as_one_over_root_burstiness(k):
    a = Arrivals("gamma", 7, 0, burstiness=k)
    xs = [a.unit() for _ in range(40000)]
    assert abs(statistics.mean(xs) - 1.0) < 0.03
    assert abs(statistics.pstdev(xs) - 1 / math.sqrt(k)) < 0.06 / math.sqrt(k)
    b = Arrivals("gamma", 7, 0, k)
    assert [b.unit() for _ in range(3)] == xs[:3]   # seeded


def test_exponential_ramp_grows_by_a_constant_factor():
    ld = Load(mode="rate", levels=[100], warmup_s=0, duration_s=1, cooldown_s=0,
              stages=[{"duration_s": 4, "target": 100, "shape": "exponential"}])
    ramp = build_plan(ld, [100], 1).segments[0]
    vals = [ramp.value_at(t) for t in (0, 1, 2, 3, 4)]
    assert vals[0] == pytest.approx(1.0) and vals[-1] == pytest.approx(100.0)
    ratios = [b / a for a, b in zip(vals, vals[1:])]
    assert all(r == pytest.approx(100 ** 0.25) for r in ratios)
    lin = build_plan(Load(mode="rate", levels=[100], stages=[{"duration_s": 4, "target": 100}]), [100], 1)
    assert lin.segments[0].value_at(2) == pytest.approx(50.0)


@pytest.mark.parametrize("load,msg", [
    ("{mode: rate, arrival: poisson, burstiness: 0.5}", "burstiness applies to arrival: gamma only"),
    ("{mode: rate, arrival: gamma, burstiness: 0}", "greater than 0"),
    ("{mode: rate, arrival: gamma, burstiness: 101}", "less than or equal to 100"),
    ("{mode: rate, arrival: gamma, burstiness: .inf}", "finite"),
    ("{mode: rate, arrival: gamma, burstiness: true}", "expected a number"),
    ("{mode: concurrency, max_in_flight: 4}", "max_in_flight applies to mode: rate"),
    ("{mode: rate, max_in_flight: 0}", "greater than 0"),
    ("{mode: rate, max_in_flight: 100001}", "less than or equal to 100000"),
    ("{mode: concurrency, stages: [{duration_s: 1, target: 4, shape: exponential}]}", "exponential stage"),
    ("{mode: rate, stages: [{duration_s: 1, target: 4, shape: cubic}]}", "shape"),
])
def test_bad_arrival_fields_name_their_line(load, msg):
    from harness.errors import InputError

    with pytest.raises(InputError) as e:
        parse_scenario(f"name: x\nload: {load}\n", "s.yaml")
    assert msg in str(e.value) and "s.yaml:2" in str(e.value)


def test_bad_arrival_fields_exit_2_at_validate(tmp_path):
    import subprocess
    import sys

    from tests.support.processes import ROOT

    f = write(tmp_path, "name: x\nload: {mode: rate, arrival: gamma, burstiness: -1}\n")
    p = subprocess.run([sys.executable, "-m", "harness", "validate", f], cwd=ROOT, capture_output=True,
                       text=True, env=bare_env(), timeout=60)
    assert p.returncode == 2 and "burstiness" in p.stderr + p.stdout


@pytest.fixture(scope="module")
def fixed():
    """An emulator replica with a known schedule: first token 50 ms after the request, then 10 ms."""
    with emulate_process("fixed-50ms-10ms") as url:
        yield url


def test_max_in_flight_holds_arrivals_back_and_latency_runs_from_the_intended_time(fixed, tmp_path):
    """40 req/s of 6-token answers (~100 ms each) under a cap of 2: the server never sees more
    than 2 at once (ground truth), the excess is counted as held back, and the held requests'
    latency includes their wait, so the queue shows instead of vanishing (no coordinated omission)."""
    import urllib.request
    urllib.request.urlopen(urllib.request.Request(fixed + "/emulator/ground_truth/reset", method="POST")).read()
    text = """
name: capped
target: {protocol: tgi}
workload: {prompt_tokens: {dist: fixed, value: 8}, output_tokens: {dist: fixed, value: 6}}
load: {mode: rate, arrival: constant, levels: [40], warmup_s: 0, duration_s: 1, cooldown_s: 0, max_in_flight: 2}
"""
    p = run_cli([write(tmp_path, text), "--url", fixed], tmp_path)
    assert p.returncode in (0, 4), p.stderr
    req = pd.read_parquet(run_dir(tmp_path) / "requests.parquet").sort_values("start_ns")
    assert 38 <= len(req) <= 42 and req.error_class.isna().all()
    # never more than 2 in flight: each send starts after all but one earlier request ended
    ends = []
    for s, e in zip(req.start_ns, req.end_ns):
        ends = [x for x in ends if x > s]
        assert len(ends) <= 1
        ends.append(e)
    lag = (req.start_ns - req.intended_ns) / 1e9
    assert lag.iloc[-1] > 0.5                       # ~40 x 0.05 s of work queued behind the cap
    assert (req.ttft_s >= lag + 0.045).all()        # the wait is inside the latency
    hist = [json.load(open(f)) for f in glob.glob(str(run_dir(tmp_path) / "**" / "*.json"), recursive=True)]
    held = [h["generator"]["held_back"] for h in hist if isinstance(h.get("generator"), dict)
            and "held_back" in h["generator"]]
    assert held and 20 <= held[0] <= 40
    gt = get_json(fixed + "/emulator/ground_truth")
    assert gt["total"]["requests_received"] == len(req)
    # the server's own TTFT stays at its 50 ms schedule: the queue was the generator's, and is shown.
    # Its p90, not its p99 (the slowest of 40, which one stall of the emulator's loop decides)
    assert gt["total"]["ttft_us"]["p90"] < 150_000 and req.ttft_s.median() > 0.3, gt["total"]["ttft_us"]


def test_gamma_arrivals_are_burstier_than_constant_against_the_emulator(fixed, tmp_path):
    """Gamma(0.25) at 50 req/s: gaps between intended sends spread ~2x the mean (CV 1/sqrt(k)),
    and the emulator received every request the records hold."""
    text = """
name: bursty
target: {protocol: tgi}
workload: {seed: 3, prompt_tokens: {dist: fixed, value: 8}, output_tokens: {dist: fixed, value: 2}}
load: {mode: rate, arrival: gamma, burstiness: 0.25, levels: [50], warmup_s: 0, duration_s: 3, cooldown_s: 0}
"""
    import urllib.request
    urllib.request.urlopen(urllib.request.Request(fixed + "/emulator/ground_truth/reset", method="POST")).read()
    p = run_cli([write(tmp_path, text), "--url", fixed], tmp_path)
    assert p.returncode in (0, 4), p.stderr
    req = pd.read_parquet(run_dir(tmp_path) / "requests.parquet")
    assert 60 <= len(req) <= 260
    gaps = req.intended_ns.sort_values().diff().dropna() / 1e9
    cv = gaps.std() / gaps.mean()
    assert 1.3 < cv < 3.0, cv
    assert get_json(fixed + "/emulator/ground_truth")["total"]["requests_received"] == len(req)


def test_the_json_schema_covers_the_arrival_fields():
    from harness.scenario.loader import scenario_json_schema

    text = json.dumps(scenario_json_schema())
    for word in ('"burstiness"', '"max_in_flight"', '"exponential"', '"gamma"', '"sharegpt"', '"parquet"',
                 '"tokenizer"', '"min_prompt_tokens"', '"sample"', '"shared_prefix"', '"mooncake"', '"burstgpt"',
                 '"speedup"', '"sessions"', '"think_time_s"', '"sticky"'):
        assert word in text
