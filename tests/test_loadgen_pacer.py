"""The open loop's send clock (harness/loadgen/pacer.py): deadlines on a timerfd, in order, all
that are due in one wake-up, never before their time, and nothing switched into after a kill.
Its precision is measured by benchmarks/replay_fidelity.py, not here."""

import subprocess
import sys

import gevent
import pytest
from time import perf_counter_ns

from harness.loadgen.pacer import Pacer
from tests.support.processes import harness_env


@pytest.fixture(params=["timerfd", "loop"])
def pacer(request):
    p = Pacer(request.param)
    assert p.kind == request.param      # Linux: the timerfd exists
    yield p
    p.close()


def test_starts_run_in_deadline_order_never_early(pacer):
    t0 = perf_counter_ns() + 5_000_000
    ran: list[tuple[int, int]] = []
    for k in (3, 0, 2, 1):              # scheduled out of order
        d = t0 + k * 2_000_000
        pacer.at(d, lambda d=d, k=k: ran.append((k, perf_counter_ns() - d)))
    gevent.sleep(0.05)
    assert [k for k, _ in ran] == [0, 1, 2, 3]
    assert all(lag >= 0 for _, lag in ran)          # an absolute deadline is never run early
    assert pacer.fired == 4


def test_what_is_due_together_runs_in_one_wake_up(pacer):
    d = perf_counter_ns() + 3_000_000
    ran = []
    for i in range(5):
        pacer.at(d + i, lambda i=i: ran.append((i, pacer.wakeups)))   # 5 deadlines within 5 ns
    gevent.sleep(0.03)
    # one wake-up ran them all (gevent's timers may wake once early, run nothing and re-arm)
    assert [i for i, _ in ran] == [0, 1, 2, 3, 4] and len({w for _, w in ran}) == 1


def test_a_past_deadline_runs_at_the_next_wake_up_and_cancel_drops_one(pacer):
    ran = []
    pacer.at(perf_counter_ns() - 1_000_000, lambda: ran.append("late"))
    h = pacer.at(perf_counter_ns() + 1_000_000, lambda: ran.append("cancelled"))
    pacer.cancel(h)
    gevent.sleep(0.02)
    assert ran == ["late"]


def test_sleep_until_parks_a_greenlet_and_a_killed_one_is_never_switched_into(pacer):
    woke = []

    def sleeper(name, dt_ns):
        d = perf_counter_ns() + dt_ns
        pacer.sleep_until(d)
        woke.append((name, perf_counter_ns() >= d))
        gevent.sleep(1)                 # now waiting on something else: must stay there

    a = gevent.spawn(sleeper, "a", 2_000_000)
    b = gevent.spawn(sleeper, "b", 20_000_000)
    gevent.sleep(0.008)
    b.kill()                            # killed while parked: its deadline must not wake anyone
    gevent.sleep(0.03)
    assert woke == [("a", True)]
    assert not a.dead                   # a is in its own sleep, untouched by b's old deadline
    a.kill()
    pacer.sleep_until(perf_counter_ns() - 1)   # a past instant: returns at once


_ALIVE = """
import gevent, sys
from time import perf_counter_ns
from harness.loadgen.pacer import Pacer
p = Pacer(sys.argv[1])
ran = []
p.at(perf_counter_ns() + 10_000_000, lambda: ran.append(1))
gevent.get_hub().join(timeout=5)    # runs the loop until nothing keeps it alive
assert ran == [1], ran
t = perf_counter_ns()
gevent.get_hub().join(timeout=5)    # nothing scheduled: returns at once, not after 5 s
print((perf_counter_ns() - t) / 1e9)
"""


@pytest.mark.parametrize("kind", ["timerfd", "loop"])
def test_a_scheduled_start_keeps_the_loop_alive_and_an_idle_pacer_does_not(kind):
    # a fresh process: in this one, watchers other tests leave behind keep the hub alive
    out = subprocess.run([sys.executable, "-c", _ALIVE, kind], env=harness_env(),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert float(out.stdout.split()[-1]) < 2.5


def test_slm_pacer_loop_selects_the_event_loop_timers(monkeypatch):
    monkeypatch.setenv("SLM_PACER", "loop")
    p = Pacer()
    assert p.kind == "loop"
    p.close()
    monkeypatch.delenv("SLM_PACER")
    p = Pacer()
    assert p.kind == "timerfd"
    p.close()
