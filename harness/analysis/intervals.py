"""Confidence intervals on every reported figure, by the bootstrap.

One window (``method = "requests"``): the window's requests are resampled with replacement and
each figure recomputed on the resample; the interval is the 2.5th..97.5th percentile of the
resampled figures (95 %, the percentile bootstrap). Throughput and request rate resample the
requests that overlap the window (each carries its tokens in the window and whether it ended in
it); latency percentiles resample the successful requests sent in the window; J/token divides the
window's measured energy by the resampled tokens (the energy itself is one measurement).

Several windows of one configuration (repeats, ``method = "repeats+requests"``): two levels:
each resample draws the repeats with replacement, then the requests within each drawn repeat;
rates are the mean over the drawn repeats, percentiles are taken over their pooled requests. The
interval then holds run-to-run spread as well as the sampling within a window.

Resampling is seeded from the cell's name, so a report is reproducible.
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


def bootstrap(samples: list[WindowSample], name: str, *, resamples: int = RESAMPLES,
              confidence: float = CONFIDENCE) -> tuple[dict[str, tuple[float, float]], str]:
    """{figure: (low, high)} for throughput, request rate, goodput, J/token and the TTFT/TPOT/e2e
    percentiles, and the method ("requests" or "repeats+requests")."""
    rng = np.random.default_rng(_seed(name))
    k = len(samples)
    method = "requests" if k == 1 else "repeats+requests"
    draws: dict[str, list[float]] = {}

    def put(key: str, v: float) -> None:
        draws.setdefault(key, []).append(v)

    for _ in range(resamples):
        picks = [samples[i] for i in (rng.integers(0, k, k) if k > 1 else [0])]
        tput, rps, jpt, gput = [], [], [], []
        pooled: dict[str, list[np.ndarray]] = {m: [] for m in LAT_COLS}
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
            for m, vals in s.latency.items():
                if vals.size:
                    pooled[m].append(vals[rng.integers(0, vals.size, vals.size)])
        put("output_tokens_per_s", float(np.mean(tput)))
        put("request_throughput_rps", float(np.mean(rps)))
        put("goodput_rps", float(np.mean(gput)))
        if jpt and len(jpt) == len(picks):
            put("j_per_token", float(np.mean(jpt)))
        for m, parts in pooled.items():
            if parts:
                allv = np.concatenate(parts)
                for q in QS:
                    put(f"{m}_p{q:g}_s", _pct(allv, q))
    lo_q, hi_q = 50 * (1 - confidence), 100 - 50 * (1 - confidence)
    out = {}
    for key, vals in draws.items():
        a = np.asarray(vals, dtype=float)
        a = a[np.isfinite(a)]
        if a.size:
            out[key] = (float(np.percentile(a, lo_q)), float(np.percentile(a, hi_q)))
    return out, method


def overlaps(a: tuple[float, float] | None, b: tuple[float, float] | None) -> bool:
    """Whether two intervals share a point (a missing interval overlaps nothing)."""
    if a is None or b is None:
        return False
    return a[0] <= b[1] and b[0] <= a[1]
