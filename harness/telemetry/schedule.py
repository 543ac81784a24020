"""A drift-free tick schedule: deadline k is ``t0 + k * period``, never ``last + period``.

Sleeping "period minus the work" accumulates every overshoot; absolute deadlines do not. A tick
that comes later than a whole period is skipped (counted in ``missed``), so a stall never turns
into a burst of back-to-back samples. Lateness of every tick is kept (bounded) for jitter stats.
"""

from __future__ import annotations

import time
from collections import deque


class Ticker:
    def __init__(self, rate_hz: float, keep: int = 100_000, clock=time.perf_counter_ns):
        if not 0 < rate_hz <= 1000:
            raise ValueError(f"rate_hz must be in (0, 1000], got {rate_hz}")
        self.period_ns = int(round(1e9 / rate_hz))
        self._clock = clock
        self.t0 = clock()
        self.k = 0
        self.missed = 0
        self.lateness_ns: deque[int] = deque(maxlen=keep)

    def next_deadline(self) -> int:
        """The next deadline not already a whole period in the past."""
        self.k += 1
        deadline = self.t0 + self.k * self.period_ns
        now = self._clock()
        if now - deadline >= self.period_ns:
            skip = (now - deadline) // self.period_ns
            self.missed += skip
            self.k += skip
            deadline = self.t0 + self.k * self.period_ns
        return deadline

    def woke(self, deadline: int) -> None:
        self.lateness_ns.append(max(0, self._clock() - deadline))

    def jitter_us(self) -> dict[str, float]:
        """Lateness percentiles (microseconds) of the ticks kept."""
        xs = sorted(self.lateness_ns)
        if not xs:
            return {"p50": 0.0, "p99": 0.0, "max": 0.0, "n": 0}

        def q(p):
            return xs[min(len(xs) - 1, int(p * (len(xs) - 1) + 0.5))] / 1e3

        return {"p50": q(0.50), "p99": q(0.99), "max": xs[-1] / 1e3, "n": len(xs)}
