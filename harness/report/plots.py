"""The report's figures as base64 PNG strings (matplotlib's Agg canvas, no pyplot global state)."""

from __future__ import annotations

import base64
import io

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

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


def latency_label(key: str) -> str:
    metric, pct, _ = key.split("_")
    return f"{metric.upper() if metric != 'e2e' else 'e2e'} {pct} (s)"


def throughput_vs_latency(a: RunAnalysis) -> str | None:
    key = a.latency_key
    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.add_subplot()
    drawn = False
    for i, (reps, cells) in enumerate(_by_replicas(a)):
        pts = [(c.get(key), c.output_tokens_per_s, c) for c in cells if c.get(key) is not None]
        if not pts:
            continue
        drawn = True
        col = COLORS[i % len(COLORS)]
        ax.plot(
            [p[0] for p in pts],
            [p[1] for p in pts],
            "-o",
            color=col,
            ms=5,
            label=f"{reps} replica{'s' if reps != 1 else ''}",
        )
        for x, y, c in pts:
            ax.annotate(
                f"{c.level:g}",
                (x, y),
                textcoords="offset points",
                xytext=(5, -10),
                fontsize=8,
                color=col,
            )
    fr = [c for c in a.cells if c.frontier == "frontier" and c.get(key) is not None]
    if fr:
        ax.scatter(
            [c.get(key) for c in fr],
            [c.output_tokens_per_s for c in fr],
            s=180,
            facecolors="none",
            edgecolors="black",
            linewidths=1.6,
            label="Pareto frontier",
            zorder=5,
        )
    rec = a.cell(a.recommendation.cell) if a.recommendation.cell else None
    if rec is not None and rec.get(key) is not None:
        ax.scatter(
            [rec.get(key)],
            [rec.output_tokens_per_s],
            marker="*",
            s=260,
            color="gold",
            edgecolors="black",
            zorder=6,
            label="recommended",
        )
    for b in bounds(a.slo):
        if b.key == key:
            ax.axvline(b.limit_s, color="#d62728", ls="--", lw=1)
            ax.text(b.limit_s, ax.get_ylim()[1], " SLO", color="#d62728", va="top", fontsize=8)
    if not drawn:
        return None
    ax.set_xlabel(latency_label(key))
    ax.set_ylabel("output tokens/s")
    ax.set_title("Throughput vs latency per replica count (labels: level)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def energy_vs_throughput(a: RunAnalysis) -> str | None:
    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.add_subplot()
    drawn = False
    for i, (reps, cells) in enumerate(_by_replicas(a)):
        pts = [
            (c.output_tokens_per_s, c.j_per_token, c) for c in cells if c.j_per_token is not None
        ]
        if not pts:
            continue
        drawn = True
        col = COLORS[i % len(COLORS)]
        ax.plot(
            [p[0] for p in pts],
            [p[1] for p in pts],
            "-o",
            color=col,
            ms=5,
            label=f"{reps} replica{'s' if reps != 1 else ''}",
        )
        for x, y, c in pts:
            ax.annotate(
                f"{c.level:g}",
                (x, y),
                textcoords="offset points",
                xytext=(5, 4),
                fontsize=8,
                color=col,
            )
    fr = [c for c in a.cells if c.frontier == "frontier" and c.j_per_token is not None]
    if fr:
        ax.scatter(
            [c.output_tokens_per_s for c in fr],
            [c.j_per_token for c in fr],
            s=180,
            facecolors="none",
            edgecolors="black",
            linewidths=1.6,
            label="Pareto frontier",
            zorder=5,
        )
    rec = a.cell(a.recommendation.cell) if a.recommendation.cell else None
    if rec is not None and rec.j_per_token is not None:
        ax.scatter(
            [rec.output_tokens_per_s],
            [rec.j_per_token],
            marker="*",
            s=260,
            color="gold",
            edgecolors="black",
            zorder=6,
            label="recommended",
        )
    if not drawn:
        return None
    ax.set_xlabel("output tokens/s")
    ax.set_ylabel("energy per output token (J)")
    ax.set_title("Energy per token vs throughput")
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
