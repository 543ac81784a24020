"""The cyclic garbage collector's pauses in this process. A pause stops the event loop, so it
delays every token due meanwhile (the emulator reports them beside its lateness) or read
meanwhile (the load generator's ``--diag``)."""

from __future__ import annotations

import gc
import time


class GcPauses:
    """Counts, totals and maxima per generation, from ``gc.callbacks`` between :meth:`start` and
    :meth:`stop`; with ``keep_ns``, also each pause of at least that long as (generation, ns)."""

    def __init__(self, keep_ns: int | None = None, keep_max: int = 100_000):
        self.keep_ns = keep_ns
        self.keep_max = keep_max
        self.long: list[tuple[int, int]] = []
        self._t0 = 0
        self.reset()

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._t0 = time.perf_counter_ns()
            return
        g = info["generation"]
        d = time.perf_counter_ns() - self._t0
        self.count[g] += 1
        self.total_ns[g] += d
        if d > self.max_ns[g]:
            self.max_ns[g] = d
        if self.keep_ns is not None and d >= self.keep_ns and len(self.long) < self.keep_max:
            self.long.append((g, d))

    def start(self) -> "GcPauses":
        gc.callbacks.append(self)
        return self

    def stop(self) -> None:
        if self in gc.callbacks:
            gc.callbacks.remove(self)

    def reset(self) -> None:
        self.count, self.total_ns, self.max_ns = [0, 0, 0], [0, 0, 0], [0, 0, 0]
        self.long = []

    def summary(self) -> dict:
        return {f"gen{g}": {"collections": self.count[g], "total_ms": round(self.total_ns[g] / 1e6, 3),
                            "max_ms": round(self.max_ns[g] / 1e6, 3)} for g in range(3)}
