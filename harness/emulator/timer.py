"""One timer for the whole emulator: a heap of due callbacks woken by a Linux timerfd.

asyncio's own timers wake through ``epoll_wait`` whose timeout is whole milliseconds (rounded up),
so every token would be up to 1 ms late. A timerfd armed at the next due time (absolute
CLOCK_MONOTONIC, nanoseconds) makes the event loop wake within microseconds; the callback then
runs every entry that is due, writing all due tokens in one pass. Elsewhere (no timerfd) it falls
back to ``loop.call_at``.
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import itertools
import logging
import time
from typing import Callable

from harness.emulator.histogram import LogHistogram
from harness.timerfd import open_timerfd

log = logging.getLogger(__name__)

#: Longest stretch spent writing due tokens before letting the loop read new requests (the
#: timer's own run, and a fixed-timing replica's drain inside one timer entry).
SLICE_NS = 2_000_000


class TimerWheel:
    """``at(due_ns, fn, arg)`` calls ``fn(arg, due_ns)`` at monotonic time ``due_ns`` or up to one
    tick later: wake-ups are rounded up to a grid of ``tick_ns`` so that at high token rates one
    wake-up writes every token that fell due since the last (never early, at most a tick late)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, use_timerfd: bool = True, tick_ns: int = 100_000):
        self.loop = loop
        self.tick_ns = max(1, tick_ns)
        self.heap: list = []             # (due_ns, n, fn, arg); callbacks run by the timer may push
        self.counter = itertools.count()  # directly (no re-arm is needed while it runs)
        self._armed: int | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._tfd = open_timerfd() if use_timerfd else None
        if self._tfd is not None:
            loop.add_reader(self._tfd.fd, self._on_fd)
        self.fires = 0
        # how late each wake-up came after the time it was armed for (us): the scheduler's and
        # the event loop's share of the tokens' lateness, apart from the drain's own queueing
        self.wake_us = LogHistogram()
        # wake-ups >= 10 ms late: [ms since start or reset, wall ms and CPU ms since the previous
        # CPU sample, taken at a wake-up at most 1 ms before the previous one].
        # CPU close to wall: the loop itself was busy (requests, a long drain); CPU near zero:
        # the process was not running (descheduled)
        self.stalls: collections.deque = collections.deque(maxlen=32)
        self._last = (time.monotonic_ns(), time.process_time_ns())
        self._t0 = self._last[0]

    def reset_diagnosis(self) -> None:
        """Start the wake-up histogram and the stall list afresh (a ground-truth reset)."""
        self.wake_us.clear()
        self.stalls.clear()
        self._t0 = time.monotonic_ns()

    @property
    def precise(self) -> bool:
        return self._tfd is not None

    @staticmethod
    def now_ns() -> int:
        return time.monotonic_ns()

    def at(self, due_ns: int, fn: Callable, arg) -> None:
        heapq.heappush(self.heap, (due_ns, next(self.counter), fn, arg))
        if self._armed is None or due_ns < self._armed:
            self._arm(due_ns)

    def _arm(self, due_ns: int) -> None:
        t = self.tick_ns
        due_ns = (due_ns + t - 1) // t * t
        self._armed = due_ns
        if self._tfd is not None:
            self._tfd.arm(due_ns)
        else:
            if self._handle is not None:
                self._handle.cancel()
            delay = (due_ns - time.monotonic_ns()) / 1e9
            self._handle = self.loop.call_at(self.loop.time() + max(0.0, delay), self._run)

    def _on_fd(self) -> None:
        # No read(2) of the expiration count: the end of _run always sets the timer again (or
        # disarms it), and timerfd_settime clears the count, so the fd stops being readable.
        self._run()

    def _disarm(self) -> None:
        self._armed = None
        if self._tfd is not None:
            self._tfd.disarm()

    def _run(self) -> None:
        self.fires += 1
        clock = time.monotonic_ns
        t = clock()
        if self._armed is not None and self._armed > 0:
            late_us = (t - self._armed) // 1000
            self.wake_us.record(late_us)
            t_prev, cpu_prev = self._last
            # the process's CPU clock is a system call (~1 us): read at most once a millisecond,
            # which still tells a >= 10 ms stall's CPU from its wall time
            if late_us >= 10_000 or t - t_prev >= 1_000_000:
                cpu = time.process_time_ns()
                if late_us >= 10_000:
                    self.stalls.append([round((t - self._t0) / 1e6, 1), round((t - t_prev) / 1e6, 1),
                                        round((cpu - cpu_prev) / 1e6, 1)])
                self._last = (t, cpu)
        self._armed = -1          # while running, at() never re-arms: the end of the run does
        h = self.heap
        pop = heapq.heappop
        stop = t + SLICE_NS
        while h:
            now = clock()
            if h[0][0] > now or now > stop:
                break
            due, _, fn, arg = pop(h)
            try:
                fn(arg, due)
            except Exception:  # one broken stream must not stop every other stream's clock
                log.exception("emulator timer callback failed")
        if h:
            self._arm(h[0][0])
        else:
            self._disarm()

    def close(self) -> None:
        if self._tfd is not None:
            self.loop.remove_reader(self._tfd.fd)
            self._tfd.close()
            self._tfd = None
        if self._handle is not None:
            self._handle.cancel()
