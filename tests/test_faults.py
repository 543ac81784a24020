"""The fault suite: each way a replica can fail -> the error class every affected request gets,
checked request by request against the emulator's own ground truth, with the circuit breaker
keeping the load on the healthy replica (and, switched off, the naive balancing it replaces).

Two emulator processes of one replica each (so that one can be stopped or killed); one
load-generating process runs every case as a closed-loop cell (tests/fault_driver.py).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from harness.loadgen.breaker import BreakerPicker
from tests.support.emulator import start_emulator
from tests.support.processes import ROOT, harness_env

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
    for name, spec, _, _ in [NAIVE, *TABLE]:
        case = {"name": name, "urls": urls, "pid": procs[1][0].pid, **spec}
        cases.append(case)
    (tmp / "cases.json").write_text(json.dumps(cases))
    try:
        p = subprocess.run([sys.executable, str(ROOT / "tests" / "fault_driver.py"),
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
