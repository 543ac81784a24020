"""How many output tokens arrived inside a time window.

Records hold only ``first_token_ns``, ``end_ns`` and ``output_tokens``, not every token's arrival.
A request's tokens are placed on the time axis like this: the first token at ``first_token_ns``,
the other ``output_tokens - 1`` spread evenly over ``(first_token_ns, end_ns]``. A window
``[a, b)`` is credited with the first token when it arrived inside it plus the share of the rest
that its overlap with ``(first_token_ns, end_ns]`` represents. A stream that straddles a window
edge is therefore split, not counted whole on one side, which keeps tokens and energy over the
same interval (J/token = energy in window / tokens in window). Failed streams count the tokens
they delivered: those tokens were generated and paid for in energy.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def _arrays(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    f = pd.to_numeric(df["first_token_ns"], errors="coerce").to_numpy(dtype=float)
    e = pd.to_numeric(df["end_ns"], errors="coerce").to_numpy(dtype=float)
    n = pd.to_numeric(df["output_tokens"], errors="coerce").fillna(0).to_numpy(dtype=float)
    ok = np.isfinite(f) & np.isfinite(e) & (n >= 1)
    f = np.where(ok, f, 0.0)
    e = np.where(ok, np.maximum(e, f), 0.0)
    n = np.where(ok, n, 0.0)
    return f, e, n


def tokens_in_window(df: pd.DataFrame, a_ns: int, b_ns: int) -> float:
    """Output tokens (fractional) that arrived in ``[a_ns, b_ns)`` under the rule above."""
    if df.empty or b_ns <= a_ns:
        return 0.0
    f, e, n = _arrays(df)
    return float(_credit(f, e, n, float(a_ns), float(b_ns)).sum())


def _credit(f: np.ndarray, e: np.ndarray, n: np.ndarray, a: float, b: float) -> np.ndarray:
    first_in = (f >= a) & (f < b) & (n >= 1)
    rest = np.maximum(n - 1.0, 0.0)
    span = e - f
    overlap = np.clip(np.minimum(e, b) - np.maximum(f, a), 0.0, None)
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(span > 0, overlap / np.where(span > 0, span, 1.0), first_in.astype(float))
    return first_in.astype(float) + rest * frac


def token_timeline(df: pd.DataFrame, edges_ns: np.ndarray) -> np.ndarray:
    """Tokens per bin for consecutive bins ``[edges[i], edges[i+1])`` (same rule)."""
    out = np.zeros(max(len(edges_ns) - 1, 0))
    if df.empty or len(edges_ns) < 2:
        return out
    f, e, n = _arrays(df)
    for i in range(len(edges_ns) - 1):
        out[i] = _credit(f, e, n, float(edges_ns[i]), float(edges_ns[i + 1])).sum()
    return out
