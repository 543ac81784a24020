"""Real Locust master + 2 worker processes against the emulator: merged histograms vs its ground
truth, SLO exit codes, and every error class through the emulator's fault knob."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request

import pandas as pd
import pytest

from harness.loadgen.hist import HistSet
from tests.support.emulator import emulator as emulated
from tests.loadgen_fakes import window_tokens
from tests.support.ports import dead_url
from tests.support.processes import harness_env, locust_argv, locust_cluster

ENV = harness_env()


@pytest.fixture(scope="module")
def emulator():
    with emulated(2, "fixed-50ms-10ms") as reps:
        yield reps.urls


def _gt(url: str) -> dict:
    with urllib.request.urlopen(url + "/emulator/ground_truth", timeout=5) as r:
        return json.loads(r.read())


def _reset(url: str) -> None:
    urllib.request.urlopen(urllib.request.Request(url + "/emulator/ground_truth/reset", data=b"",
                                                  method="POST"), timeout=5).read()


SCEN = """
name: dist
target: {{protocol: tgi}}
workload: {{seed: 2, prompt_tokens: {{dist: uniform, min: 8, max: 24}}, output_tokens: {{dist: fixed, value: 32}}}}
load: {{mode: concurrency, levels: [12], warmup_s: 0, duration_s: 3, cooldown_s: 0}}
slo: {{ttft_s: {{p99: {ttft_p99}}}, itl_s: {{p50: 0.02}}, max_error_rate: 0.0}}
"""


def test_master_and_two_workers_merge_exactly_what_the_emulator_sent(emulator, tmp_path):
    scen = tmp_path / "s.yaml"
    scen.write_text(SCEN.format(ttft_p99=1.0))
    for u in emulator:
        _reset(u)
    with locust_cluster(scen, emulator, tmp_path, workers=2) as cluster:
        out = cluster.finish(timeout=120)
    assert cluster.master.returncode == 0, out
    gt = _gt(emulator[0])["total"]
    s = json.loads((tmp_path / "sum.json").read_text())
    (cell,) = s["cells"]
    assert cell["workers"] == 2 and cell["cell"] == "r2-c12"
    (run_dir,) = list((tmp_path / "res").iterdir())
    req = pd.read_parquet(run_dir / "requests.parquet")
    # every request the emulator completed is one record, merged from both workers
    assert len(req) == gt["requests_completed"] == cell["requests"] == cell["ok"]
    assert req.worker.nunique() == 2 and set(req.replica) == set(emulator)
    assert int(req.output_tokens.sum()) == gt["tokens_sent"] == cell["output_tokens"]
    hs = HistSet.decode(json.loads((run_dir / "histograms" / "r2-c12.json").read_text()))
    # one ITL per token after the first, from both workers, in the master's merged histogram
    assert hs.count("itl") == gt["itl_us"]["count"] == gt["tokens_sent"] - gt["requests_completed"]
    assert hs.count("ttft") == gt["ttft_us"]["count"]
    # what the client saw vs what the emulator wrote: same schedule, the client a little later
    assert abs(hs.percentile_s("itl", 50) * 1e6 - gt["itl_us"]["p50"]) < 1000
    ttft_client_ms = cell["latency"]["ttft"]["mean_s"] * 1e3
    assert 0 <= ttft_client_ms - gt["ttft_us"]["mean"] / 1e3 < 15
    assert s["slo_ok"] is True
    # throughput counts the tokens that arrived inside the window, merged from both workers
    win = pd.read_parquet(run_dir / "windows.parquet")
    w = win[win.phase == "measure"].iloc[0]
    # records carry wall-clock stamps; the workers credit on their own perf clocks: ~1 ms apart at most
    expect = window_tokens(req, int(w.start_ns), int(w.end_ns))
    assert cell["window_output_tokens"] == pytest.approx(expect, rel=0.01)
    assert cell["output_tokens_per_s"] == pytest.approx(expect / 3.0, rel=0.01)


def test_slo_violation_exits_1_with_locust_processes(emulator, tmp_path):
    scen = tmp_path / "s.yaml"
    # a 3 s window: a busy host's emulated sampler can space power readings >1.5 s apart, and a
    # window shorter than that is an invalid measurement (exit 4), not an SLO verdict
    scen.write_text(SCEN.format(ttft_p99=0.02))
    p = subprocess.run(locust_argv("--scenario", str(scen), "--host", emulator[0], "--headless", "--processes", "2",
                                   "--slm-results", str(tmp_path / "res"), "--slm-json", str(tmp_path / "sum.json"),
                                   "--only-summary"), env=ENV, cwd=tmp_path, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 1, p.stdout + p.stderr
    s = json.loads((tmp_path / "sum.json").read_text())
    bad = [c for c in s["cells"][0]["slo"]["checks"] if not c["ok"]]
    assert [c["name"] for c in bad] == ["ttft_s.p99"] and bad[0]["observed"] >= 0.05
    assert s["cells"][0]["workers"] == 2


@pytest.mark.parametrize("text,needle", [
    ("name: x\nload: {mode: rate, levels: [-1]}\n", "load.levels[0]"),
    (None, "--scenario"),
])
def test_bad_input_exits_2_under_locust(tmp_path, text, needle):
    args = ["--headless", "--host", "http://127.0.0.1:9"]
    if text is not None:
        (tmp_path / "bad.yaml").write_text(text)
        args += ["--scenario", str(tmp_path / "bad.yaml")]
    p = subprocess.run(locust_argv(*args), env=ENV, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2, p.stdout + p.stderr
    assert needle in p.stderr and "Traceback" not in p.stderr


FAULTS = {"status:429": "http_429", "status:500": "http_5xx", "status:424": "http_5xx",
          "status:422": "http_4xx", "sse_error:2": "sse_error", "malformed:2": "malformed",
          "truncate:2": "incomplete", "reset:2": "reset", "close:2": "reset", "stall:2": "timeout",
          "hang": "timeout"}


def test_every_error_class_through_the_emulator_with_two_workers(emulator, tmp_path):
    ds = tmp_path / "faults.jsonl"
    rows = [{"prompt": f"fault {f}", "n": 8, "extra_body": {"emulator_fault": f}} for f in FAULTS]
    rows += [{"prompt": "fine", "n": 8}] * 4
    ds.write_text("".join(json.dumps(r) + "\n" for r in rows))
    scen = tmp_path / "s.yaml"
    scen.write_text(f"""
name: faults
target: {{protocol: tgi, request_timeout_s: 0.7}}
workload: {{dataset: {{path: {ds}, output_tokens_field: n, shuffle: false}}}}
load: {{mode: concurrency, levels: [4], warmup_s: 0, duration_s: 4, cooldown_s: 0}}
slo: {{max_error_rate: 0.99}}
""")
    dead = dead_url()
    p = subprocess.run([sys.executable, "-m", "harness", "run", str(scen), "--url", f"{emulator[0]},{dead}",
                        "--processes", "2", "--results", str(tmp_path / "res"), "--json", str(tmp_path / "sum.json")],
                       env=ENV, cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stdout + p.stderr
    (run_dir,) = list((tmp_path / "res").iterdir())
    req = pd.read_parquet(run_dir / "requests.parquet")
    classes = set(req.error_class.dropna())
    assert set(FAULTS.values()) | {"connect"} <= classes, classes
    assert (req[req.error_class == "connect"].replica == dead).all()
    assert (req[req.error_class == "http_429"].status == 429).all()
    assert req[req.error_class == "http_5xx"].error.str.contains("HTTP 5|HTTP 424").all()
    # the merged per-class counts equal the records of both workers
    s = json.loads((tmp_path / "sum.json").read_text())["cells"][0]
    assert s["workers"] == 2
    m = req[req.phase == "measure"]
    assert s["errors"] == m.error_class.value_counts().to_dict()
    assert s["requests"] == len(m) and s["ok"] == int(m.error_class.isna().sum()) > 0


def test_open_loop_poisson_rate_is_split_across_two_workers(emulator, tmp_path):
    """40 req/s Poisson from 2 worker processes: together they offer the rate, each its share."""
    scen = tmp_path / "s.yaml"
    scen.write_text("""
name: openloop
target: {protocol: openai-chat}
workload: {seed: 4, output_tokens: {dist: fixed, value: 8}}
load: {mode: rate, arrival: poisson, levels: [40], warmup_s: 0, duration_s: 4, cooldown_s: 0}
""")
    p = subprocess.run([sys.executable, "-m", "harness", "run", str(scen), "--url", ",".join(emulator),
                        "--processes", "2", "--results", str(tmp_path / "res"), "--json", str(tmp_path / "sum.json")],
                       env=ENV, cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stdout + p.stderr
    (run_dir,) = list((tmp_path / "res").iterdir())
    req = pd.read_parquet(run_dir / "requests.parquet")
    assert req.error_class.isna().all() and (req.output_tokens == 8).all()
    assert 110 <= len(req) <= 210          # 160 expected; Poisson sd ~13
    per_worker = req.groupby("worker").size()
    assert len(per_worker) == 2 and per_worker.min() >= 0.3 * len(req)
    # Sent on time: a generator that waited for answers (coordinated omission) would be ~1 s late;
    # a busy 2-core machine delays single sends by tens of ms, so bound the median tightly and
    # every send well below one stream's duration.
    late = req.start_ns - req.intended_ns
    assert late.median() < 5_000_000 and (late < 250_000_000).all()
    assert set(req.replica) == set(emulator)
    assert req.cell.unique().tolist() == ["r2-q40"]


def test_max_requests_split_exactly_across_two_workers(emulator, tmp_path):
    scen = tmp_path / "s.yaml"
    scen.write_text(SCEN.format(ttft_p99=1.0).replace("duration_s: 3", "duration_s: 60")
                    .replace("\nload: {", "\nload: {max_requests: 31, "))
    p = subprocess.run([sys.executable, "-m", "harness", "run", str(scen), "--url", emulator[0], "--processes", "2",
                        "--results", str(tmp_path / "res"), "--json", str(tmp_path / "sum.json")],
                       env=ENV, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    (run_dir,) = list((tmp_path / "res").iterdir())
    req = pd.read_parquet(run_dir / "requests.parquet")
    assert len(req) == 31 and sorted(req.groupby("worker").size().tolist()) == [15, 16]
    assert json.loads((tmp_path / "sum.json").read_text())["cells"][0]["measure_s"] < 20
