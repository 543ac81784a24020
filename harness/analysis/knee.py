"""Choosing load levels for ``levels: auto``: find where throughput stops growing or the SLO breaks.

Explore: start low and multiply the level by ``growth`` while the SLO holds and throughput still
grows by at least ``min_gain`` over the best so far. Refine: the knee lies between the highest
level still "below" it (SLO met and throughput under ``1 - min_gain`` of the best seen) and the
lowest level "past" it (SLO broken, or throughput within ``min_gain`` of the best); bisect that
bracket geometrically while cells remain. When the cap is reached while throughput still grows
within the SLO, there is no knee to refine. Levels are whole numbers for concurrency. All bounded
by ``max_level`` and ``max_cells`` (cells per replica count).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class LevelResult:
    level: float
    throughput: float  # output tokens/s
    slo_ok: bool | None  # None: no SLO given (only throughput decides)


@dataclass
class KneeSearch:
    start: float = 1.0
    max_level: float = 1024.0
    max_cells: int = 8
    growth: float = 2.0
    min_gain: float = 0.05
    integer: bool = True

    def _round(self, x: float) -> float:
        return float(max(1, round(x))) if self.integer else float(f"{x:.3g}")

    def _past(self, r: LevelResult, best: float) -> bool:
        return r.slo_ok is False or r.throughput >= (1.0 - self.min_gain) * best

    def next_level(self, results: list[LevelResult]) -> float | None:
        """The next level to run, or None when the search is done."""
        if len(results) >= self.max_cells:
            return None
        if not results:
            return self._round(min(self.start, self.max_level))
        tried = {r.level for r in results}
        by_level = sorted(results, key=lambda r: r.level)
        stop = self._explore_stop(results)
        if stop is None:
            nxt = self._round(min(results[-1].level * self.growth, self.max_level))
            return nxt if nxt not in tried else None
        if stop == "max":  # still growing within the SLO at the cap: the knee lies beyond it
            return None
        best = max(r.throughput for r in results)
        below = [r.level for r in by_level if not self._past(r, best)]
        past = [r.level for r in by_level if self._past(r, best)]
        if not past:
            return None
        hi = min(past)
        lows = [x for x in below if x < hi]
        if not lows:
            return None
        lo = max(lows)
        mid = self._round(math.sqrt(lo * hi))
        if mid in tried or mid <= lo or mid >= hi or hi / lo < 1.1:
            return None
        return mid

    def why_stopped(self, results: list[LevelResult]) -> str:
        """Why the search ended, as a sentence (for the report's notes)."""
        if not results:
            return "no level was run"
        stop = self._explore_stop(results)
        best = max(results, key=lambda r: r.throughput)
        tried = ", ".join(f"{r.level:g}" for r in sorted(results, key=lambda r: r.level))
        if stop == "max":
            return (f"reached auto_max_level ({self.max_level:g}) while throughput still grew within "
                    f"the SLO: the knee lies beyond the tested range; raise load.auto_max_level "
                    f"(levels tried: {tried})")
        if stop is None:
            return (f"the cell budget (auto_max_cells {self.max_cells}) ran out while throughput "
                    f"still grew within the SLO: the knee was not reached; raise "
                    f"load.auto_max_cells (levels tried: {tried})")
        first = next(r for i, r in enumerate(results) if r.slo_ok is False or (
            i >= 1 and r.throughput < (1.0 + self.min_gain) * max(x.throughput for x in results[:i])))
        cause = (f"the SLO broke at level {first.level:g}" if stop == "slo" else
                 f"throughput stopped growing by {self.min_gain:.0%} at level {first.level:g}")
        budget = " (cell budget used up)" if len(results) >= self.max_cells else ""
        return (f"{cause}; the knee was bracketed and refined{budget}; highest throughput "
                f"{best.throughput:,.0f} tok/s at level {best.level:g} (levels tried: {tried})")

    def _explore_stop(self, results: list[LevelResult]) -> str | None:
        """Why exploring stopped ("slo", "plateau", "max") or None; scans the history in order,
        so once stopped it stays stopped."""
        for i, r in enumerate(results):
            if r.slo_ok is False:
                return "slo"
            if i >= 1 and r.throughput < (1.0 + self.min_gain) * max(
                x.throughput for x in results[:i]
            ):
                return "plateau"
            if r.level >= self.max_level:
                return "max"
        return None
