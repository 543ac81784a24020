"""Power and tokens/s over the whole run, with each cell's phase boundaries, for the timeline plot."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from harness.analysis.rundata import RunData
from harness.analysis.tokens import token_timeline


@dataclass
class Timeline:
    t0_ns: int
    bin_s: float
    bin_mid_s: np.ndarray  # seconds since t0
    tokens_per_s: np.ndarray
    power: dict[str, tuple[np.ndarray, np.ndarray]] = field(
        default_factory=dict
    )  # label -> (t_s, W)
    phases: list[tuple[str, str, float, float]] = field(
        default_factory=list
    )  # cell, phase, a_s, b_s

    @property
    def empty(self) -> bool:
        return self.bin_mid_s.size == 0 and not self.power


def build_timeline(run: RunData, *, max_bins: int = 300, min_bin_s: float = 0.5) -> Timeline:
    """Bins of at least ``min_bin_s`` (NVML power changes every ~100 ms; finer bins add noise)."""
    starts, ends = [], []
    w = run.windows
    if not w.empty:
        starts.append(int(w["start_ns"].min()))
        ends.append(int(w["end_ns"].max()))
    if not run.requests.empty:
        starts.append(int(run.requests["start_ns"].min()))
        ends.append(int(run.requests["end_ns"].max()))
    if not starts:
        return Timeline(0, min_bin_s, np.zeros(0), np.zeros(0))
    t0, t1 = min(starts), max(ends)
    span = max((t1 - t0) / 1e9, 1e-3)
    bin_s = max(min_bin_s, span / max_bins)
    n = max(1, int(np.ceil(span / bin_s)))
    edges = t0 + (np.arange(n + 1) * bin_s * 1e9).astype(np.int64)
    toks = token_timeline(run.requests, edges) / bin_s if not run.requests.empty else np.zeros(n)
    mids = (edges[:-1] - t0) / 1e9 + bin_s / 2
    power = {}
    g = run.gpu
    if not g.empty:
        g = g.dropna(subset=["power_w"]).sort_values("ts_ns")
        g = g[(g["ts_ns"] >= t0 - 1e9) & (g["ts_ns"] <= t1 + 1e9)]
        for (gpu, src), s in g.groupby(["gpu", "source"]):
            power[f"GPU {gpu} ({src})"] = (
                (s["ts_ns"].to_numpy() - t0) / 1e9,
                s["power_w"].to_numpy(dtype=float),
            )
    phases = []
    if not w.empty:
        for row in w.sort_values("start_ns").to_dict("records"):
            phases.append(
                (
                    row["cell"],
                    row["phase"],
                    (row["start_ns"] - t0) / 1e9,
                    (row["end_ns"] - t0) / 1e9,
                )
            )
    return Timeline(t0, bin_s, mids, toks, power, phases)
