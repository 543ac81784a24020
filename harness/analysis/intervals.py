"""95% confidence intervals on every reported figure.

Rates (throughput, request rate, goodput, J/token): the percentile bootstrap. One window
(``method = "requests"``): the window's requests are resampled with replacement and each figure
recomputed on the resample; the interval is the 2.5th..97.5th percentile of the resampled
figures. Throughput and request rate resample the requests that overlap the window (each carries
its tokens in the window and whether it ended in it); J/token divides the window's measured energy
by the resampled tokens (the energy itself is one measurement). Several windows of one
configuration (repeats, ``method = "repeats+requests"``): each resample draws the repeats with
replacement, then the requests within each drawn repeat; rates are the mean over the drawn
repeats, so the interval holds run-to-run spread as well as the sampling within a window.

Latency percentiles (TTFT/TPOT/e2e p50..p99): the distribution-free order-statistic interval, not
the bootstrap. The bootstrap of a tail percentile from few requests is biased low (a resample
rarely holds the slowest requests, so a p99's interval sits below its own point). Of n sorted
values, the count B below the true q-quantile is Binomial(n, q), so [x_(l), x_(u)] covers it with
probability P(l <= B < u); l and u are the equal-tailed choice with P(B < l) <= 2.5% and
P(B >= u) <= 2.5% (coverage >= 95%), widened where needed to hold the point estimate (the
linear-interpolated percentile). When no rank can bound the quantile from above (q**n > 2.5%: a
p99 needs 368 requests, a p95 72, a p90 36), the upper end is open: the interval ends at the
largest value seen and ``open_ends`` says "upper" (likewise "lower" at the bottom).

With repeats the interval is the order-statistic interval of the pooled requests (the point is
their percentile), widened to cover every repeat's own percentile: the pooled interval holds the
sampling within the windows, the widening the run-to-run spread, and the point stays inside.
It is open where the pooled interval is.

Resampling is seeded from the cell's name, so a report is reproducible; the order statistics
involve no randomness.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from harness.analysis.tokens import _arrays, _credit

CONFIDENCE = 0.95
RESAMPLES = 400
LAT_COLS = {"ttft": "ttft_s", "tpot": "tpot_s", "e2e": "e2e_s"}
QS = (50.0, 90.0, 95.0, 99.0)


@dataclass
class WindowSample:
    """What one window contributes to the bootstrap (plain arrays, cheap to resample)."""

    duration_s: float
    credits: np.ndarray        # tokens in the window, per overlapping request
    ended_ok: np.ndarray       # 1.0 when the request succeeded and ended in the window
    good: np.ndarray           # 1.0 when it also met every per-request SLO bound
    latency: dict[str, np.ndarray]   # metric -> values of successful requests sent in the window
    energy_j: float | None


def window_sample(cell_req: pd.DataFrame, started_ok: pd.DataFrame, a: int, b: int,
                  energy_j: float | None, good: np.ndarray | None = None) -> WindowSample:
    """``cell_req``: the cell's records; ``started_ok``: its successful requests sent in [a, b)."""
    if cell_req.empty:
        credits = ended = np.zeros(0)
    else:
        f, e, n = _arrays(cell_req)
        credits_all = _credit(f, e, n, float(a), float(b))
        end = pd.to_numeric(cell_req["end_ns"], errors="coerce").to_numpy(dtype=float)
        ok = cell_req["error_class"].isna().to_numpy()
        ended_all = ((end >= a) & (end < b) & ok).astype(float)
        keep = (credits_all > 0) | (ended_all > 0)
        credits, ended = credits_all[keep], ended_all[keep]
    lat = {m: pd.to_numeric(started_ok[col], errors="coerce").to_numpy(dtype=float)
           for m, col in LAT_COLS.items()} if not started_ok.empty else {m: np.zeros(0) for m in LAT_COLS}
    g = np.asarray(good if good is not None else np.ones(len(started_ok)), dtype=float)
    # a canonical order, so the seeded resampling does not depend on how the rows were stored
    order = np.lexsort((ended, credits))
    lat = {m: np.sort(v) for m, v in lat.items()}
    return WindowSample((b - a) / 1e9, credits[order], ended[order], np.sort(g), lat, energy_j)


def _seed(name: str) -> int:
    return zlib.crc32(name.encode())


def _pct(x: np.ndarray, q: float) -> float:
    x = x[np.isfinite(x)]
    return float(np.percentile(x, q)) if x.size else np.nan


def binom_cdf(n: int, p: float) -> np.ndarray:
    """P(B <= k) for k = 0..n, B ~ Binomial(n, p), 0 < p < 1 (log space, no overflow)."""
    k = np.arange(1, n + 1, dtype=float)
    log_comb = np.concatenate(([0.0], np.cumsum(np.log(n - k + 1) - np.log(k))))
    kk = np.arange(n + 1, dtype=float)
    logpmf = log_comb + kk * np.log(p) + (n - kk) * np.log1p(-p)
    return np.minimum(np.cumsum(np.exp(logpmf - logpmf.max())) * np.exp(logpmf.max()), 1.0)


def order_ranks(n: int, q: float,
                confidence: float = CONFIDENCE) -> tuple[int | None, int | None]:
    """1-based ranks (l, u) of the equal-tailed order-statistic interval [x_(l), x_(u)] for the
    ``q`` quantile (0 < q < 1) of ``n`` values: the largest l with P(B < l) <= (1-c)/2 and the
    smallest u with P(B >= u) <= (1-c)/2, B ~ Binomial(n, q); None where no rank does (open)."""
    tail = (1 - confidence) / 2
    below = binom_cdf(n, q)[:n]                 # below[r-1] = P(B <= r-1) = P(x_(r) > quantile)
    ok_l = np.nonzero(below <= tail)[0]
    lo = int(ok_l[-1]) + 1 if ok_l.size else None
    ok_u = np.nonzero(1.0 - below <= tail)[0]   # 1 - below[r-1] = P(B >= r) = P(x_(r) < quantile)
    hi = int(ok_u[0]) + 1 if ok_u.size else None
    return lo, hi


def quantile_interval(x: np.ndarray, q: float, confidence: float = CONFIDENCE
                      ) -> tuple[float, float, str] | None:
    """(low, high, open) of the ``q``-th percentile (0..100) of ``x``: the order-statistic interval,
    widened to hold np.percentile's linear point; ``open`` is "", "upper", "lower" or "both"
    (that end is the extreme value seen, and the true percentile may lie beyond it)."""
    x = np.sort(x[np.isfinite(x)])
    n = x.size
    if n == 0:
        return None
    h = (n - 1) * q / 100.0   # the point lies between ranks floor(h)+1 and ceil(h)+1
    lo_r, hi_r = order_ranks(n, q / 100.0, confidence) if 0 < q < 100 else (None, None)
    opened = []
    if lo_r is None:
        opened.append("lower")
        lo_r = 1
    if hi_r is None:
        opened.append("upper")
        hi_r = n
    lo_r = min(lo_r, int(np.floor(h)) + 1)
    hi_r = max(hi_r, int(np.ceil(h)) + 1)
    return float(x[lo_r - 1]), float(x[hi_r - 1]), "both" if len(opened) == 2 else "".join(opened)


@dataclass
class Intervals:
    """A cell's intervals: {figure: (low, high)}, how they were made, and the open ends."""

    figures: dict[str, tuple[float, float]]
    method: str
    open_ends: dict[str, str]   # figure -> "upper" | "lower" | "both", for open ones only


def percentile_intervals(samples: list[WindowSample], confidence: float = CONFIDENCE
                         ) -> tuple[dict[str, tuple[float, float]], dict[str, str]]:
    """Order-statistic intervals of the latency percentiles over the windows' pooled requests,
    widened to each window's own percentile when there are several (run-to-run spread)."""
    out, opened = {}, {}
    for m in LAT_COLS:
        parts = [s.latency.get(m, np.zeros(0)) for s in samples]
        allv = np.concatenate(parts) if parts else np.zeros(0)
        for q in QS:
            key = f"{m}_p{q:g}_s"
            got = quantile_interval(allv, q, confidence)
            if got is None:
                continue
            lo, hi, how = got
            if len(samples) > 1:
                own = [_pct(v, q) for v in parts if np.isfinite(v).any()]
                lo, hi = min([lo, *own]), max([hi, *own])
            out[key] = (lo, hi)
            if how:
                opened[key] = how
    return out, opened


def intervals(samples: list[WindowSample], name: str, *, resamples: int = RESAMPLES,
              confidence: float = CONFIDENCE) -> Intervals:
    """Every figure's interval: the bootstrap for the rates, order statistics for the latency
    percentiles (the module's docstring says how)."""
    rng = np.random.default_rng(_seed(name))
    k = len(samples)
    method = "requests" if k == 1 else "repeats+requests"
    draws: dict[str, list[float]] = {}

    def put(key: str, v: float) -> None:
        draws.setdefault(key, []).append(v)

    for _ in range(resamples):
        picks = [samples[i] for i in (rng.integers(0, k, k) if k > 1 else [0])]
        tput, rps, jpt, gput = [], [], [], []
        for s in picks:
            n = len(s.credits)
            idx = rng.integers(0, n, n) if n else np.zeros(0, dtype=int)
            toks = float(s.credits[idx].sum()) if n else 0.0
            r = float(s.ended_ok[idx].sum()) / s.duration_s if n and s.duration_s > 0 else 0.0
            tput.append(toks / s.duration_s if s.duration_s > 0 else 0.0)
            rps.append(r)
            if s.energy_j is not None and toks > 0:
                jpt.append(s.energy_j / toks)
            m_ok = len(s.good)
            gi = rng.integers(0, m_ok, m_ok) if m_ok else np.zeros(0, dtype=int)
            gput.append(r * float(s.good[gi].mean()) if m_ok else 0.0)
        put("output_tokens_per_s", float(np.mean(tput)))
        put("request_throughput_rps", float(np.mean(rps)))
        put("goodput_rps", float(np.mean(gput)))
        if jpt and len(jpt) == len(picks):
            put("j_per_token", float(np.mean(jpt)))
    lo_q, hi_q = 50 * (1 - confidence), 100 - 50 * (1 - confidence)
    out = {}
    for key, vals in draws.items():
        a = np.asarray(vals, dtype=float)
        a = a[np.isfinite(a)]
        if a.size:
            out[key] = (float(np.percentile(a, lo_q)), float(np.percentile(a, hi_q)))
    lat, opened = percentile_intervals(samples, confidence)
    out.update(lat)
    return Intervals(out, method, opened)


def bootstrap(samples: list[WindowSample], name: str, *, resamples: int = RESAMPLES,
              confidence: float = CONFIDENCE) -> tuple[dict[str, tuple[float, float]], str]:
    """{figure: (low, high)} and the method, as :func:`intervals` (without the open ends)."""
    got = intervals(samples, name, resamples=resamples, confidence=confidence)
    return got.figures, got.method


def reach(c, key: str) -> tuple[float, float] | None:
    """A cell's interval of ``key`` for decisions (ties, within/beyond): an open end reaches
    +-inf, since the figure may lie anywhere beyond the extreme value seen."""
    ci = c.intervals.get(key) if c.intervals else None
    if ci is None:
        return None
    how = (getattr(c, "intervals_open", None) or {}).get(key, "")
    return (-np.inf if how in ("lower", "both") else ci[0],
            np.inf if how in ("upper", "both") else ci[1])


def overlaps(a: tuple[float, float] | None, b: tuple[float, float] | None) -> bool:
    """Whether two intervals share a point (a missing interval overlaps nothing)."""
    if a is None or b is None:
        return False
    return a[0] <= b[1] and b[0] <= a[1]
