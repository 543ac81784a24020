"""The fault suite: each way a replica can fail -> the error class every affected request gets,
checked request by request against the emulator's own ground truth, with the circuit breaker
keeping the load on the healthy replica (and, switched off, the naive balancing it replaces).

Two emulator processes of one replica each (so that one can be stopped or killed); one
load-generating process runs every case as a closed-loop cell (tests/support/fault_driver.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request

import pytest

from harness.loadgen.breaker import BreakerPicker
from tests.support.processes import ROOT, harness_env, start_emulator

ENV = harness_env()

# fault on replica 1 -> the class of every request it answers, and whether the emulator counts
# the request as faulted (a refused connection or a stopped process never reaches it)
TABLE = [
    # name            fault / signal             class        emulator counts it
    ("http 500",      {"fault": "status:500"},  "http_5xx",   "faulted"),
    ("http 503",      {"fault": "status:503"},  "http_5xx",   "faulted"),
    ("reset",         {"fault": "reset:2"},     "reset",      "faulted"),
    ("close mid-body", {"fault": "close:2"},    "reset",      "faulted"),
    ("sse error",     {"fault": "sse_error:2"}, "sse_error",  "faulted"),
    ("malformed sse", {"fault": "malformed:2"}, "malformed",  "faulted"),
    ("truncated",     {"fault": "truncate:2"},  "incomplete", "faulted"),
    ("stall",         {"fault": "stall:2"},     "timeout",    "faulted"),
    ("hang",          {"fault": "hang"},        "timeout",    "faulted"),
    ("SIGSTOP",       {"signal": "SIGSTOP"},    "timeout",    None),
    ("SIGKILL",       {"signal": "SIGKILL"},    "connect",    None),   # last: the replica stays dead
]
NAIVE = ("http 500, breaker off", {"fault": "status:500", "breaker": False}, "http_5xx", "faulted")


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("faults")
    procs = [start_emulator(tmp, profile="cpu-demo", timeout=60) for _ in (0, 1)]
    urls = [u for _, (u,) in procs]
    cases = []
    for name, spec, cls, _ in [NAIVE, *TABLE]:
        # a 1 s request timeout where the fault is a timeout; elsewhere 10 s, so that a loaded
        # machine stalling the healthy replica's ~70 ms requests past 1 s does not fail them
        case = {"name": name, "urls": urls, "pid": procs[1][0].pid,
                "timeout_s": 1.0 if cls == "timeout" else 10.0, **spec}
        cases.append(case)
    (tmp / "cases.json").write_text(json.dumps(cases))
    try:
        p = subprocess.run([sys.executable, str(ROOT / "tests" / "support" / "fault_driver.py"),
                            str(tmp / "cases.json"), str(tmp / "runs")], env=ENV, cwd=ROOT,
                           capture_output=True, text=True, timeout=150)
    finally:
        for proc, _ in procs:
            proc.kill()
            proc.wait(10)
    assert p.returncode == 0, p.stderr[-3000:]
    rows = [json.loads(ln) for ln in p.stdout.splitlines() if ln.startswith("{")]
    for r in rows:
        print(r["case"], round(r["wall_s"], 1), {u[-5:]: v for u, v in r["records"].items()})
    return urls, {r["case"]: r for r in rows}


@pytest.mark.parametrize("name,spec,cls,counted", TABLE, ids=[t[0] for t in TABLE])
def test_fault_is_classified_and_counted(outcomes, name, spec, cls, counted):
    urls, got = outcomes
    r = got[name]
    good, bad = r["records"][urls[0]], r["records"][urls[1]]
    # the healthy replica: every request fine; the faulty one: every request of the one class
    assert good["classes"] == {} and good["requests"] > 20, r
    assert bad["requests"] >= 1
    if name == "SIGKILL":     # streams open at the kill end reset, later ones are refused
        assert set(bad["classes"]) <= {"connect", "reset"} and bad["classes"].get("connect", 0) >= 1
        assert sum(bad["classes"].values()) == bad["requests"]
    else:
        assert bad["classes"] == {cls: bad["requests"]}, r
    if counted == "faulted":  # the emulator's own count of faulted requests is the same number
        assert r["ground_truth"][urls[1]]["requests_faulted"] == bad["requests"]
        assert r["ground_truth"][urls[0]]["requests_faulted"] == 0
    if r["ground_truth"]:
        assert r["ground_truth"][urls[0]]["requests_received"] == good["requests"]
    # the summary's per-replica figures agree with the records
    s = r["summary_replicas"]
    assert s[urls[1]]["errors"] == s[urls[1]]["requests"] >= 1
    # the breaker keeps the faulty replica to its opening failures and its probes
    assert bad["requests"] < 0.2 * good["requests"], r
    if name != "SIGKILL":     # a refused connection is skipped for a while before the breaker
        assert s[urls[1]]["breaker_opened"] >= 1


def test_without_the_breaker_a_fast_failing_replica_draws_the_load(outcomes):
    urls, got = outcomes
    naive, guarded = got[NAIVE[0]], got["http 500"]
    n_bad = naive["records"][urls[1]]["requests"]
    n_good = naive["records"][urls[0]]["requests"]
    assert n_bad > 3 * n_good          # least-outstanding: the replica failing at once looks idle
    assert naive["summary_replicas"][urls[1]]["breaker_opened"] == 0
    assert guarded["records"][urls[0]]["requests"] > 1.4 * n_good  # the healthy one does the work


def test_breaker_opens_probes_half_open_and_closes_on_success():
    now = [0.0]
    p = BreakerPicker(["http://a", "http://b"], failures=3, open_s=1.0, max_open_s=3.0,
                      clock=lambda: now[0])
    for _ in range(2):
        assert not p.outcome("http://b", "http_5xx")
    assert p.outcome("http://b", "reset")              # the third consecutive failure opens it
    assert {p.acquire() for _ in range(6)} == {"http://a"}
    assert not p.outcome("http://b", "http_5xx")       # a late failure of an old request: no change
    now[0] = 1.0                                       # half-open: one probe, no more
    picks = [p.acquire() for _ in range(6)]
    assert picks.count("http://b") == 1
    assert p.outcome("http://b", "timeout")            # the probe failed: open twice as long
    now[0] = 2.5
    assert "http://b" not in {p.acquire() for _ in range(4)}
    now[0] = 3.0
    assert [p.acquire() for _ in range(4)].count("http://b") == 1
    assert p.outcome("http://b", "timeout")            # capped at max_open_s
    assert p.breakers["http://b"].pause == 3.0
    now[0] = 6.0
    assert "http://b" in {p.acquire() for _ in range(2)}
    assert not p.outcome("http://b", None)             # the probe succeeded: closed
    st = p.stats()["http://b"]
    assert st["state"] == "closed" and st["trips"] == 3 and st["probes"] == 3
    assert st["open_s"] == pytest.approx(6.0)
    for u in ("http://a", "http://b"):
        p.release(u)
    assert not p.outcome("http://a", "http_429")       # overloaded is an answer, not a fault
    assert p.breakers["http://a"].fails == 0


def test_breaker_figures_per_replica_reach_summary_csv_and_report(tmp_path):
    """``run`` against two replicas, one answering 500: the breaker's openings and the requests
    sent elsewhere while it was open, per replica, in summary.json, cells.csv, replicas.csv and
    the report's replica table (through the real CLI, the same outputs as ``sweep``)."""
    import csv

    procs = [start_emulator(tmp_path, profile="cpu-demo", timeout=60) for _ in (0, 1)]
    good, bad = [u for _, (u,) in procs]
    try:
        req = urllib.request.Request(f"{bad}/emulator/fault", data=b'{"fault": "status:500"}',
                                     method="POST", headers={"content-type": "application/json"})
        urllib.request.urlopen(req, timeout=10).read()
        scen = tmp_path / "s.yaml"
        scen.write_text(
            "name: brk\ntarget: {protocol: tgi, breaker: {open_s: 0.3}}\n"
            "workload: {seed: 1, prompt_tokens: {dist: fixed, value: 8}, "
            "output_tokens: {dist: fixed, value: 8}}\n"
            "load: {mode: concurrency, levels: [4], warmup_s: 0.3, duration_s: 3, cooldown_s: 0}\n"
            "telemetry: {source: none, server_metrics: {enabled: false}}\n")
        p = subprocess.run([sys.executable, "-m", "harness", "run", str(scen), "--url",
                            f"{good},{bad}", "--results", str(tmp_path / "res"), "-q"], env=ENV,
                           cwd=ROOT, capture_output=True, text=True, timeout=120)
    finally:
        for proc, _ in procs:
            proc.kill()
            proc.wait(10)
    assert p.returncode in (0, 1, 4), p.stderr[-3000:]
    (run,) = list((tmp_path / "res").iterdir())
    (cell,) = json.loads((run / "summary.json").read_text())["cells"]
    reps = {r["replica"]: r for r in cell["per_replica"]}
    assert reps[good]["breaker_opened"] == 0 and reps[good]["breaker_skipped"] == 0
    assert reps[bad]["breaker_opened"] >= 1
    # every request kept off the failing replica went to the healthy one
    sent_good = reps[good]["requests_started"]
    assert sent_good / 2 < reps[bad]["breaker_skipped"] <= sent_good + 8
    assert cell["breaker_opened"] == reps[bad]["breaker_opened"]
    assert cell["breaker_skipped"] == reps[bad]["breaker_skipped"]
    with (run / "cells.csv").open() as fh:
        (row,) = list(csv.DictReader(fh))
    assert int(row["breaker_opened"]) == cell["breaker_opened"]
    assert int(row["breaker_skipped"]) == cell["breaker_skipped"]
    with (run / "replicas.csv").open() as fh:
        rows = {r["replica"]: r for r in csv.DictReader(fh)}
    assert int(rows[bad]["breaker_skipped"]) == reps[bad]["breaker_skipped"]
    page = (run / "report.html").read_text()
    table = page.split('id="replicas"', 1)[1].split("</table>", 1)[0]
    assert "<th>breaker opened</th><th>sent elsewhere</th>" in table
    row_bad = table.split(f'<td class="l">{bad}</td>', 1)[1].split("</tr>", 1)[0]
    assert row_bad.endswith(f"<td>{reps[bad]['breaker_opened']:,}</td>"
                            f"<td>{reps[bad]['breaker_skipped']:,}</td>")
