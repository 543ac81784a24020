"""Energy, mean power and GPU utilisation over one window.

Sources, best first (the one used is named beside the number):
1. ``window:<source>``: the energy the telemetry sampler measured at the window's own edges and
   stored on the CellWindow (``CellWindow.energy_j``): the hardware (or emulated) energy
   counter's delta (``nvml-counter``, ``emulated-counter``), or the sampler's own power integral
   pinned at the edges (``integral:<power source>``);
2. ``sample-counter``: the counter values carried on GPU samples (``GpuSample.energy_j``),
   linearly interpolated to the window edges, per GPU, summed over GPUs;
3. ``power-integral``: the trapezoidal integral of ``power_w`` samples, linearly interpolated at
   the window edges, per GPU, summed over GPUs.
For 2 and 3 the samples must reach both edges: a stretch with no sample for longer than
``max_gap_s`` is uncovered. Below ``min_coverage`` of the window the energy is left missing
(``None``) rather than guessed; between that and full coverage the integral over the covered time
is scaled to the whole window (mean covered power x duration) and the coverage is reported.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass
class EnergyResult:
    energy_j: float | None
    source: str | None  # "window:<what>" | "sample-counter" | "power-integral" | None
    coverage: float  # fraction of the window with samples (1.0 for a window counter)
    mean_power_w: float | None  # energy / duration where energy is known
    gpu_util_pct: float | None  # mean of the samples inside the window, averaged over GPUs
    mem_used_bytes: int | None  # largest memory use sampled inside the window (summed over GPUs)
    samples: int  # GPU samples inside the window
    note: str = ""


def _interp_segments(
    t: np.ndarray, y: np.ndarray, a: float, b: float, max_gap: float
) -> tuple[float, float]:
    """(integral of y dt over the covered part of [a, b], covered seconds); t in seconds."""
    if t.size == 0:
        return 0.0, 0.0
    # Hold the end values for at most max_gap beyond the first/last sample.
    tt = np.concatenate(([t[0] - max_gap], t, [t[-1] + max_gap]))
    yy = np.concatenate(([y[0]], y, [y[-1]]))
    area = 0.0
    covered = 0.0
    for i in range(len(tt) - 1):
        t0, t1 = tt[i], tt[i + 1]
        if t1 - t0 > max_gap + 1e-12 or t1 <= a or t0 >= b or t1 <= t0:
            continue
        lo, hi = max(t0, a), min(t1, b)
        y0, y1 = yy[i], yy[i + 1]
        slope = (y1 - y0) / (t1 - t0)
        ylo, yhi = y0 + slope * (lo - t0), y0 + slope * (hi - t0)
        area += 0.5 * (ylo + yhi) * (hi - lo)
        covered += hi - lo
    return area, covered


def _counter_at(t: np.ndarray, c: np.ndarray, x: float, max_gap: float) -> float | None:
    """Counter value interpolated at x between the samples bracketing it (within max_gap)."""
    if t.size == 0:
        return None
    j = int(np.searchsorted(t, x))
    if j < t.size and t[j] == x:
        return float(c[j])
    if j == 0 or j == t.size:
        return None
    t0, t1 = t[j - 1], t[j]
    if t1 - t0 > max_gap:
        return None
    return float(c[j - 1] + (c[j] - c[j - 1]) * (x - t0) / (t1 - t0))


def window_energy(
    gpu: pd.DataFrame,
    a_ns: int,
    b_ns: int,
    *,
    counter_j: float | None = None,
    counter_source: str | None = None,
    max_gap_s: float = 1.0,
    min_coverage: float = 0.9,
) -> EnergyResult:
    """Energy over ``[a_ns, b_ns]`` from a window counter or the GPU samples."""
    dur = (b_ns - a_ns) / 1e9
    inside = gpu[(gpu["ts_ns"] >= a_ns) & (gpu["ts_ns"] <= b_ns)] if not gpu.empty else gpu
    util = None
    mem = None
    if not inside.empty:
        u = inside.groupby("gpu")["gpu_util_pct"].mean().dropna()
        util = float(u.mean()) if not u.empty else None
        m = inside.dropna(subset=["mem_used_bytes"])
        if not m.empty:
            mem = int(m.groupby("ts_ns")["mem_used_bytes"].sum().max())
    base = dict(gpu_util_pct=util, mem_used_bytes=mem, samples=int(len(inside)))
    if dur <= 0:
        return EnergyResult(None, None, 0.0, None, note="empty window", **base)
    if counter_j is not None and np.isfinite(counter_j) and counter_j >= 0:
        src = "window" + (f":{counter_source}" if counter_source else "")
        return EnergyResult(float(counter_j), src, 1.0, float(counter_j) / dur, **base)
    if gpu.empty:
        return EnergyResult(None, None, 0.0, None, note="no GPU samples", **base)

    a, b = a_ns / 1e9, b_ns / 1e9
    gpus = sorted(gpu["gpu"].dropna().unique().tolist())
    # 2. counters carried on samples
    total = 0.0
    ok = bool(gpus)
    for g in gpus:
        s = gpu[(gpu["gpu"] == g)].dropna(subset=["energy_j"]).sort_values("ts_ns")
        t = s["ts_ns"].to_numpy(dtype=float) / 1e9
        c = s["energy_j"].to_numpy(dtype=float)
        ca, cb = _counter_at(t, c, a, max_gap_s), _counter_at(t, c, b, max_gap_s)
        if ca is None or cb is None or cb < ca:
            ok = False
            break
        total += cb - ca
    if ok:
        return EnergyResult(total, "sample-counter", 1.0, total / dur, **base)
    # 3. integral of power
    total = 0.0
    coverages = []
    for g in gpus:
        s = gpu[(gpu["gpu"] == g)].dropna(subset=["power_w"]).sort_values("ts_ns")
        s = s.drop_duplicates("ts_ns", keep="last")
        t = s["ts_ns"].to_numpy(dtype=float) / 1e9
        y = s["power_w"].to_numpy(dtype=float)
        area, covered = _interp_segments(t, y, a, b, max_gap_s)
        cov = covered / (b - a)
        coverages.append(cov)
        if covered > 0:
            total += area / covered * (b - a)
    coverage = min(coverages) if coverages else 0.0
    if coverage < min_coverage:
        return EnergyResult(
            None,
            None,
            coverage,
            None,
            note=f"power samples cover {coverage:.0%} of the window",
            **base,
        )
    note = "" if coverage >= 0.999 else f"scaled from {coverage:.0%} coverage"
    return EnergyResult(total, "power-integral", coverage, total / dur, note=note, **base)
