"""The report's figures as base64 PNG strings (matplotlib's Agg canvas, no pyplot global state)."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Iterable

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from harness.analysis.metrics import CellMetrics
from harness.analysis.slo import bounds
from harness.analysis.summary import RunAnalysis
from harness.report.timeline import Timeline

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
PHASE_COLORS = {"measure": "#2ca02c", "warmup": "#ff7f0e", "cooldown": "#7f7f7f", "ramp": "#bcbd22"}


def _png(fig: Figure) -> str:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _by_replicas(a: RunAnalysis):
    groups: dict[int, list] = {}
    for c in a.cells:
        groups.setdefault(c.replicas, []).append(c)
    return sorted(groups.items())


def latency_label(key: str, unit: str = "s") -> str:
    metric, pct, _ = key.split("_")
    return f"{metric.upper() if metric != 'e2e' else 'e2e'} {pct} ({unit})"


Value = Callable[[CellMetrics], float | None]


def _shown(cells: Iterable[CellMetrics], x: Value, y: Value) -> list[CellMetrics]:
    """Cells with both coordinates: a cell lacking one (no energy, no latency) has no place."""
    return [c for c in cells if x(c) is not None and y(c) is not None]


def _errorbars(ax: Axes, pts, x: Value, y: Value, keys, col: str) -> None:
    """95% interval bars (``keys``: the figures on x and y) where the cells carry intervals."""
    if not keys:
        return
    kx, ky = keys
    for c in pts:
        cx, cy = x(c), y(c)
        ix = c.intervals.get(kx) if kx and c.intervals else None
        iy = c.intervals.get(ky) if ky and c.intervals else None
        if ix is None and iy is None:
            continue
        sx = cx / c.get(kx) if ix is not None and c.get(kx) else 1.0   # the axis' unit (s -> ms)
        sy = cy / c.get(ky) if iy is not None and c.get(ky) else 1.0
        ax.errorbar(
            [cx], [cy],
            xerr=None if ix is None else [[max(cx - ix[0] * sx, 0)], [max(ix[1] * sx - cx, 0)]],
            yerr=None if iy is None else [[max(cy - iy[0] * sy, 0)], [max(iy[1] * sy - cy, 0)]],
            fmt="none", ecolor=col, elinewidth=1, capsize=3, alpha=0.8,
        )


def _replica_curves(ax: Axes, a: RunAnalysis, x: Value, y: Value, label_dy: int, keys=None) -> bool:
    """One curve per replica count, points labelled by level, 95% interval bars where known;
    False when nothing was drawn."""
    drawn = False
    for i, (reps, cells) in enumerate(_by_replicas(a)):
        pts = _shown(cells, x, y)
        if not pts:
            continue
        drawn = True
        col = COLORS[i % len(COLORS)]
        label = f"{reps} replica{'s' if reps != 1 else ''}"
        ax.plot([x(c) for c in pts], [y(c) for c in pts], "-o", color=col, ms=5, label=label)
        _errorbars(ax, pts, x, y, keys, col)
        for c in pts:
            ax.annotate(
                f"{c.level:g}",
                (x(c), y(c)),
                textcoords="offset points",
                xytext=(5, label_dy),
                fontsize=8,
                color=col,
            )
    return drawn


def _mark_choices(ax: Axes, a: RunAnalysis, x: Value, y: Value) -> None:
    """Ring the Pareto frontier and star the recommended cell, so the answer stands out."""
    fr = _shown((c for c in a.cells if c.frontier == "frontier"), x, y)
    if fr:
        ax.scatter(
            [x(c) for c in fr],
            [y(c) for c in fr],
            s=180,
            facecolors="none",
            edgecolors="black",
            linewidths=1.6,
            label="Pareto frontier",
            zorder=5,
        )
    rec = a.cell(a.recommendation.cell) if a.recommendation.cell else None
    if rec is not None and _shown([rec], x, y):
        ax.scatter(
            [x(rec)],
            [y(rec)],
            marker="*",
            s=260,
            color="gold",
            edgecolors="black",
            zorder=6,
            label="recommended",
        )


def _tradeoff_axes(
    a: RunAnalysis, x: Value, y: Value, label_dy: int, labels: tuple[str, str, str], keys=None
) -> tuple[Figure, Axes] | None:
    """The figure both trade-off plots share (labels: x, y, title); None when no cell has both
    values. The axes come back so a plot can add its own marks before it is rendered."""
    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.add_subplot()
    if not _replica_curves(ax, a, x, y, label_dy, keys):
        return None
    _mark_choices(ax, a, x, y)
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    ax.set_title(labels[2])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig, ax


def throughput_vs_latency(a: RunAnalysis) -> str | None:
    key = a.latency_key
    made = _tradeoff_axes(
        a,
        lambda c: c.get(key),
        lambda c: c.output_tokens_per_s,
        -10,
        (
            latency_label(key),
            "output tokens/s",
            "Throughput vs latency per replica count (labels: level)",
        ),
        (key, "output_tokens_per_s"),
    )
    if made is None:
        return None
    fig, ax = made
    for b in bounds(a.slo):
        if b.key == key:
            ax.axvline(b.limit_s, color="#d62728", ls="--", lw=1)
            ax.text(b.limit_s, ax.get_ylim()[1], " SLO", color="#d62728", va="top", fontsize=8)
    return _png(fig)


def energy_vs_throughput(a: RunAnalysis) -> str | None:
    made = _tradeoff_axes(
        a,
        lambda c: c.output_tokens_per_s,
        lambda c: c.j_per_token,
        4,
        ("output tokens/s", "energy per output token (J)", "Energy per token vs throughput"),
        ("output_tokens_per_s", "j_per_token"),
    )
    return _png(made[0]) if made is not None else None


def compare_tradeoff(a: RunAnalysis, b: RunAnalysis) -> str | None:
    """Every cell of both runs on one throughput/latency plane (A's frontier latency, in ms), each
    point named, so a shift between the runs is seen cell by cell; None when no cell has both."""
    key = a.latency_key

    def x(c: CellMetrics) -> float | None:
        return c.output_tokens_per_s

    def y(c: CellMetrics) -> float | None:
        v = c.get(key)
        return None if v is None else v * 1000

    fig = Figure(figsize=(7.2, 4.8))
    ax = fig.add_subplot()
    drawn = False
    # B's names go below its points so that a cell both runs put close together stays readable
    for tag, run, marker, col, dy in (("A", a, "o", COLORS[0], 4), ("B", b, "s", COLORS[1], -11)):
        pts = _shown(run.cells, x, y)
        if not pts:
            continue
        drawn = True
        ax.scatter(
            [x(c) for c in pts],
            [y(c) for c in pts],
            marker=marker,
            s=36,
            color=col,
            alpha=0.85,
            label=f"{tag}: {run.run_id}",
        )
        for c in pts:
            ax.annotate(
                c.cell,
                (x(c), y(c)),
                textcoords="offset points",
                xytext=(5, dy),
                fontsize=7,
                color=col,
            )
    if not drawn:
        return None
    ax.set_xlabel("output tokens/s")
    ax.set_ylabel(latency_label(key, "ms"))
    ax.set_title("Throughput vs latency, both runs (labels: cell)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def timeline_plot(tl: Timeline) -> str | None:
    if tl.empty:
        return None
    fig = Figure(figsize=(13, 4.6))
    ax_p, ax_t = fig.subplots(2, 1, sharex=True)
    for i, (label, (t, w)) in enumerate(sorted(tl.power.items())):
        ax_p.plot(t, w, lw=0.9, color=COLORS[i % len(COLORS)], label=label)
    if not tl.power:
        ax_p.text(0.5, 0.5, "no GPU samples in this run", transform=ax_p.transAxes, ha="center")
    ax_p.set_ylabel("power (W)")
    ax_t.plot(tl.bin_mid_s, tl.tokens_per_s, lw=1.0, color="#333333", drawstyle="steps-mid")
    ax_t.set_ylabel(f"tokens/s ({tl.bin_s:g} s bins)")
    ax_t.set_xlabel("seconds since the first cell started")
    top = ax_p.get_ylim()[1]
    for cell, phase, a, b in tl.phases:
        for ax in (ax_p, ax_t):
            ax.axvspan(
                a,
                b,
                color=PHASE_COLORS.get(phase, "#cccccc"),
                alpha=0.12 if phase == "measure" else 0.06,
                lw=0,
            )
        if phase == "measure":
            for ax in (ax_p, ax_t):
                ax.axvline(a, color="#2ca02c", lw=0.6)
            ax_p.text((a + b) / 2, top, cell, ha="center", va="bottom", fontsize=7, rotation=0)
    if tl.power:
        ax_p.legend(fontsize=7, loc="lower right")
    for ax in (ax_p, ax_t):
        ax.grid(alpha=0.3)
    fig.suptitle(
        "Power and output tokens/s over the run (green: measured windows; orange: warm-up; grey: cool-down)",
        fontsize=10,
        y=1.04,
    )
    return _png(fig)


def server_metrics_plot(run) -> str | None:
    """Queue depth, running batch and KV use per replica over time (the replicas' own /metrics),
    with GPU power below, on the run's clock; None when no server metrics were scraped."""
    from pathlib import Path

    import pandas as pd

    queue = ("tgi_queue_size", "vllm:num_requests_waiting")
    batch = ("tgi_batch_current_size", "vllm:num_requests_running")
    kv = ("tgi_batch_current_max_tokens", "vllm:gpu_cache_usage_perc", "vllm:kv_cache_usage_perc")
    p = Path(run.path) / "server_metrics.parquet"
    if not p.is_file():
        return None
    try:
        sm = pd.read_parquet(p)
    except Exception:  # noqa: BLE001 - an unreadable file: no figure
        return None
    if sm.empty:
        return None
    t0 = int(sm["ts_ns"].min())
    panels = []
    for title, names in (("queued requests", queue), ("running batch (requests)", batch),
                         ("KV use", kv)):
        name = next((n for n in names if (sm["name"] == n).any()), None)
        if name is not None:
            panels.append((f"{title}: {name}", sm[sm["name"] == name]))
    gpu = run.gpu.dropna(subset=["power_w"]) if not run.gpu.empty else run.gpu
    n = len(panels) + (0 if gpu.empty else 1)
    if n == 0:
        return None
    fig = Figure(figsize=(9.5, 1.9 * n + 0.6))
    axes = [fig.add_subplot(n, 1, i + 1) for i in range(n)]
    for ax, (title, df) in zip(axes, panels):
        for i, (rep, g) in enumerate(sorted(df.groupby("replica"))):
            g = g.sort_values("ts_ns")
            ax.step((g["ts_ns"] - t0) / 1e9, g["value"], where="post", lw=1,
                    color=COLORS[i % len(COLORS)], label=str(rep))
        ax.set_ylabel(title.split(":")[0], fontsize=8)
        ax.set_title(title, fontsize=9, loc="left")
        ax.grid(alpha=0.3)
    if panels:
        axes[0].legend(fontsize=7, loc="upper right")
    if not gpu.empty:
        ax = axes[-1]
        for i, (g_id, g) in enumerate(sorted(gpu.groupby("gpu"))):
            g = g.sort_values("ts_ns")
            ax.plot((g["ts_ns"] - t0) / 1e9, g["power_w"], lw=0.8, color=COLORS[i % len(COLORS)],
                    label=f"GPU {g_id}")
        ax.set_ylabel("power (W)", fontsize=8)
        ax.legend(fontsize=7, loc="upper right")
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("seconds since the first scrape")
    return _png(fig)


def interactivity(a: RunAnalysis) -> str | None:
    """Per-user output tokens/s (1 / TPOT p50) against total output tokens/s, one curve per
    replica count, J/token as colour: what one user feels against what the fleet delivers."""
    cells = [c for c in a.cells if c.tpot_p50_s and c.output_tokens_per_s > 0]
    if not cells:
        return None
    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.add_subplot()
    for i, (reps, group) in enumerate(_by_replicas(a)):
        pts = sorted((c for c in group if c in cells), key=lambda c: c.output_tokens_per_s)
        if pts:
            ax.plot([c.output_tokens_per_s for c in pts], [1 / c.tpot_p50_s for c in pts], "-",
                    color=COLORS[i % len(COLORS)], lw=1,
                    label=f"{reps} replica{'s' if reps != 1 else ''}")
    energy = [c.j_per_token for c in cells]
    colour = all(e is not None for e in energy)
    sc = ax.scatter([c.output_tokens_per_s for c in cells], [1 / c.tpot_p50_s for c in cells],
                    c=energy if colour else "#444", cmap="viridis_r", s=40, zorder=4)
    if colour:
        fig.colorbar(sc, ax=ax, label="J per output token")
    fr = sorted((c for c in cells if c.frontier == "frontier"), key=lambda c: c.output_tokens_per_s)
    if fr:
        ax.plot([c.output_tokens_per_s for c in fr], [1 / c.tpot_p50_s for c in fr], "--",
                color="black", lw=1, label="Pareto frontier cells")
    for c in cells:
        ax.annotate(c.cell, (c.output_tokens_per_s, 1 / c.tpot_p50_s), textcoords="offset points",
                    xytext=(4, 4), fontsize=7)
    ax.set_xlabel("total output tokens/s")
    ax.set_ylabel("per-user output tokens/s (1 / TPOT p50)")
    ax.set_title("Interactivity: per-user speed vs total throughput")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def latency_cdfs(a: RunAnalysis) -> str | None:
    """TTFT and TPOT distributions per cell (successful requests sent in each measured window),
    as CDFs on one time unit (ms): the whole shape, not four percentiles."""
    req = a.run.requests
    if req.empty:
        return None
    fig = Figure(figsize=(11, 3.8))
    axes = [fig.add_subplot(1, 2, i + 1) for i in range(2)]
    drawn = False
    for i, c in enumerate(a.windows or a.cells):
        r = req[(req["cell"] == c.cell) & req["error_class"].isna()]
        sent = r["intended_ns"].fillna(r["start_ns"]) if "intended_ns" in r else r["start_ns"]
        r = r[(sent >= c.start_ns) & (sent < c.end_ns)]
        for ax, col in zip(axes, ("ttft_s", "tpot_s")):
            v = np.sort(pd.to_numeric(r[col], errors="coerce").dropna().to_numpy(float)) * 1000
            if v.size:
                drawn = True
                ax.step(v, np.arange(1, v.size + 1) / v.size, where="post", lw=1,
                        color=COLORS[i % len(COLORS)], label=c.cell)
    if not drawn:
        return None
    for ax, name in zip(axes, ("TTFT", "TPOT")):
        ax.set_xscale("log")
        ax.set_xlabel(f"{name} (ms, log scale)")
        ax.set_ylabel("share of requests")
        ax.set_title(f"{name} CDF per cell", fontsize=10)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=6, ncol=2, loc="lower right")
    return _png(fig)
