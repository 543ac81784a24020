"""Energy from power samples: a running trapezoid integral per GPU, O(1) memory.

A window's energy is the integral's value at the end edge minus its value at the start edge; an
edge that falls after the latest sample holds that sample's power until the edge. Used where no
energy counter exists (or where one fails), and beside the counter to check it.
"""

from __future__ import annotations

import threading


class PowerIntegral:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.cum_j = 0.0
        self.last_ts_ns: int | None = None
        self.last_w: float | None = None
        self.samples = 0
        self.gaps = 0

    def add(self, ts_ns: int, power_w: float) -> None:
        with self._lock:
            if self.last_ts_ns is not None and ts_ns > self.last_ts_ns:
                self.cum_j += (power_w + self.last_w) * 0.5 * (ts_ns - self.last_ts_ns) / 1e9
            if self.last_ts_ns is None or ts_ns > self.last_ts_ns:
                self.last_ts_ns, self.last_w = ts_ns, power_w
                self.samples += 1

    def gap(self) -> None:
        """Forget the last sample: a gap must not be bridged by a straight line of guesses."""
        with self._lock:
            self.last_ts_ns = None
            self.last_w = None
            self.gaps += 1

    def at(self, ts_ns: int) -> tuple[float | None, int]:
        """(integral up to ``ts_ns`` in joules, samples so far); None before any sample."""
        with self._lock:
            if self.last_ts_ns is None:
                return (None if self.samples == 0 else self.cum_j), self.samples
            return self.cum_j + self.last_w * (ts_ns - self.last_ts_ns) / 1e9, self.samples


def trapezoid_j(ts_ns: list[int], power_w: list[float]) -> float:
    """Energy in joules under a sampled power curve (no extrapolation past the ends)."""
    e = 0.0
    for i in range(1, len(ts_ns)):
        e += (power_w[i] + power_w[i - 1]) * 0.5 * (ts_ns[i] - ts_ns[i - 1]) / 1e9
    return e
