"""The scenario's SLO applied to one request (goodput) and to one cell (the verdict).

Per request ("meets every SLO", for goodput): the request succeeded and, for every metric the SLO
bounds, its own value is within the bound of the highest percentile named for that metric (the
tail bound is the most any single request may take). For ITL a request's own statistic is used:
``itl_p50_s`` for a bound at p50 or below, else ``itl_p99_s`` (``itl_max_s`` for p99.9).
Per cell: every bounded percentile of the cell's distribution is within its bound, the error
rate is within ``max_error_rate`` and output tokens/s reach ``min_output_tokens_per_s``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from harness.analysis.stats import pct_name
from harness.scenario.models import Slo

METRICS = ("ttft_s", "itl_s", "tpot_s", "e2e_s")
LABEL = {"ttft_s": "TTFT", "itl_s": "ITL", "tpot_s": "TPOT", "e2e_s": "e2e"}


@dataclass(frozen=True)
class Bound:
    metric: str  # "ttft_s" | "itl_s" | "tpot_s" | "e2e_s"
    q: float  # percentile, e.g. 99.0
    limit_s: float

    @property
    def key(self) -> str:
        """Column name of the cell metric it bounds, e.g. 'ttft_p99_s'."""
        return f"{self.metric[:-2]}_{pct_name(self.q)}_s"

    def describe(self) -> str:
        return f"{LABEL[self.metric]} {pct_name(self.q)} <= {in_ms(self.limit_s)} ms"


def in_ms(v: float) -> str:
    """Seconds as the report shows every latency: milliseconds, 3 significant digits."""
    x = v * 1000
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


def bounds(slo: Slo | None) -> list[Bound]:
    out: list[Bound] = []
    if slo is None:
        return out
    for m in METRICS:
        p = getattr(slo, m)
        if p is not None:
            out.extend(Bound(m, q, v) for q, v in p.items())
    return out


def describe(slo: Slo | None) -> str:
    if slo is None:
        return "none"
    parts = [b.describe() for b in bounds(slo)]
    if slo.max_error_rate is not None:
        parts.append(f"error rate <= {slo.max_error_rate:.2%}")
    if slo.min_output_tokens_per_s is not None:
        parts.append(f"output tokens/s >= {slo.min_output_tokens_per_s:g}")
    return ", ".join(parts) if parts else "none"


def _request_column(metric: str, q: float) -> str:
    if metric != "itl_s":
        return metric
    if q <= 50:
        return "itl_p50_s"
    if q < 99.9:
        return "itl_p99_s"
    return "itl_max_s"


def good_mask(df: pd.DataFrame, slo: Slo | None) -> np.ndarray:
    """Boolean per row: the request succeeded and met every per-request bound."""
    if df.empty:
        return np.zeros(0, dtype=bool)
    mask = df["error_class"].isna().to_numpy().copy()
    tail: dict[str, Bound] = {}
    for b in bounds(slo):
        if b.metric not in tail or b.q > tail[b.metric].q:
            tail[b.metric] = b
    for b in tail.values():
        col = _request_column(b.metric, b.q)
        v = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float)
        if b.metric == "itl_s":
            # a one-token stream has no inter-token gap: nothing to violate
            ok = np.where(np.isfinite(v), v <= b.limit_s, True)
        else:
            ok = np.isfinite(v) & (v <= b.limit_s)
        mask &= ok
    return mask


def cell_verdict(metrics: dict, slo: Slo | None) -> tuple[bool | None, list[str]]:
    """(meets the SLO?, the failed conditions as text); None when the SLO names nothing."""
    if slo is None:
        return None, []
    failures: list[str] = []
    checked = False
    for b in bounds(slo):
        checked = True
        v = metrics.get(b.key)
        if v is None:
            failures.append(f"{b.describe()}: no successful request")
        elif v > b.limit_s:
            failures.append(f"{b.describe()}: {in_ms(v)} ms")
    if slo.max_error_rate is not None:
        checked = True
        er = metrics.get("error_rate")
        if er is None or er > slo.max_error_rate:
            failures.append(
                f"error rate <= {slo.max_error_rate:.2%}: "
                + ("no requests" if er is None else f"{er:.2%}")
            )
    if slo.min_output_tokens_per_s is not None:
        checked = True
        t = metrics.get("output_tokens_per_s") or 0.0
        if t < slo.min_output_tokens_per_s:
            failures.append(f"output tokens/s >= {slo.min_output_tokens_per_s:g}: {t:.4g}")
    if not checked:
        return None, []
    return not failures, failures


def violation(metrics: dict, slo: Slo | None) -> float:
    """How far a cell is from its SLO: the largest value/limit ratio (<= 1 means within)."""
    worst = 0.0
    for b in bounds(slo):
        v = metrics.get(b.key)
        worst = max(worst, float("inf") if v is None else v / b.limit_s)
    if slo is not None and slo.max_error_rate is not None:
        er = metrics.get("error_rate")
        lim = max(slo.max_error_rate, 1e-9)
        worst = max(worst, float("inf") if er is None else er / lim)
    if slo is not None and slo.min_output_tokens_per_s:
        t = metrics.get("output_tokens_per_s") or 0.0
        worst = max(worst, slo.min_output_tokens_per_s / t if t > 0 else float("inf"))
    return worst
