"""Starts open-loop requests at their intended times, to the tens of microseconds.

gevent's timers (libev) wait in ``epoll_wait``, whose timeout is whole milliseconds and rounded
up: a sleep meant to end at an instant ends up to a millisecond after it, on an idle host. From
about 500 requests/s that is most of the gap between two sends. Here the next deadline is a Linux
``timerfd`` armed at an absolute ``CLOCK_MONOTONIC`` time (``perf_counter_ns``'s clock, to the
nanosecond), watched by the event loop at its highest priority, so when it and the stream reader
are ready together the sends go first.

A request's greenlet is started by the pacer itself when its time comes (switched into from the
timer's callback, as gevent's own ``start`` does from its callback queue), rather than woken and
queued behind every other callback; all requests due at one wake-up start in that one callback,
in intended order. The hub's accounting callbacks also call :meth:`Pacer.poll`, so a wave of
responses ending together does not hold a due send for the whole wave.

Where no timerfd exists (not Linux) or with ``SLM_PACER=loop`` (to compare), the same schedule
runs on gevent timers.
"""

from __future__ import annotations

import heapq
import os
import sys
from itertools import count
from time import clock_gettime_ns, perf_counter_ns, CLOCK_MONOTONIC

from gevent import get_hub
from greenlet import getcurrent

from harness.timerfd import TimerFd, open_timerfd, set_timer_slack

_MAXPRI = 2            # libev's EV_MAXPRI: invoked before every other ready watcher


class Pacer:
    """Runs callables (a greenlet's ``switch``) at absolute ``perf_counter_ns`` deadlines.

    One per generator process and gevent hub; :meth:`at` schedules, :meth:`sleep_until` parks
    the calling greenlet. ``kind``: "timerfd" or "loop" (gevent timers); default from
    ``SLM_PACER``, timerfd where the OS has it (anything but "loop" asks for it)."""

    def __init__(self, kind: str | None = None):
        self.hub = get_hub()
        kind = kind or os.environ.get("SLM_PACER", "timerfd")
        self._heap: list[list] = []      # [deadline_pc, seq, fn]; fn None once cancelled
        self._seq = count()
        self._armed = 0                  # the deadline the clock is armed for (0: none)
        self._tfd: TimerFd | None = open_timerfd() if kind != "loop" else None
        self._timer = None
        # perf_counter_ns is CLOCK_MONOTONIC on Linux (offset 0); measured once in case not
        self._off = clock_gettime_ns(CLOCK_MONOTONIC) - perf_counter_ns()
        self.kind = "timerfd" if self._tfd is not None else "loop"
        if self._tfd is not None:
            set_timer_slack(1)           # else the kernel may defer each wake-up by up to 50 us
            self._watcher = self.hub.loop.io(self._tfd.fd, 1, priority=_MAXPRI)
            self._watcher.start(self._fire)
            self._watcher.ref = False    # only while something is scheduled (see _arm)
        self.fired = 0                   # callables run, and wake-ups that ran them
        self.wakeups = 0
        # diagnosis (SLM_PACER_LOG=path): each start's deadline and when it ran, appended at close
        self._log_path = os.environ.get("SLM_PACER_LOG")
        self.log: list[tuple[int, int]] | None = [] if self._log_path else None

    def at(self, pc: int, fn) -> list:
        """Run ``fn()`` in the hub at ``pc`` (at once if that is past); returns a handle for
        :meth:`cancel`."""
        entry = [pc, next(self._seq), fn]
        heapq.heappush(self._heap, entry)
        if self._heap[0] is entry:
            self._arm(pc)
        return entry

    @staticmethod
    def cancel(entry: list) -> None:
        entry[2] = None

    def sleep_until(self, pc: int) -> None:
        """Park the calling greenlet until ``pc`` (returns at once if that is past)."""
        if pc <= perf_counter_ns():
            return
        entry = self.at(pc, getcurrent().switch)
        try:
            self.hub.switch()
        finally:
            entry[2] = None              # woken otherwise (killed): never switched into later

    def poll(self) -> int:
        """Run what is due now (from the hub: a callback or a watcher); returns how many ran."""
        heap = self._heap
        if not heap or heap[0][0] > perf_counter_ns():
            return 0
        return self._run_due()

    # ------------------------------------------------------------------------------------------
    def _arm(self, pc: int) -> None:
        self._armed = pc
        if self._tfd is not None:
            self._tfd.arm(pc + self._off)
            if not self._watcher.ref:
                self._watcher.ref = True     # a scheduled start keeps the loop alive
            return
        if self._timer is not None:
            self._timer.stop()
        self._timer = self.hub.loop.timer(max(0.0, (pc - perf_counter_ns()) / 1e9), 0.0)
        self._timer.start(self._fire)

    def _fire(self) -> None:
        if self._tfd is not None:
            self._tfd.clear()
        self._armed = 0
        self.wakeups += 1
        self._run_due()

    def _run_due(self) -> int:
        heap = self._heap
        n = 0
        while heap:
            now = perf_counter_ns()
            if heap[0][0] > now:
                break
            pc, _, fn = heapq.heappop(heap)
            if fn is not None:
                n += 1
                if self.log is not None:
                    self.log.append((pc, now))
                try:
                    fn()
                except BaseException:    # one request's bug must not stop the schedule
                    self.hub.handle_error(fn, *sys.exc_info())
        self.fired += n
        if heap:
            if heap[0][0] != self._armed:
                self._arm(heap[0][0])
        elif self._tfd is not None and self._watcher.ref:
            self._watcher.ref = False
        return n

    def close(self) -> None:
        if self.log:
            with open(self._log_path, "a") as f:
                f.writelines(f"{d} {t}\n" for d, t in self.log)
            self.log.clear()
        self._heap.clear()
        if self._tfd is not None:
            self._watcher.stop()
            self._watcher.close()
            self._tfd.close()
            self._tfd = None
        if self._timer is not None:
            self._timer.stop()
            self._timer = None

