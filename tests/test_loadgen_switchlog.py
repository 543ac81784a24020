"""SwitchLog (the reader's --diag): which greenlet held the event loop in a window."""

from time import perf_counter_ns

import gevent

from harness.loadgen.switchlog import SwitchLog


def _hog(ms: float) -> None:
    end = perf_counter_ns() + int(ms * 1e6)
    while perf_counter_ns() < end:     # holds the loop: no switch
        pass


def _quick() -> None:
    gevent.sleep(0)


def test_the_greenlet_that_ran_longest_in_a_window_is_named():
    log = SwitchLog().start()
    try:
        t0 = perf_counter_ns()
        gevent.joinall([gevent.spawn(_quick), gevent.spawn(_hog, 30), gevent.spawn(_quick)])
        t1 = perf_counter_ns()
        ns, who = log.holder(t0, t1)
        before = log.holder(t0 - 10**9, t0)
    finally:
        log.stop()
    assert who == "_hog" and 25e6 <= ns <= t1 - t0, (who, ns)   # named by what it was spawned with
    assert before[0] < 25e6                 # the window bounds the answer


def test_raw_greenlets_are_named_by_the_caller_and_tracing_stops():
    import greenlet

    log = SwitchLog().start()
    g = greenlet.greenlet(lambda: _hog(20))
    log.names[g] = "the reader"
    try:
        t0 = perf_counter_ns()
        g.switch()
        t1 = perf_counter_ns()
        assert log.holder(t0, t1)[1] == "the reader"
    finally:
        log.stop()
    n = len(log.switches)
    gevent.sleep(0)
    assert len(log.switches) == n          # no longer traced
