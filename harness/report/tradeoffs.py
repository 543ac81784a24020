"""The trade-off figures: each 2-D projection of the frontier's three objectives (throughput,
latency, J/token) with the third as colour, the frontier drawn as a line through its cells, 95%
interval bars on both axes, invalid cells crossed out; plus the interactivity plane and the
two-run comparison plane."""

from __future__ import annotations

import math

from matplotlib.axes import Axes
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from harness.analysis.metrics import CellMetrics
from harness.analysis.summary import RunAnalysis
from harness.report import objectives as obj
from harness.report.figure import (
    COLORS,
    MARKERS,
    latency_label,
    plain_log_ticks,
    png,
    replicas_word,
)
from harness.report.objectives import Objective
from harness.report.slo_mark import RED, data_limits, set_limits, slo_limit_ms

NO_COLOUR = "#cccccc"   # a cell without the colour objective (e.g. no energy measured)


def throughput_vs_latency(a: RunAnalysis) -> str | None:
    return projection(a, obj.latency(a), obj.throughput(), obj.energy(), "Throughput vs latency")


def energy_vs_throughput(a: RunAnalysis) -> str | None:
    return projection(a, obj.throughput(), obj.energy(), obj.latency(a),
                      "Energy per token vs throughput")


def energy_vs_latency(a: RunAnalysis) -> str | None:
    return projection(a, obj.latency(a), obj.energy(), obj.throughput(),
                      "Energy per token vs latency")


def interactivity(a: RunAnalysis) -> str | None:
    """What one user feels (1 / TPOT p50) against what the fleet delivers, J/token as colour."""
    return projection(a, obj.throughput(), obj.per_user_speed(), obj.energy(),
                      "Interactivity: per-user speed vs total throughput")


def projection(a: RunAnalysis, x: Objective, y: Objective, colour: Objective, title: str
               ) -> str | None:
    fig = projection_figure(a, x, y, colour, title)
    return None if fig is None else png(fig)


def projection_figure(a: RunAnalysis, x: Objective, y: Objective, colour: Objective, title: str
                      ) -> Figure | None:
    """One plane: cells with both coordinates (marker per replica count, a thin line through
    each count's levels), ``colour`` as colour; None when no cell has both. Artists a reader
    may look for carry a gid: "frontier", "invalid", "recommended"."""
    pts = [c for c in a.cells if x.value(c) is not None and y.value(c) is not None]
    if not pts:
        return None
    fig = Figure(figsize=(6.6, 4.6))
    ax = fig.add_subplot()
    handles = _cells(fig, ax, a, pts, x, y, colour)
    handles += _error_bars(ax, pts, x, y)
    handles += _frontier(ax, pts, x, y) + _marks(ax, a, pts, x, y)
    for c in pts:
        ax.annotate(c.cell, (x.value(c), y.value(c)), textcoords="offset points", xytext=(6, 5),
                    fontsize=7, color="#333333")
    for axis, o in (("x", x), ("y", y)):
        _fit(ax, axis, o, pts, a)
    ax.set_xlabel(_scaled(x.label, ax.get_xscale()))
    ax.set_ylabel(_scaled(y.label, ax.get_yscale()))
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(handles=handles, fontsize=7, loc="best", framealpha=0.85)
    return fig


def _cells(fig: Figure, ax: Axes, a: RunAnalysis, pts: list[CellMetrics], x: Objective,
           y: Objective, colour: Objective) -> list:
    """The points, coloured by ``colour`` on one scale with its colour bar; legend handles of
    the replica counts' markers."""
    known = [v for v in (colour.value(c) for c in pts) if v is not None]
    cmap = "viridis" if colour.higher_is_better else "viridis_r"
    norm = Normalize(min(known), max(known)) if known else None
    if norm is not None and norm.vmin == norm.vmax:
        norm = Normalize(norm.vmin * 0.95, norm.vmax * 1.05 + 1e-12)
    counts = sorted({c.replicas for c in a.cells})
    handles = []
    for i, reps in enumerate(counts):
        group = sorted((c for c in pts if c.replicas == reps), key=lambda c: c.level)
        if not group:
            continue
        m = MARKERS[i % len(MARKERS)]
        ax.plot([x.value(c) for c in group], [y.value(c) for c in group], "-", color="#aaaaaa",
                lw=1, zorder=2)
        cv = [colour.value(c) for c in group]
        faces = [NO_COLOUR if v is None else _rgba(cmap, norm, v) for v in cv]
        ax.scatter([x.value(c) for c in group], [y.value(c) for c in group], c=faces, marker=m,
                   s=48, edgecolors="#333333", linewidths=0.6, zorder=4)
        handles.append(Line2D([], [], color="#aaaaaa", marker=m, mfc="#dddddd", mec="#333333",
                              label=replicas_word(reps)))
    if norm is not None:
        sm = fig.colorbar(_mappable(cmap, norm), ax=ax, pad=0.02)
        sm.set_label(f"{colour.label} (yellow: better)", fontsize=8)
    else:
        ax.text(0.99, 0.01, f"no {colour.label} measured: no colour", transform=ax.transAxes,
                ha="right", va="bottom", fontsize=7, color="#777777")
    return handles


def _rgba(cmap: str, norm: Normalize, v: float):
    from matplotlib import colormaps

    return colormaps[cmap](norm(v))


def _mappable(cmap: str, norm: Normalize):
    from matplotlib.cm import ScalarMappable

    return ScalarMappable(norm=norm, cmap=cmap)


OPEN_LABEL = "open: too few requests to bound it"
# the arrowhead drawn at an open end, by axis and end
OPEN_MARKERS = {("x", "upper"): ">", ("x", "lower"): "<", ("y", "upper"): "^", ("y", "lower"): "v"}


def _error_bars(ax: Axes, pts: list[CellMetrics], x: Objective, y: Objective,
                colour: str = "#555555") -> list:
    """95% interval bars on both axes, for cells that carry intervals; an end that is open
    (a percentile the window's requests cannot bound: the bar stops at the extreme value seen)
    ends in an arrowhead pointing on. Returns the legend handle for those, if any were drawn."""
    opened = False
    for c in pts:
        cx, cy = x.value(c), y.value(c)
        ix, iy = x.interval(c), y.interval(c)
        if ix is None and iy is None:
            continue
        ax.errorbar([cx], [cy],
                    xerr=None if ix is None else [[max(cx - ix[0], 0)], [max(ix[1] - cx, 0)]],
                    yerr=None if iy is None else [[max(cy - iy[0], 0)], [max(iy[1] - cy, 0)]],
                    fmt="none", ecolor=colour, elinewidth=0.9, capsize=2.5, alpha=0.8,
                    zorder=3)
        for axis, o, ci in (("x", x, ix), ("y", y, iy)):
            how = o.open_end(c) if ci is not None else ""
            for end, at in (("lower", ci[0] if ci else None), ("upper", ci[1] if ci else None)):
                if how not in (end, "both"):
                    continue
                px, py = (at, cy) if axis == "x" else (cx, at)
                ax.plot([px], [py], ls="none", marker=OPEN_MARKERS[axis, end], ms=6, color=colour,
                        zorder=3.2, gid="open-end")
                opened = True
    if not opened:
        return []
    return [Line2D([], [], ls="none", marker="^", ms=6, color=colour, label=OPEN_LABEL)]


def _frontier(ax: Axes, pts: list[CellMetrics], x: Objective, y: Objective) -> list:
    """The frontier (over all three objectives) as a line through its cells in x order, each
    cell ringed; invalid cells are never among them (their frontier status is 'invalid')."""
    fr = sorted((c for c in pts if c.frontier == "frontier"), key=x.value)
    if not fr:
        return []
    xs, ys = [x.value(c) for c in fr], [y.value(c) for c in fr]
    ax.plot(xs, ys, "-", color="black", lw=1.8, zorder=3.5, gid="frontier")
    ax.scatter(xs, ys, s=190, facecolors="none", edgecolors="black", linewidths=1.4, zorder=5)
    return [Line2D([], [], color="black", lw=1.8, marker="o", mfc="none", ms=11,
                   label="Pareto frontier (3 objectives)")]


def _marks(ax: Axes, a: RunAnalysis, pts: list[CellMetrics], x: Objective, y: Objective) -> list:
    """Invalid cells crossed out in red, the recommended cell starred."""
    handles = []
    bad = [c for c in pts if c.verdict == "invalid"]
    if bad:
        ax.scatter([x.value(c) for c in bad], [y.value(c) for c in bad], marker="x", s=130,
                   color=RED, linewidths=2, zorder=6, gid="invalid")
        handles.append(Line2D([], [], ls="none", marker="x", color=RED, mew=2, ms=9,
                              label="invalid: off the frontier"))
    rec = a.cell(a.recommendation.cell) if a.recommendation.cell else None
    if rec is not None and rec in pts:
        ax.scatter([x.value(rec)], [y.value(rec)], marker="*", s=280, color="gold",
                   edgecolors="black", zorder=7, gid="recommended")
        handles.append(Line2D([], [], ls="none", marker="*", color="gold", mec="black", ms=14,
                              label="recommended"))
    return handles


def _scaled(label: str, scale: str) -> str:
    """'TTFT p99 (ms)' -> 'TTFT p99 (ms, log scale)' on a log axis."""
    if scale != "log":
        return label
    return label[:-1] + ", log scale)" if label.endswith(")") else label + " (log scale)"


LOG_SPAN = 20   # a latency axis whose cells span this ratio or more is drawn on a log scale


def _fit(ax: Axes, axis: str, o: Objective, pts: list[CellMetrics], a: RunAnalysis) -> None:
    """Limits from the values and their intervals; the SLO drawn where it does not squeeze them.
    Latency spread over decades (cells far past the knee) goes on a log scale, so one
    overloaded cell does not push the others into a corner."""
    vals = [o.value(c) for c in pts]
    for c in pts:
        ci = o.interval(c)
        if ci is not None:
            vals += list(ci)
    slo = slo_limit_ms(a, o.latency_key) if o.latency_key else None
    pad_hi = 0.14 if axis == "x" else 0.08
    positive = [v for v in vals if v > 0]
    if o.latency_key and positive and max(positive) >= LOG_SPAN * min(positive):
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
        plain_log_ticks(ax.xaxis if axis == "x" else ax.yaxis)
        lo, hi = data_limits([math.log10(v) for v in positive], pad_hi=pad_hi)
        set_limits(ax, axis, 10 ** lo, 10 ** hi, slo, log=True)
        return
    lo, hi = data_limits(vals, pad_hi=pad_hi)
    set_limits(ax, axis, lo, hi, slo)


def compare_tradeoff(a: RunAnalysis, b: RunAnalysis) -> str | None:
    fig = compare_figure(a, b)
    return None if fig is None else png(fig)


def compare_figure(a: RunAnalysis, b: RunAnalysis) -> Figure | None:
    """Every cell of both runs on one throughput/latency plane (A's frontier latency, in ms), each
    point named, with its 95% interval bars, so a shift between the runs is seen cell by cell and
    against the noise; None when no cell has both."""
    key = a.latency_key
    tput, lat = obj.throughput(), obj.latency(a)
    fig = Figure(figsize=(7.2, 4.8))
    ax = fig.add_subplot()
    drawn, opened = False, []
    # B's names go below its points so that a cell both runs put close together stays readable
    for tag, run, marker, col, dy in (("A", a, "o", COLORS[0], 4), ("B", b, "s", COLORS[1], -11)):
        pts = [c for c in run.cells if tput.value(c) is not None and lat.value(c) is not None]
        if not pts:
            continue
        drawn = True
        ax.scatter([tput.value(c) for c in pts], [lat.value(c) for c in pts], marker=marker, s=36,
                   color=col, alpha=0.85, label=f"{tag}: {run.run_id}")
        opened += _error_bars(ax, pts, tput, lat, colour=col)[:1]
        for c in pts:
            ax.annotate(c.cell, (tput.value(c), lat.value(c)), textcoords="offset points",
                        xytext=(5, dy), fontsize=7, color=col)
    if not drawn:
        return None
    ax.set_xlabel("output tokens/s")
    ax.set_ylabel(latency_label(key, "ms"))
    ax.set_title("Throughput vs latency, both runs (labels: cell)")
    ax.grid(alpha=0.3)
    handles = ax.get_legend_handles_labels()[0]
    ax.legend(handles=handles + opened[:1], fontsize=8)
    return fig
