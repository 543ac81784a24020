"""``slm-harness run`` end to end in its own process against a real streaming server."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys

import pandas as pd
import pytest

from harness.loadgen.hist import HistSet
from tests.support.loadgen_fakes import fake_server
from tests.support.ports import free_port
from tests.support.processes import ROOT, bare_env
from tests.support.runs import run_cli, run_dir, write


@pytest.fixture(scope="module")
def server():
    with fake_server(ttft_ms=40, itl_ms=10) as url:
        yield url


CLOSED = """
name: closed
target: {protocol: tgi}
workload: {seed: 3, prompt_tokens: {dist: fixed, value: 16}, output_tokens: {dist: fixed, value: 21}}
load: {mode: concurrency, levels: [4, 8], warmup_s: 0.5, duration_s: 2, cooldown_s: 0.3}
slo: {ttft_s: {p99: 0.5}, itl_s: {p50: 0.05}, max_error_rate: 0.0}
"""


def test_closed_loop_levels_records_histograms_and_slo_met(server, tmp_path):
    p = run_cli([write(tmp_path, CLOSED), "--url", server], tmp_path)
    assert p.returncode == 0, p.stderr
    assert "r1-c4" in p.stdout and "met" in p.stdout
    d = run_dir(tmp_path)
    req = pd.read_parquet(d / "requests.parquet")
    assert set(req.cell) == {"r1-c4", "r1-c8"}
    assert {"warmup", "measure"} <= set(req.phase)
    assert req.error_class.isna().all()
    assert (req.output_tokens == 21).all() and (req.replica == server).all()
    m = req[(req.cell == "r1-c8") & (req.phase == "measure")]
    # 8 streams of >= 40 ms + 20 x 10 ms for 2 s: about 8 * 2 / 0.24 = 66 requests on an idle
    # machine; a loaded one stretches the server's sleeps, so hold the records to what they show:
    # never more than 8 in flight, and 8 at some moment (every stream busy)
    c8 = req[req.cell == "r1-c8"]
    edges = sorted([(t, 1) for t in c8.start_ns] + [(t, -1) for t in c8.end_ns])
    in_flight = list(itertools.accumulate(d for _, d in edges))
    assert max(in_flight) == 8, max(in_flight)
    # and the streams kept sending: no more requests than 8 back-to-back streams could start, at
    # least half what their mean duration allows (the rest is room for a busy client's gaps)
    assert 0.5 * 8 * 2 / m.e2e_s.mean() <= len(m) <= 8 * (2 / m.e2e_s.min() + 1), \
        (len(m), m.e2e_s.describe())
    # the server's own floors (it waits 40 ms, then 10 ms between tokens; load only adds): TTFT,
    # and 20 gaps after the first token; a token queued behind the next shares its stamp, so
    # allow one gap
    assert (m.ttft_s >= 0.039).all(), m.ttft_s.min()
    assert (m.e2e_s - m.ttft_s >= 19 * 0.0099).all(), (m.e2e_s - m.ttft_s).min()
    assert (m.itl_p50_s <= m.e2e_s - m.ttft_s).all() and (m.itl_mean_s >= 0.0094).all()
    s = json.loads((tmp_path / "sum.json").read_text())
    cell = next(c for c in s["cells"] if c["cell"] == "r1-c8")
    assert cell["requests"] == len(m) and cell["ok"] == len(m)
    assert s["slo_ok"] is True
    hs = HistSet.decode(json.loads((d / "histograms" / "r1-c8.json").read_text()))
    assert hs.count("ttft") == len(m) and hs.count("e2e") == len(m)
    assert hs.count("itl") == 20 * len(m)
    # the merged histogram agrees with the records to its 3 significant digits
    assert abs(hs.percentile_s("ttft", 50) - m.ttft_s.median()) < 0.002
    win = pd.read_parquet(d / "windows.parquet")
    assert list(win[win.cell == "r1-c8"].phase) == ["warmup", "measure", "cooldown"]
    mw = win[(win.cell == "r1-c8") & (win.phase == "measure")].iloc[0]
    assert mw.end_ns - mw.start_ns == 2_000_000_000
    assert (m.intended_ns >= mw.start_ns).all() and (m.intended_ns < mw.end_ns).all()
    # every record's phase is the window its intended send time falls in (exactly, at the edges)
    for w in win.itertuples():
        inside = req[(req.cell == w.cell) & (req.intended_ns >= w.start_ns) & (req.intended_ns < w.end_ns)]
        assert (inside.phase == w.phase).all() and (req[(req.cell == w.cell) & (req.phase == w.phase)].index
                                                      .isin(inside.index)).all()
    man = json.loads((d / "manifest.json").read_text())
    assert man["status"] == "complete" and man["counts"]["requests"] == len(req)


def test_slo_violated_exits_1(server, tmp_path):
    text = CLOSED.replace("ttft_s: {p99: 0.5}", "ttft_s: {p99: 0.01}").replace("levels: [4, 8]", "levels: [2]")
    p = run_cli([write(tmp_path, text), "--url", server], tmp_path)
    assert p.returncode == 1, p.stderr
    s = json.loads((tmp_path / "sum.json").read_text())
    (check,) = [c for c in s["cells"][0]["slo"]["checks"] if c["name"] == "ttft_s.p99"]
    assert check["ok"] is False and check["observed"] > 0.04
    assert "SLO violated" in p.stdout and "fails TTFT p99 <= 10 ms" in p.stdout
    assert s["slo_ok"] is False and s["cells"][0]["slo"]["ok"] is False


def test_bad_input_exits_2(tmp_path):
    p = run_cli([write(tmp_path, "name: x\nload: {levels: [0]}\n"), "--url", "http://127.0.0.1:9"], tmp_path)
    assert p.returncode == 2 and "load.levels[0]" in p.stderr and "Traceback" not in p.stderr
    p = run_cli([write(tmp_path, "name: x\n"), "--url", "ftp://x"], tmp_path)
    assert p.returncode == 2 and "--url" in p.stderr


def test_open_loop_keeps_the_schedule_when_the_server_is_slow(tmp_path):
    """Constant 40 req/s against 1-second streams: sends stay on the intended grid."""
    with fake_server(ttft_ms=500, itl_ms=50) as url:
        text = """
name: open
target: {protocol: openai-completions}
workload: {output_tokens: {dist: fixed, value: 10}}
load: {mode: rate, arrival: constant, levels: [40], warmup_s: 0, duration_s: 2, cooldown_s: 0}
slo: {ttft_s: {p50: 0.45}}
"""
        p = run_cli([write(tmp_path, text), "--url", url], tmp_path)
    assert p.returncode == 1, p.stderr          # TTFT ~0.5 s > 0.45 s
    req = pd.read_parquet(run_dir(tmp_path) / "requests.parquet").sort_values("intended_ns")
    assert len(req) == 80
    gaps = req.intended_ns.diff().dropna()
    assert (gaps == 25_000_000).all()
    # Sent on time: a generator that waited for answers (coordinated omission) would be ~1 s late;
    # a busy 2-core machine delays single sends by tens of ms, so bound the median tightly and
    # every send well below one stream's duration.
    late = req.start_ns - req.intended_ns
    assert late.median() < 5_000_000 and (late < 250_000_000).all()
    assert req.ttft_s.between(0.5, 0.7).all() and req.error_class.isna().all()


def test_every_error_class_is_counted_and_the_run_goes_on(tmp_path):
    faults = ["http429", "http500", "http422", "sse_error", "malformed", "incomplete", "reset", "hang"]
    ds = tmp_path / "faults.jsonl"
    # each row twice: requests alternate between the live and the dead replica
    ds.write_text("".join(json.dumps({"prompt": f"fault={f} x", "n": 5}) + "\n" for f in faults for _ in "ab") +
                  "".join(json.dumps({"prompt": "fine", "n": 5}) + "\n" for _ in range(8)))
    text = f"""
name: faults
target: {{protocol: tgi, request_timeout_s: 0.8}}
workload: {{dataset: {{path: {ds}, output_tokens_field: n, shuffle: false}}}}
load: {{mode: concurrency, levels: [1], warmup_s: 0, duration_s: 4, cooldown_s: 0}}
slo: {{max_error_rate: 0.9}}
"""
    with fake_server(ttft_ms=5, itl_ms=2) as url:
        dead = "http://127.0.0.1:9"     # discard port: nothing listens, connection refused
        p = run_cli([write(tmp_path, text), "--url", f"{url},{dead}", "--replicas", "2"], tmp_path)
    assert p.returncode == 0, p.stderr
    req = pd.read_parquet(run_dir(tmp_path) / "requests.parquet")
    classes = set(req.error_class.dropna())
    assert {"http_429", "http_5xx", "http_4xx", "sse_error", "malformed", "incomplete", "reset",
            "timeout", "connect"} <= classes, classes
    assert (req[req.error_class == "connect"].replica == dead).all()
    assert len(req[req.error_class.isna()]) >= 3
    s = json.loads((tmp_path / "sum.json").read_text())
    assert sum(s["cells"][0]["errors"].values()) == s["cells"][0]["requests"] - s["cells"][0]["ok"]
    assert "errors by class" in p.stdout


def test_max_requests_ends_the_level_early(server, tmp_path):
    text = CLOSED.replace("levels: [4, 8], warmup_s: 0.5, duration_s: 2", "levels: [4], warmup_s: 0.3, duration_s: 60") \
        .replace("\nload: {", "\nload: {max_requests: 30, ")
    p = run_cli([write(tmp_path, text), "--url", server], tmp_path, timeout=50)
    assert p.returncode == 0, p.stderr
    d = run_dir(tmp_path)
    req = pd.read_parquet(d / "requests.parquet")
    assert (req.phase == "measure").sum() == 30
    win = pd.read_parquet(d / "windows.parquet")
    mw = win[win.phase == "measure"].iloc[0]
    assert mw.note.startswith("ended early") and (mw.end_ns - mw.start_ns) < 10e9
    s = json.loads((tmp_path / "sum.json").read_text())["cells"][0]
    assert s["requests"] == 30 and s["measure_s"] < 10


def test_run_launches_emulated_replicas_and_serves_the_llm_tab(tmp_path):
    """No --url: the scenario's emulator launcher brings 2 replicas up; --web-ui serves the tab."""
    import time
    import urllib.request

    port = free_port()
    text = """
name: launched
target: {protocol: openai-completions, launcher: {kind: emulator, profile: fixed-50ms-10ms}}
workload: {output_tokens: {dist: fixed, value: 16}}
load: {mode: concurrency, levels: [4], replicas: [2], warmup_s: 0.5, duration_s: 4, cooldown_s: 0}
"""
    proc = subprocess.Popen([sys.executable, "-m", "harness", "run", write(tmp_path, text), "--results",
                             str(tmp_path / "res"), "--json", str(tmp_path / "sum.json"), "--web-ui",
                             f"127.0.0.1:{port}"], cwd=ROOT, env=bare_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = None
    try:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/llm/stats", timeout=2) as r:
                    rows = {x["metric"]: x for x in json.loads(r.read())["rows"]}
                if "TTFT (ms)" in rows and int(rows["TTFT (ms)"]["count"]) > 0:
                    seen = rows
                    break
            except OSError:
                pass
            time.sleep(0.3)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    assert seen is not None and seen["Cell"]["value"].startswith("r2-c4")
    req = pd.read_parquet(run_dir(tmp_path) / "requests.parquet")
    assert req.replica.nunique() == 2 and req.error_class.isna().all()
    assert (req.input_tokens == 128).all()      # the server's usage.prompt_tokens, the default length


def test_open_loop_poisson_follows_a_ramp(server, tmp_path):
    """A 3 s ramp 0 -> 60 req/s then 2 s at 60 req/s: ~90 + ~120 arrivals, the ramp's densest last."""
    text = """
name: ramp
target: {protocol: tgi}
workload: {output_tokens: {dist: fixed, value: 4}}
load: {mode: rate, arrival: poisson, levels: [60], warmup_s: 0, duration_s: 2, cooldown_s: 0,
       stages: [{duration_s: 3, target: 60}]}
"""
    p = run_cli([write(tmp_path, text), "--url", server], tmp_path)
    assert p.returncode == 0, p.stderr
    req = pd.read_parquet(run_dir(tmp_path) / "requests.parquet")
    ramp = req[req.phase == "ramp"]
    assert 60 <= len(ramp) <= 120 and 85 <= (req.phase == "measure").sum() <= 155
    t = (ramp.intended_ns - req.intended_ns.min()) / 1e9
    thirds = [((t >= a) & (t < a + 1)).sum() for a in (0, 1, 2)]
    assert thirds[0] < thirds[1] < thirds[2]      # expected 10, 30, 50


def test_a_finished_runs_frozen_cycles_are_collected_when_the_next_run_starts():
    """During a run the accounting freezes the heap (context.FREEZE_NS), so garbage in reference
    cycles left when the run ends is out of the collector's reach; the next run's start
    (settle_heap) unfreezes and collects it, so a process running many runs (the web UI) does not
    keep each run's leftovers."""
    import gc
    import weakref

    from harness.loadgen.context import settle_heap

    class Node:
        pass

    a, b = Node(), Node()
    a.other, b.other = b, a           # a cycle: only the cyclic collector frees it
    gone = weakref.ref(a)
    gc.freeze()                       # as the accounting does mid-run
    try:
        del a, b
        gc.collect()
        assert gone() is not None     # frozen: not found
        settle_heap()
        assert gone() is None         # the next run's start collected it
    finally:
        gc.unfreeze()


def test_a_chain_refused_for_an_exhausted_cell_leaves_the_round_robin_rotation_alone():
    """A closed loop's chain asks, at each response's end, whether to send the next request on
    the same socket. When the cell has no measured requests left it must not send, and must not
    advance a round robin either: the next request acquired would skip a replica."""
    import time

    import yaml

    from harness.loadgen.context import LoadContext, PlanMessage

    scen = yaml.safe_load(CLOSED.replace("levels: [4, 8], warmup_s: 0.5", "levels: [4], warmup_s: 0")
                          .replace("target: {protocol: tgi}", "target: {protocol: tgi, balance: round-robin}")
                          .replace("\nload: {", "\nload: {max_requests: 2, "))
    urls = ["http://127.0.0.1:9", "http://127.0.0.1:10"]
    msg = PlanMessage(scenario=scen, urls=urls, replicas=2, levels=[4], run_id="t", t0_ns=time.time_ns())
    ctx = LoadContext.build(msg)
    try:
        f = ctx.factory(ctx.new_stream())
        first = ctx._chained(f, urls[0])          # rotation at a: a sends, the rotation moves to b
        second = ctx._chained(f, urls[1])         # b sends: the cell's 2 measured requests are sent
        assert first is not None and second is not None
        assert ctx._chained(f, urls[0]) is None   # exhausted (and a was a's turn: the test bites)
        assert ctx.exhausted == {first[2].cell}
        assert ctx.picker.acquire() == urls[0]    # the refused chain did not take a's turn
    finally:
        ctx.client.close()
