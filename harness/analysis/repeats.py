"""Repeats: a configuration (replicas x level) measured in several windows, pooled into one row.

The engine names the windows ``r2-c64``, ``r2-c64-n2``, ``r2-c64-n3`` (repeat 1, 2, 3). Pooled:
rates (tokens/s, req/s, goodput, power, GPU utilisation) are the mean over the repeats; counts,
tokens and energy add up (J/token = total energy / total tokens); TTFT/TPOT/e2e percentiles are
taken over the pooled requests of every repeat; ITL percentiles are the mean of the repeats'
(each from its own histogram); steadiness is the worst repeat's; the verdict is the worst repeat's
with the reasons of each. Intervals come from :mod:`harness.analysis.intervals` (repeats, then
requests within each).
"""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pandas as pd

from harness.analysis.intervals import intervals, window_sample
from harness.analysis.metrics import CellMetrics, _as_metrics, window_started
from harness.analysis.rundata import RunData
from harness.analysis.slo import bounds, cell_verdict, good_mask
from harness.analysis.stats import REPORTED_PERCENTILES, pct_name, percentile
from harness.analysis.verdict import ORDER
from harness.scenario.models import Slo

_REPEAT = re.compile(r"-n(\d+)$")


def config_of(cell: str) -> str:
    """``r2-c64-n3`` -> ``r2-c64`` (the configuration a repeat measured)."""
    return _REPEAT.sub("", cell)


def repeat_of(cell: str) -> int:
    m = _REPEAT.search(cell)
    return int(m.group(1)) if m else 1


def _mean(vals) -> float | None:
    v = [x for x in vals if x is not None]
    return float(np.mean(v)) if v else None


def samples(run: RunData, cells: list[CellMetrics], slo: Slo | None) -> dict:
    """The bootstrap's input of every window (cell name -> WindowSample)."""
    out = {}
    req = run.requests
    for c in cells:
        cell_req = req[req["cell"] == c.cell] if not req.empty else req
        st = window_started(run, c.cell, c.start_ns, c.end_ns)
        ok = st[st["error_class"].isna()] if not st.empty else st
        good = np.asarray(good_mask(ok, slo), dtype=float) if len(ok) else np.zeros(0)
        out[c.cell] = window_sample(cell_req, ok, c.start_ns, c.end_ns, c.energy_j, good)
    return out


def pool(run: RunData, group: list[CellMetrics], slo: Slo | None) -> CellMetrics:
    """One row for a configuration from its repeats (``group``, in repeat order)."""
    if len(group) == 1:
        return group[0]
    name = config_of(group[0].cell)
    p = replace(group[0], cell=name, notes=[], verdict_reasons=[], checks={}, per_replica=[],
                extra_percentiles={}, errors={}, repeats=[c.cell for c in group])
    p.start_ns, p.end_ns = min(c.start_ns for c in group), max(c.end_ns for c in group)
    p.duration_s = sum(c.duration_s for c in group)
    for k in ("requests_started", "requests_ok", "requests_failed", "requests_completed"):
        setattr(p, k, sum(getattr(c, k) for c in group))
    p.output_tokens = sum(c.output_tokens for c in group)
    for k in ("breaker_opened", "breaker_skipped"):
        got = [getattr(c, k) for c in group if getattr(c, k) is not None]
        setattr(p, k, sum(got) if got else None)
    for c in group:
        for k, n in c.errors.items():
            p.errors[k] = p.errors.get(k, 0) + n
    p.error_rate = p.requests_failed / p.requests_started if p.requests_started else None
    for k in ("output_tokens_per_s", "request_throughput_rps", "goodput_rps"):
        setattr(p, k, _mean(getattr(c, k) for c in group) or 0.0)
    p.mean_power_w = _mean(c.mean_power_w for c in group)
    p.gpu_util_pct = _mean(c.gpu_util_pct for c in group)
    p.good_fraction = _mean(c.good_fraction for c in group)
    steady = [c.steadiness for c in group if c.steadiness is not None]
    p.steadiness = max(steady, key=abs) if steady else None
    if all(c.energy_j is not None for c in group):
        p.energy_j = sum(c.energy_j for c in group)
        p.energy_coverage = min(c.energy_coverage for c in group)
        p.j_per_token = p.energy_j / p.output_tokens if p.output_tokens > 0 else None
        p.tokens_per_j = p.output_tokens / p.energy_j if p.energy_j else None
    else:
        p.energy_j = p.j_per_token = p.tokens_per_j = None
        p.energy_note = "energy missing in some repeat"
    ok = pd.concat([window_started(run, c.cell, c.start_ns, c.end_ns) for c in group])
    ok = ok[ok["error_class"].isna()] if not ok.empty else ok
    qs = sorted(set(REPORTED_PERCENTILES) | {b.q for b in bounds(slo)})
    for metric in ("ttft", "tpot", "e2e"):
        for q in qs:
            v = percentile(pd.to_numeric(ok[f"{metric}_s"], errors="coerce").to_numpy(float), q) \
                if len(ok) else None
            p.put(f"{metric}_{pct_name(q)}_s", v)
    for q in qs:
        key = f"itl_{pct_name(q)}_s"
        p.put(key, _mean(c.get(key) for c in group))
    p.slo_ok, p.slo_failures = cell_verdict(_as_metrics(p), slo)
    worst = max(group, key=lambda c: ORDER.get(c.verdict, 0))
    p.verdict = worst.verdict
    for c in group:
        p.verdict_reasons += [f"{c.cell}: {r}" for r in c.verdict_reasons]
        p.notes += [f"{c.cell}: {n}" for n in c.notes]
    p.checks = dict(worst.checks)
    from harness.analysis.attribution import pool as pool_attribution

    p.energy_attribution = pool_attribution([c.energy_attribution for c in group])
    return p


def _put(c: CellMetrics, got) -> None:
    c.intervals, c.interval_method, c.intervals_open = got.figures, got.method, got.open_ends


def pooled_cells(run: RunData, windows: list[CellMetrics], slo: Slo | None) -> list[CellMetrics]:
    """One row per configuration, with intervals: windows of one configuration pooled."""
    groups: dict[str, list[CellMetrics]] = {}
    for c in windows:
        groups.setdefault(config_of(c.cell), []).append(c)
    smp = samples(run, windows, slo)
    out = []
    for name, group in groups.items():
        group.sort(key=lambda c: repeat_of(c.cell))
        row = pool(run, group, slo)
        _put(row, intervals([smp[c.cell] for c in group], name))
        out.append(row)
        if len(group) > 1:   # each window keeps its own (requests-only) interval
            for c in group:
                _put(c, intervals([smp[c.cell]], c.cell))
    out.sort(key=lambda c: (c.replicas, c.level, c.cell))
    return out
