"""Over-saturation inside one measured window: does the queue keep growing while we watch?

After guidellm's over-saturation detection: when arrivals outpace service, requests in flight and
the time to first token keep rising through the window instead of settling. The window's requests
are put into ``bins`` equal time bins (requests sent in the same moment are not independent, so a
bin's median is one point), a least-squares line is fitted through the bin medians, and a slope
counts when it is positive, its 95% interval excludes zero (t distribution, n - 2 degrees of
freedom) and the fitted rise over the window is at least ``min_rise`` of the window's median.
Like guidellm (which waits 30 s and for TTFTs above 2.5 s), it stays silent on what a short
window cannot tell: windows under ``min_span_s`` and TTFT rises under ``min_ttft_rise_s`` (the
wave-like sends of a closed loop make a few tens of ms of drift within a second or two).
Open loop: both TTFT (from the intended send time) and requests in flight must rise; closed loop
keeps a fixed number of streams, so TTFT decides, and where the servers report their queue
(``tgi_queue_size``, ``vllm:num_requests_waiting`` in the scraped ``/metrics``) it must rise too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

#: two-sided 97.5% t quantiles for 1..10 degrees of freedom; beyond, the normal's 1.96 suffices
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)


@dataclass(frozen=True)
class Slope:
    """A fitted trend: ``per_s`` (units per second), its 95% half-width, and the fitted rise over
    the window relative to the window's median (``rel_rise``)."""

    per_s: float
    half_width: float
    rel_rise: float

    def rising(self, min_rise: float) -> bool:
        return self.per_s > 0 and self.per_s - self.half_width > 0 and self.rel_rise >= min_rise


@dataclass(frozen=True)
class Saturation:
    fired: bool
    ttft: Slope | None = None
    in_flight: Slope | None = None
    queue: Slope | None = None      # the servers' own queue depth, summed over replicas

    def describe(self) -> str:
        """The trends in words, e.g. "TTFT +120.0 ms/s (+85% over the window), ..."."""
        parts = []
        if self.ttft is not None:
            parts.append(f"TTFT {self.ttft.per_s * 1000:+.1f} ms/s "
                         f"({self.ttft.rel_rise:+.0%} over the window)")
        if self.in_flight is not None:
            parts.append(f"requests in flight {self.in_flight.per_s:+.2f}/s "
                         f"({self.in_flight.rel_rise:+.0%})")
        if self.queue is not None:
            parts.append(f"server queue {self.queue.per_s:+.2f}/s")
        return ", ".join(parts)


def slope(t_s: np.ndarray, y: np.ndarray, *, bins: int = 10, min_bins: int = 5) -> Slope | None:
    """The trend of ``y`` over ``t_s`` through per-bin medians, or None with too few points."""
    t_s, y = np.asarray(t_s, float), np.asarray(y, float)
    keep = np.isfinite(t_s) & np.isfinite(y)
    t_s, y = t_s[keep], y[keep]
    if len(t_s) < min_bins or np.ptp(t_s) <= 0:
        return None
    edges = np.linspace(t_s.min(), t_s.max(), bins + 1)
    idx = np.clip(np.searchsorted(edges, t_s, side="right") - 1, 0, bins - 1)
    xs, ys = [], []
    for b in range(bins):
        sel = idx == b
        if sel.any():
            xs.append(float(np.median(t_s[sel])))
            ys.append(float(np.median(y[sel])))
    n = len(xs)
    if n < min_bins:
        return None
    x, yy = np.array(xs), np.array(ys)
    sxx = float(((x - x.mean()) ** 2).sum())
    if sxx <= 0:
        return None
    b1 = float(((x - x.mean()) * (yy - yy.mean())).sum() / sxx)
    resid = yy - (yy.mean() + b1 * (x - x.mean()))
    se = math.sqrt(float((resid ** 2).sum()) / (n - 2) / sxx)
    t = _T975[n - 3] if n - 2 <= len(_T975) else 1.96
    med = float(np.median(y))
    rise = b1 * float(t_s.max() - t_s.min())
    return Slope(b1, t * se, rise / med if med > 0 else (math.inf if rise > 0 else 0.0))


def in_flight_at(starts: np.ndarray, ends: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Requests sent by each instant of ``at`` and not yet finished."""
    s, e = np.sort(starts), np.sort(ends)
    return np.searchsorted(s, at, side="right") - np.searchsorted(e, at, side="right")


def queue_depth(samples: pd.DataFrame, start_ns: int, end_ns: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(scrape times, queue depth summed over replicas) within a window, from the run's server
    metric rows; None when no replica reported a queue gauge."""
    from harness.telemetry.server_metrics import QUEUE

    if samples is None or samples.empty:
        return None
    q = samples[samples["name"].isin(QUEUE) & (samples["ts_ns"] >= start_ns)
                & (samples["ts_ns"] <= end_ns)]
    if q.empty:
        return None
    # one value per replica per scrape; scrapes of the replicas land within ms: bin to 100 ms
    q = q.assign(t=(q["ts_ns"] // 100_000_000)).groupby(["t", "replica"])["value"].last()
    tot = q.groupby(level="t").sum()
    return tot.index.to_numpy(float) * 1e8, tot.to_numpy(float)


def thresholds(load) -> dict:
    """:func:`oversaturation`'s knobs from a scenario's ``load`` section."""
    return {"min_rise": load.auto_saturation_rise, "min_span_s": load.auto_saturation_min_s}


def oversaturation(requests: pd.DataFrame, *, closed_loop: bool, min_rise: float = 0.5,
                   bins: int = 10, min_span_s: float = 5.0, min_ttft_rise_s: float = 0.05,
                   queue: tuple[np.ndarray, np.ndarray] | None = None,
                   window_s: float | None = None) -> Saturation:
    """Judge one cell's measured requests (the run directory's request rows of one cell), and
    the servers' queue depth over the window when known (:func:`queue_depth`); ``window_s``: the
    measured window's length (default: from the first to the last send); ``ttft`` None: too few
    requests or too short a window to say."""
    if requests is None or requests.empty:
        return Saturation(False)
    df = requests[requests["phase"] == "measure"] if "phase" in requests else requests
    df = df[df["ttft_s"].notna()]
    if df.empty:
        return Saturation(False)
    sent = df["intended_ns"].to_numpy(float) if "intended_ns" in df else df["start_ns"].to_numpy(float)
    t0 = sent.min()
    span = (sent.max() - t0) / 1e9
    if (window_s if window_s is not None else span) < min_span_s:
        return Saturation(False)
    ttft = slope((sent - t0) / 1e9, df["ttft_s"].to_numpy(float), bins=bins)
    ttft_up = bool(ttft and ttft.rising(min_rise) and ttft.per_s * span >= min_ttft_rise_s)
    qs = None
    if queue is not None and len(queue[0]):
        qs = slope((np.asarray(queue[0], float) - t0) / 1e9, queue[1], bins=bins)
    if closed_loop:
        # a queue that grows by at least one request over the window, where the servers report one
        q_up = qs is None or (qs.per_s - qs.half_width > 0 and qs.per_s * span >= 1.0)
        return Saturation(ttft_up and q_up, ttft, None, qs)
    # every phase's requests: those sent in the warm-up are still in flight at the window's start
    ends = requests["end_ns"].to_numpy(float, na_value=np.inf)
    starts = requests["start_ns"].to_numpy(float)
    flight = slope((sent - t0) / 1e9, in_flight_at(starts, ends, sent), bins=bins)
    fired = bool(ttft_up and flight and flight.rising(min_rise))
    return Saturation(fired, ttft, flight, qs)
