"""Latency distributions per cell: TTFT and TPOT CDFs of the successful requests sent in each
measured window, in ms, the whole shape rather than four percentiles."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from harness.analysis.slo import bounds
from harness.analysis.stats import pct_name
from harness.analysis.summary import RunAnalysis
from harness.report.figure import COLORS, plain_log_ticks, png
from harness.report.slo_mark import RED, set_limits

STYLES = ("-", "--", ":", "-.")   # a cell's repeats, in order


def _window_values(req: pd.DataFrame, c, col: str) -> np.ndarray:
    """Sorted ms values of ``col`` for the cell's successful requests sent inside its window."""
    r = req[(req["cell"] == c.cell) & req["error_class"].isna()]
    sent = r["intended_ns"].fillna(r["start_ns"]) if "intended_ns" in r else r["start_ns"]
    r = r[(sent >= c.start_ns) & (sent < c.end_ns)]
    return np.sort(pd.to_numeric(r[col], errors="coerce").dropna().to_numpy(float)) * 1000


def _windows_by_cell(a: RunAnalysis) -> list[tuple[str, list]]:
    """[(cell, its measured windows)]: one window per cell, or each repeat's window."""
    by_name = {w.cell: w for w in a.windows}
    return [(c.cell, [by_name[r] for r in c.repeats if r in by_name] or [c]) for c in a.cells]


def _fit(ax: Axes, bound) -> None:
    """The x axis over the curves (a margin of 4% of their decades); the SLO's bound on this
    metric, where it does not squeeze them, as a line with a ring at its percentile: a curve
    passing above the ring meets it."""
    xs = np.concatenate([ln.get_xdata() for ln in ax.lines])
    lo, hi = math.log10(xs.min()), math.log10(xs.max())
    pad = 0.04 * max(hi - lo, 0.1)
    limit = None if bound is None else bound.limit_s * 1000
    drawn = set_limits(ax, "x", 10 ** (lo - pad), 10 ** (hi + pad), limit, log=True,
                       name=f"{pct_name(bound.q)} SLO" if bound else "SLO")
    if drawn == "line":
        ax.plot([limit], [bound.q / 100], "o", mfc="none", mec=RED, ms=7, zorder=5, gid="slo")


def latency_cdfs(a: RunAnalysis) -> str | None:
    fig = cdf_figure(a)
    return None if fig is None else png(fig)


def cdf_figure(a: RunAnalysis) -> Figure | None:
    """One colour per cell, one line style per repeat; the SLO's tail bound on TTFT or TPOT as a
    ring (gid "slo") at its percentile."""
    req = a.run.requests
    if req.empty:
        return None
    fig = Figure(figsize=(11, 3.8))
    axes = [fig.add_subplot(1, 2, i + 1) for i in range(2)]
    groups = _windows_by_cell(a)
    palette = "tab10" if len(groups) <= 10 else "tab20"
    colours = COLORS if len(groups) <= len(COLORS) else [colormaps[palette](i % 20)
                                                        for i in range(len(groups))]
    drawn = False
    for i, (cell, windows) in enumerate(groups):
        for j, w in enumerate(windows):
            for ax, col in zip(axes, ("ttft_s", "tpot_s")):
                v = _window_values(req, w, col)
                if v.size:
                    drawn = True
                    ax.step(v, np.arange(1, v.size + 1) / v.size, where="post", lw=1,
                            ls=STYLES[j % len(STYLES)], color=colours[i % len(colours)],
                            label=cell if j == 0 else None)
    if not drawn:
        return None
    slo = {b.metric: b for b in sorted(bounds(a.slo), key=lambda b: b.q)}  # the tail bound
    for ax, name, metric in zip(axes, ("TTFT", "TPOT"), ("ttft_s", "tpot_s")):
        ax.set_xscale("log")
        _fit(ax, slo.get(metric))
        plain_log_ticks(ax.xaxis)
        ax.set_xlabel(f"{name} (ms, log scale)")
        ax.set_ylabel("share of requests")
        ax.set_title(f"{name} CDF per cell", fontsize=10)
        ax.grid(alpha=0.3)
    handles, _ = axes[1].get_legend_handles_labels()
    most = max(len(w) for _, w in groups)
    if most > 1:
        handles += [Line2D([], [], color="#555555", lw=1, ls=STYLES[k % len(STYLES)],
                           label=f"repeat {k + 1}") for k in range(most)]
    axes[1].legend(handles=handles, fontsize=6, ncol=2, loc="lower right")
    return fig
