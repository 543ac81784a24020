"""The run over time, on one clock (seconds since the first cell started): GPU power and
tokens/s with each cell's phases shaded, and each replica's own /metrics (queue, running batch,
KV cache) above the GPU power they share."""

from __future__ import annotations

from urllib.parse import urlsplit

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from harness.analysis.rundata import RunData
from harness.report.figure import COLORS, PHASE_COLORS, png
from harness.report.timeline import Timeline
from harness.telemetry.server_metrics import BATCH_TOKENS, KV_CACHE, QUEUE, RUNNING

# (y label, gauge names, scale): KV-cache use is a 0-1 share, shown in %
SERVER_PANELS = (("queued requests", QUEUE, 1), ("running batch", RUNNING, 1),
                 ("KV cache used (%)", KV_CACHE, 100), ("batch tokens", BATCH_TOKENS, 1))


def _power_line(ax: Axes, t, w, colour: str, label: str, gid: str | None = None) -> None:
    """Power as sampled, faint where it is dense enough to be noisy (NVML's instant reading at
    20 Hz and more), with its 1 s mean on top; broken across gaps in the samples."""
    t, w = np.asarray(t, dtype=float), np.asarray(w, dtype=float)
    dense = t.size > 2 and float(np.median(np.diff(t))) < 0.25
    ax.plot(*with_gaps(t, w), lw=0.8, color=colour, alpha=0.35 if dense else 1.0,
            label=None if dense else label, gid=None if dense else gid)
    if dense:
        mean = (pd.Series(w, index=pd.to_timedelta(t, unit="s")).rolling("1s", center=True)
                .mean().to_numpy())
        ax.plot(*with_gaps(t, mean), lw=1.0, color=colour, label=f"{label}, 1 s mean", gid=gid)


def with_gaps(t, v, min_gap_s: float = 1.0):
    """(t, v) with a NaN inserted wherever samples stop for longer than ``min_gap_s`` and 5x
    their usual spacing, so a line breaks across a gap instead of bridging it."""
    t, v = np.asarray(t, dtype=float), np.asarray(v, dtype=float)
    if t.size < 3:
        return t, v
    dt = np.diff(t)
    cut = np.flatnonzero(dt > max(min_gap_s, 5 * float(np.median(dt)))) + 1
    return np.insert(t, cut, np.nan), np.insert(v, cut, np.nan)


def shade_phases(axes: list[Axes], tl: Timeline, label_ax: Axes | None = None,
                 width_in: float = 11.0) -> None:
    """Each cell's phases as bands (measured windows green), the cell named above ``label_ax``;
    names that would overlap side by side (``width_in``: the axes' width) stand upright."""
    measured = [(a + b) / 2 for _, phase, a, b in tl.phases if phase == "measure"]
    names = [cell for cell, phase, _, _ in tl.phases if phase == "measure"]
    upright = False
    if len(measured) > 1:
        span = max(b for *_, b in tl.phases) - min(a for _, _, a, _ in tl.phases)
        gap_in = min(np.diff(sorted(measured))) / max(span, 1e-9) * width_in
        upright = gap_in < max(len(n) for n in names) * 0.075   # ~0.075 in per 7-pt character
    for cell, phase, a, b in tl.phases:
        for ax in axes:
            ax.axvspan(a, b, color=PHASE_COLORS.get(phase, "#cccccc"),
                       alpha=0.12 if phase == "measure" else 0.06, lw=0)
            if phase == "measure":
                ax.axvline(a, color="#2ca02c", lw=0.6)
        if phase == "measure" and label_ax is not None:
            label_ax.annotate(cell, ((a + b) / 2, 1.0), xycoords=label_ax.get_xaxis_transform(),
                              ha="center", va="bottom", fontsize=7, rotation=90 if upright else 0)


def timeline_plot(tl: Timeline) -> str | None:
    if tl.empty:
        return None
    fig = Figure(figsize=(13, 4.6), layout="constrained")
    ax_p, ax_t = fig.subplots(2, 1, sharex=True)
    for i, (label, (t, w)) in enumerate(sorted(tl.power.items())):
        _power_line(ax_p, t, w, COLORS[i % len(COLORS)], label)
    if not tl.power:
        ax_p.text(0.5, 0.5, "no GPU samples in this run", transform=ax_p.transAxes, ha="center")
    ax_p.set_ylabel("power (W)")
    ax_t.plot(tl.bin_mid_s, tl.tokens_per_s, lw=1.0, color="#333333", drawstyle="steps-mid")
    ax_t.set_ylabel(f"tokens/s ({tl.bin_s:.2g} s bins)")
    ax_t.set_xlabel("seconds since the first cell started")
    shade_phases([ax_p, ax_t], tl, ax_p, width_in=11.5)
    if tl.power:
        ax_p.legend(fontsize=7, loc="lower right")
    for ax in (ax_p, ax_t):
        ax.grid(alpha=0.3)
    fig.suptitle("Power and output tokens/s over the run (green: measured windows; orange: "
                 "warm-up; grey: cool-down)", fontsize=10)
    return png(fig)


def replica_names(urls) -> dict[str, str]:
    """Short legend names: ':port/path' when every replica is on one host, else host:port/path."""
    parts = {u: urlsplit(str(u)) for u in urls}
    one_host = len({p.hostname for p in parts.values()}) == 1
    return {u: (f":{p.port}" if one_host and p.port else p.netloc) + p.path.rstrip("/")
            for u, p in parts.items()}


def _series(sm: pd.DataFrame, names: tuple[str, ...]) -> tuple[str, pd.DataFrame] | None:
    """The first gauge of ``names`` the server exposes, summed across labels per scrape."""
    for n in names:
        g = sm[sm["name"] == n]
        if not g.empty:
            return n, g.groupby(["replica", "ts_ns"], as_index=False)["value"].sum()
    return None


def server_metrics_plot(run: RunData, tl: Timeline | None = None) -> str | None:
    fig = server_metrics_figure(run, tl)
    return None if fig is None else png(fig)


def server_metrics_figure(run: RunData, tl: Timeline | None = None) -> Figure | None:
    """Queue, running batch and KV use per replica over time (each panel names the gauge it
    shows; each line's gid: "GAUGE REPLICA_URL"), GPU power below (gid "power GPU"), on the
    timeline's clock with its phases; None when no known gauge was scraped."""
    sm = run.server
    panels = _server_panels(sm) if sm is not None and not sm.empty else []
    if not panels:
        return None
    gpu = run.gpu.dropna(subset=["power_w"]) if not run.gpu.empty else run.gpu
    t0 = tl.t0_ns if tl is not None and not tl.empty else int(sm["ts_ns"].min())
    n = len(panels) + (0 if gpu.empty else 1)
    fig = Figure(figsize=(13, 1.7 * n + 0.8), layout="constrained")
    axes = fig.subplots(n, 1, sharex=True, squeeze=False)[:, 0]
    names = replica_names(sm["replica"].unique())
    colour = {u: COLORS[i % len(COLORS)] for i, u in enumerate(sorted(names))}
    for ax, (title, name, df, scale) in zip(axes, panels):
        for rep, g in df.groupby("replica", sort=True):
            g = g.sort_values("ts_ns")
            ax.step((g["ts_ns"] - t0) / 1e9, g["value"] * scale, where="post", lw=1,
                    color=colour[rep], label=names[rep], gid=f"{name} {rep}")
        ax.set_ylabel(title, fontsize=8)
        ax.text(0.005, 0.96, name, transform=ax.transAxes, fontsize=7, va="top", color="#555555")
    axes[0].legend(fontsize=7, loc="upper right", ncol=min(4, len(names)), title="replica",
                   title_fontsize=7)
    if not gpu.empty:
        _power_panel(axes[-1], gpu, t0)
    if tl is not None:
        shade_phases(list(axes), tl, axes[0], width_in=11.5)
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("seconds since the first cell started" if tl is not None and not tl.empty
                        else "seconds since the first scrape")
    return fig


def no_server_figure_reason(run: RunData) -> str:
    """Why the server-metrics figure is missing, for the report to say instead."""
    sm = run.server
    if sm is None or sm.empty:
        return ("no /metrics samples in this run (scraping off, or the servers answered none: "
                "see the notes)")
    known = ", ".join(n for _, names, _ in SERVER_PANELS for n in names)
    return (f"the servers expose none of the gauges plotted ({known}); their "
            f"{len(sm):,} samples of {sm['name'].nunique():,} series are in server_metrics.parquet")


def _server_panels(sm: pd.DataFrame) -> list[tuple[str, str, pd.DataFrame, float]]:
    """(y label, gauge, samples, scale) for each known gauge the servers expose; TGI's batch
    tokens only where there is no KV-cache gauge."""
    panels = [(title, *found, scale) for title, names, scale in SERVER_PANELS
              if (found := _series(sm, names)) is not None]
    if any(p[1] in KV_CACHE for p in panels):
        panels = [p for p in panels if p[1] not in BATCH_TOKENS]
    return panels


def _power_panel(ax: Axes, gpu: pd.DataFrame, t0: int) -> None:
    one = gpu["gpu"].nunique() == 1
    for i, (g_id, g) in enumerate(sorted(gpu.groupby("gpu"))):
        g = g.sort_values("ts_ns")
        _power_line(ax, (g["ts_ns"] - t0) / 1e9, g["power_w"],
                    "#333333" if one else COLORS[i % len(COLORS)],
                    f"GPU {g_id} (shared by the replicas)", f"power {g_id}")
    ax.set_ylabel("GPU power (W)", fontsize=8)
    ax.legend(fontsize=7, loc="lower right")
