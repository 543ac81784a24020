"""Axis limits from the data, and the SLO bound drawn on them only where it does not squeeze the
data: a bound far beyond the cells becomes a note above the plot, with an arrow to the side it
lies on."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Literal

from matplotlib.axes import Axes

from harness.analysis.slo import bounds
from harness.analysis.summary import RunAnalysis

SQUEEZE = 1.5   # the SLO line may widen an axis to at most this multiple of the data's span
RED = "#d62728"


def data_limits(values: Iterable[float], pad: float = 0.06, pad_hi: float | None = None
                ) -> tuple[float, float]:
    """The span of the values (points and interval ends) with a margin on both sides
    (``pad_hi`` on the high side: room for the points' names)."""
    vs = list(values)
    lo, hi = min(vs), max(vs)
    span = hi - lo or max(abs(hi) * 0.1, 1e-9)
    return lo - pad * span, hi + (pad if pad_hi is None else pad_hi) * span


def slo_limit_ms(a: RunAnalysis, key: str | None) -> float | None:
    """The SLO's bound on the latency figure ``key`` (e.g. ttft_p99_s), in ms; None without one."""
    return next((b.limit_s * 1000 for b in bounds(a.slo) if b.key == key), None)


def set_limits(ax: Axes, axis: Literal["x", "y"], lo: float, hi: float,
               slo: float | None = None, log: bool = False, name: str = "SLO") -> str:
    """Set the axis to the data's limits; draw ``slo`` as a dashed line when it fits within
    SQUEEZE x the data's span (on a ``log`` axis: of its decades), else as a note above the plot
    with an arrow to the side it lies on. Returns what was drawn: "line", "edge" or "none"."""
    lim = ax.set_xlim if axis == "x" else ax.set_ylim
    if slo is None:
        lim(lo, hi)
        return "none"
    fwd, inv = (math.log10, lambda v: 10 ** v) if log else (float, float)
    flo, fhi, fslo = fwd(lo), fwd(hi), fwd(slo)
    wide_lo, wide_hi = min(flo, fslo), max(fhi, fslo)
    if wide_hi - wide_lo <= SQUEEZE * (fhi - flo):
        margin = 0.03 * (wide_hi - wide_lo)
        flo, fhi = min(flo, fslo - margin), max(fhi, fslo + margin)
        lo, hi = inv(flo), inv(fhi)
        lim(lo, hi)
        line = ax.axvline if axis == "x" else ax.axhline
        line(slo, color=RED, ls="--", lw=1.1, zorder=1)
        near_end = (fslo - flo) / (fhi - flo) > 0.7   # the name goes on the side with room
        if axis == "x":
            ax.annotate(f" {name} {slo:,.0f} ms ", (slo, 0.98), xycoords=ax.get_xaxis_transform(),
                        color=RED, fontsize=8, va="top", ha="right" if near_end else "left")
        else:
            ax.annotate(f" {name} {slo:,.0f} ms", (0.01, slo), xycoords=ax.get_yaxis_transform(),
                        color=RED, fontsize=8, va="top" if near_end else "bottom")
        return "line"
    lim(lo, hi)
    beyond = slo > hi
    arrow = ("→" if beyond else "←") if axis == "x" else ("↑" if beyond else "↓")
    note = (f"{name} {slo:,.0f} ms {arrow}" if beyond
            else f"{arrow} {name} {slo:,.0f} ms: every cell is beyond it")
    right = axis == "x" and beyond   # above the plot, at the edge the bound lies beyond
    ax.text(1.0 if right else 0.0, 1.01, note, transform=ax.transAxes, color=RED, fontsize=8,
            ha="right" if right else "left", va="bottom")
    return "edge"
