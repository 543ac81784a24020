"""Choosing load levels for ``levels: auto``: find where throughput stops growing or latency breaks.

Start: one short probe (:func:`estimate_start`) measures latency at a low and a higher level,
fits how it grows with the load, and estimates where throughput saturates or the SLO is reached;
the explore starts a factor below that estimate instead of at 1. Explore: multiply the level by
``growth`` until a signal fires: the SLO breaks, throughput grows by less than ``min_gain`` over
the best lower level, TTFT or TPOT p50 grows faster than the load (their growth ratio over the
level ratio beyond ``latency_growth``, once above ``latency_floor_s``), or the over-saturation
test of the cell's window fires (:mod:`harness.analysis.saturation`). Refine: the knee lies
between the highest level still "below" it and the lowest level "past" it (a signal, or
throughput within ``min_gain`` of the best); bisect that bracket geometrically while cells remain. When the start is already past the
knee, the search steps down by ``growth`` first. All bounded by ``max_level`` and ``max_cells``
(cells per replica count).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np


@dataclass(frozen=True)
class LevelResult:
    """What the search needs from one finished cell."""

    level: float
    throughput: float                 # output tokens/s
    slo_ok: bool | None               # None: no SLO given (only throughput decides)
    ttft_p50_s: float | None = None
    tpot_p50_s: float | None = None
    oversaturated: bool | None = None  # None: the test had too few requests to say
    saturation: str = ""              # what the over-saturation test saw, in words

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, x) -> "LevelResult":
        """From the manifest: a dict, or the older [level, throughput, slo_ok] list."""
        return cls(**x) if isinstance(x, dict) else cls(*x)


# --------------------------------------------------------------------------------------------
# the probe: where to start
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProbePoint:
    """One short closed-loop window of the probe."""

    streams: int
    requests: int
    throughput: float                     # output tokens/s
    latency: dict[str, float]             # "e2e_s.p50", "ttft_s.p99", ... seconds

    @classmethod
    def from_requests(cls, streams: int, ok, window_s: float) -> "ProbePoint":
        """From the window's successful request rows (a DataFrame with ttft_s, tpot_s, e2e_s)."""
        lat = {}
        for m in ("ttft_s", "tpot_s", "e2e_s"):
            v = ok[m].dropna().to_numpy(float) if m in ok else np.array([])
            if len(v):
                for q in (50, 90, 95, 99, 99.9):
                    lat[f"{m}.p{str(q).replace('.', '')}"] = float(np.percentile(v, q))
        tokens = float(ok["output_tokens"].sum()) if "output_tokens" in ok else 0.0
        return cls(streams, len(ok), tokens / window_s if window_s > 0 else 0.0, lat)


@dataclass(frozen=True)
class ProbeEstimate:
    """The probe's points, what it estimated and the level the explore starts at."""

    points: list[ProbePoint]
    mode: str                        # concurrency | rate (the plan's unit for estimate and start)
    start: float
    estimate: float | None = None    # where saturation or the SLO is expected, in the plan's unit
    saturation_streams: float | None = None
    slo_streams: float | None = None
    slo_limit: str = ""              # the SLO limit expected to break first, e.g. "ttft_s.p99"
    window_s: float = 0.0

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "ProbeEstimate":
        return cls(**{**d, "points": [ProbePoint(**p) for p in d.get("points", [])]})

    def describe(self) -> str:
        unit = "streams" if self.mode == "concurrency" else "req/s"
        pts = " and ".join(f"{p.streams}" for p in self.points)
        e2e = " and ".join(f"{p.latency['e2e_s.p50'] * 1000:,.0f}" for p in self.points
                           if "e2e_s.p50" in p.latency)
        tok = " and ".join(f"{p.throughput:,.0f}" for p in self.points)
        head = f"a {self.window_s:g} s probe at {pts} streams (e2e p50 {e2e} ms; {tok} tok/s)"
        if self.estimate is None:
            return (f"{head} saw no slowdown as streams were added: the explore starts at "
                    f"{self.start:g} {unit}")
        why = []
        if self.saturation_streams is not None:
            why.append(f"throughput saturation near {self.saturation_streams:,.0f} streams")
        if self.slo_streams is not None:
            m, q = self.slo_limit.split(".")
            name = "e2e" if m == "e2e_s" else m[:-2].upper()
            why.append(f"the SLO's {name} {q} limit near {self.slo_streams:,.0f} streams")
        return (f"{head} put {' and '.join(why)}: the knee is expected near {self.estimate:,.3g} "
                f"{unit}, so the explore starts at {self.start:g} {unit}")


def _fit(points: list[ProbePoint], key: str) -> tuple[float, float] | None:
    """``latency = a + b * streams`` through the lowest and highest probe points."""
    pts = [p for p in points if key in p.latency]
    if len(pts) < 2:
        return None
    lo, hi = min(pts, key=lambda p: p.streams), max(pts, key=lambda p: p.streams)
    if hi.streams <= lo.streams:
        return None
    b = (hi.latency[key] - lo.latency[key]) / (hi.streams - lo.streams)
    return lo.latency[key] - b * lo.streams, b


def estimate_start(points: list[ProbePoint], slo, *, mode: str, min_gain: float,
                   factor: float = 4.0, max_level: float = 1024.0, min_level: float = 1.0,
                   window_s: float = 0.0) -> ProbeEstimate:
    """Where to start exploring, from the probe's closed-loop points and the SLO.

    Latency grows about linearly with the streams a batching server holds (each decode step does
    a fixed part plus a part per sequence): ``e2e = a + b * streams``. By Little's law throughput
    is ``streams / e2e``, which gains less than ``min_gain`` (the scenario's ``auto_min_gain``, as
    for the explore's plateau) from a doubling beyond ``(1 - min_gain) * a / (2 * min_gain * b)``
    streams; each SLO limit ``L`` on a figure fitted the
    same way is reached at ``(L - a) / b``. The smaller of the two is the estimate; in open loop it
    becomes a rate by Little's law again (``streams / e2e`` requests per second). The explore
    starts ``factor`` below the estimate, so the knee is bracketed from below in a few doublings,
    and at most a quarter of ``max_level``.
    """
    top = max(p.streams for p in points)
    sat = None
    e2e = _fit(points, "e2e_s.p50")
    if e2e and e2e[1] > 0 and e2e[0] > 0:
        sat = (1 - min_gain) * e2e[0] / (2 * min_gain * e2e[1])
    slo_at, slo_limit = None, ""
    for metric in ("ttft_s", "tpot_s", "e2e_s"):
        pct = getattr(slo, metric, None) if slo is not None else None
        for q, limit in (pct.model_dump().items() if pct is not None else []):
            if limit is None:
                continue
            f = _fit(points, f"{metric}.{q}")
            if f is None:
                continue
            a, b = f
            if a + b * min(p.streams for p in points) > limit:
                at = float(min(p.streams for p in points))   # already broken at the lowest point
            elif b > 0:
                at = (limit - a) / b
            else:
                continue
            if slo_at is None or at < slo_at:
                slo_at, slo_limit = at, f"{metric}.{q}"
    cands = [x for x in (sat, slo_at) if x is not None]
    integer = mode == "concurrency"

    def level_of(streams: float) -> float:
        if integer:
            return streams
        r = streams / (e2e[0] + e2e[1] * streams) if e2e else streams
        return r

    def clamp(x: float) -> float:
        # at most two doublings below the cap, so even a knee beyond it leaves a curve to read
        x = min(max(x, min_level), max(min_level, max_level / 4))
        return float(max(1, round(x))) if integer else float(f"{x:.3g}")

    if not cands:
        start = clamp(level_of(float(top)))
        return ProbeEstimate(points, mode, start, window_s=window_s)
    est = level_of(min(cands))
    return ProbeEstimate(points, mode, clamp(est / factor), est, sat, slo_at, slo_limit, window_s)


# --------------------------------------------------------------------------------------------
# the search
# --------------------------------------------------------------------------------------------
def min_level_for(mode: str) -> float:
    """The lowest level the search steps down to: one stream, or 0.1 req/s."""
    return 1.0 if mode == "concurrency" else 0.1


@dataclass
class KneeSearch:
    start: float = 1.0
    max_level: float = 1024.0
    max_cells: int = 8
    growth: float = 2.0
    min_gain: float = 0.05
    # TTFT or TPOT p50 growth ratio over the level ratio beyond which latency is "super-linear":
    # 2 is x4 latency for x2 load (closed loop: a queue forming; open loop: arrivals outpace service)
    latency_growth: float = 2.0
    latency_floor_s: float = 0.05  # below this, a p50's growth is scheduling jitter, not a queue
    min_level: float = 1.0
    integer: bool = True
    unit: str = field(default="")

    @classmethod
    def for_load(cls, load, start: float = 1.0) -> "KneeSearch":
        """The search a scenario's ``load`` section asks for (its ``auto_*`` bounds and signal
        thresholds), so the run and its summary judge levels alike."""
        return cls(start=start, max_level=float(load.auto_max_level),
                   max_cells=int(load.auto_max_cells), min_gain=load.auto_min_gain,
                   latency_growth=load.auto_latency_growth, min_level=min_level_for(load.mode),
                   integer=load.mode == "concurrency")

    def _round(self, x: float) -> float:
        return float(max(1, round(x))) if self.integer else float(f"{x:.3g}")

    def _unit(self) -> str:
        return self.unit or ("streams" if self.integer else "req/s")

    # -- the signals -----------------------------------------------------------------------
    def latency_ratio(self, lower: LevelResult, r: LevelResult) -> tuple[float, str] | None:
        """The larger of TTFT and TPOT p50 growth over the level's growth, from ``lower``."""
        if r.level <= lower.level:
            return None
        out = None
        for name, a, b in (("TTFT", lower.ttft_p50_s, r.ttft_p50_s),
                           ("TPOT", lower.tpot_p50_s, r.tpot_p50_s)):
            if a and b and a > 0 and b >= self.latency_floor_s:
                ratio = (b / a) / (r.level / lower.level)
                if out is None or ratio > out[0]:
                    out = (ratio, f"{name} p50 x{b / a:.2g} for x{r.level / lower.level:.2g} load")
        return out

    def signals(self, r: LevelResult, lower: list[LevelResult]) -> list[str]:
        """Every signal that ``r`` fires against the lower levels run before it ("slo",
        "saturated", "latency", "plateau"), in the order the search weighs them."""
        out = []
        if r.slo_ok is False:
            out.append("slo")
        if r.oversaturated:
            out.append("saturated")
        if lower:
            nearest = max(lower, key=lambda x: x.level)
            lr = self.latency_ratio(nearest, r)
            if lr and lr[0] > self.latency_growth:
                out.append("latency")
            if r.throughput < (1.0 + self.min_gain) * max(x.throughput for x in lower):
                out.append("plateau")
        return out

    def _signal(self, r: LevelResult, lower: list[LevelResult]) -> str | None:
        """Why ``r`` is past the knee judged against the lower levels run before it, or None."""
        got = self.signals(r, lower)
        if got:
            return got[0]
        return "max" if r.level >= self.max_level else None

    def _explore_stop(self, results: list[LevelResult]) -> tuple[str, int] | None:
        """Why exploring stopped and at which result, or None; scans the history in run order,
        so once stopped it stays stopped."""
        for i, r in enumerate(results):
            sig = self._signal(r, [x for x in results[:i] if x.level < r.level])
            if sig:
                return sig, i
        return None

    def _past(self, r: LevelResult, results: list[LevelResult], best: float) -> bool:
        lower = [x for x in results if x.level < r.level]
        sig = self._signal(r, lower)
        return (sig not in (None, "max")) or r.throughput >= (1.0 - self.min_gain) * best

    def bracket(self, results: list[LevelResult]) -> tuple[float | None, float | None]:
        """(highest level below the knee, lowest level past it) among ``results``."""
        if not results:
            return None, None
        best = max(r.throughput for r in results)
        past = sorted(r.level for r in results if self._past(r, results, best))
        if not past:
            return max(r.level for r in results), None
        hi = past[0]
        lows = [r.level for r in results if r.level < hi and not self._past(r, results, best)]
        return (max(lows) if lows else None), hi

    # -- the next level --------------------------------------------------------------------
    def next_level(self, results: list[LevelResult]) -> float | None:
        """The next level to run, or None when the search is done."""
        if len(results) >= self.max_cells:
            return None
        if not results:
            return self._round(min(self.start, self.max_level))
        tried = {r.level for r in results}
        stop = self._explore_stop(results)
        if stop is None:
            nxt = self._round(min(max(tried) * self.growth, self.max_level))
            return nxt if nxt not in tried else None
        if stop[0] == "max":  # still growing within the SLO at the cap: the knee lies beyond it
            return None
        lo, hi = self.bracket(results)
        if hi is None:
            return None
        if lo is None:   # even the lowest level tried is past the knee: step down
            low = min(tried)
            nxt = self._round(max(low / self.growth, self.min_level))
            return nxt if nxt < low and nxt not in tried else None
        mid = self._round(math.sqrt(lo * hi))
        if mid in tried or mid <= lo or mid >= hi or hi / lo < 1.1:
            return None
        return mid

    # -- the sentence ----------------------------------------------------------------------
    def why_stopped(self, results: list[LevelResult]) -> str:
        """Why the search ended, as a sentence (console, summary.json notes, report)."""
        if not results:
            return "no level was run"
        u = self._unit()
        stop = self._explore_stop(results)
        tried = ", ".join(f"{r.level:g}" for r in results)
        if stop is not None and stop[0] == "max":
            return (f"reached auto_max_level ({self.max_level:g} {u}) while throughput still grew "
                    f"within the SLO: the knee lies beyond the tested range; raise "
                    f"load.auto_max_level (levels tried, in order: {tried})")
        if stop is None:
            return (f"the cell budget (auto_max_cells {self.max_cells}) ran out while throughput "
                    f"still grew within the SLO: the knee was not reached; raise "
                    f"load.auto_max_cells (levels tried, in order: {tried})")
        reason, i = stop
        r = results[i]
        lower = [x for x in results[:i] if x.level < r.level]
        if reason == "slo":
            cause = f"the SLO broke at {r.level:g} {u}"
        elif reason == "saturated":
            cause = (f"the over-saturation test fired at {r.level:g} {u}"
                     + (f" (rising through the window: {r.saturation})" if r.saturation else ""))
        elif reason == "latency":
            lr = self.latency_ratio(max(lower, key=lambda x: x.level), r)
            cause = (f"latency grew faster than the load at {r.level:g} {u} "
                     f"({lr[1]}, beyond x{self.latency_growth:g} the load's growth)")
        else:
            cause = f"throughput stopped growing by {self.min_gain:.0%} at {r.level:g} {u}"
        lo, hi = self.bracket(results)
        if lo is None:
            where = (f"even the lowest level tried ({min(x.level for x in results):g} {u}) is past "
                     f"the knee; try levels below it")
        else:
            where = f"the knee was bracketed between {lo:g} and {hi:g} {u}"
            narrow = hi / lo < 1.1 or self._round(math.sqrt(lo * hi)) in (lo, hi)
            if narrow:
                where += ", one step apart"
            elif i == len(results) - 1 or len(results) >= self.max_cells:
                where += (f"; the cell budget (auto_max_cells {self.max_cells}) ran out before "
                          f"refining it: raise load.auto_max_cells to narrow it"
                          if i == len(results) - 1 else
                          " and refined until the cell budget was used up")
        met = [x for x in results if x.slo_ok is not False]
        top = (f"highest throughput {max(met, key=lambda x: x.throughput).throughput:,.0f} tok/s "
               f"at {max(met, key=lambda x: x.throughput).level:g} {u}"
               + (" within the SLO" if any(x.slo_ok is not None for x in met) else "")
               if met else "no level met the SLO")
        return f"{cause}; {where}; {top} (levels tried, in order: {tried})"
