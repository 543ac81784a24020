"""Percentiles with one stated definition, so hand-computed checks and the report agree.

Definition: linear interpolation between the closest ranks (numpy's default ``linear`` method,
the same as Excel's PERCENTILE.INC): for sorted values x[0..n-1], rank r = q/100 * (n-1),
value = x[floor r] + (r - floor r) * (x[ceil r] - x[floor r]).
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

# Percentiles every latency metric is reported at (names: p50, p90, p95, p99).
REPORTED_PERCENTILES: tuple[float, ...] = (50.0, 90.0, 95.0, 99.0)


def pct_name(q: float) -> str:
    """50 -> 'p50', 99.9 -> 'p999'."""
    return "p" + f"{q:g}".replace(".", "")


def percentile(values: Sequence[float] | np.ndarray | Iterable[float], q: float) -> float | None:
    """The q-th percentile of the finite values, or None when there are none."""
    arr = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=float)
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return None
    return float(np.percentile(arr, q, method="linear"))


def percentiles(values, qs: Iterable[float] = REPORTED_PERCENTILES) -> dict[str, float | None]:
    arr = np.asarray(values, dtype=float)
    arr = arr[np.isfinite(arr)]
    out: dict[str, float | None] = {}
    for q in qs:
        out[pct_name(q)] = float(np.percentile(arr, q, method="linear")) if arr.size else None
    return out
