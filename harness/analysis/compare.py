"""Two runs side by side: the same cells' numbers and their relative change (B vs A).

What the runs measured is compared first: a different workload, SLO, target, harness version or
host hardware is listed (``mismatches``), since a change of numbers then need not be a change of
the server. Each figure's change is marked ``beyond`` the 95% intervals (the intervals do not
overlap: a difference) or ``within`` them (noise); without intervals a change of at least 5% is
called a difference.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.analysis.intervals import overlaps
from harness.analysis.summary import RunAnalysis

# (column, label, higher is better?)
COMPARED = (
    ("output_tokens_per_s", "output tok/s", True),
    ("request_throughput_rps", "req/s", True),
    ("goodput_rps", "goodput req/s", True),
    ("ttft_p50_s", "TTFT p50 ms", False),
    ("ttft_p99_s", "TTFT p99 ms", False),
    ("itl_p99_s", "ITL p99 ms", False),
    ("tpot_p50_s", "TPOT p50 ms", False),
    ("e2e_p99_s", "e2e p99 ms", False),
    ("error_rate", "error rate", False),
    ("mean_power_w", "power W", False),
    ("j_per_token", "J/token", False),
)

# a relative change at least this large is called better or worse; a smaller one is noise
SIGNIFICANT = 0.05


def verdict(change: float | None, higher_better: bool, beyond: bool | None = None) -> bool | None:
    """True: B is clearly better than A on this metric; False: clearly worse; None: too close
    (within the intervals where both have them, else under 5%)."""
    if change is None or beyond is False:
        return None
    if beyond is None and abs(change) < SIGNIFICANT:
        return None
    return (change > 0) == higher_better


@dataclass
class CellDiff:
    cell: str
    values: dict[str, tuple[float | None, float | None, float | None]]  # col -> (a, b, rel change)
    slo_a: bool | None
    slo_b: bool | None
    frontier_a: str
    frontier_b: str
    # col -> True: the intervals do not overlap; False: they do; None: no intervals to tell
    beyond: dict[str, bool | None] = field(default_factory=dict)
    verdict_a: str = ""
    verdict_b: str = ""

    def rows(self):
        """(column, label, higher is better?, a, b, change) for each metric either run has."""
        for col, label, higher_better in COMPARED:
            va, vb, ch = self.values[col]
            if va is not None or vb is not None:
                yield col, label, higher_better, va, vb, ch


@dataclass
class Comparison:
    run_a: str
    run_b: str
    cells: list[CellDiff]
    only_a: list[str]
    only_b: list[str]
    recommendation_a: str
    recommendation_b: str
    notes: list[str] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)   # what the two runs measured differently

    def to_dict(self) -> dict:
        return {
            "run_a": self.run_a,
            "run_b": self.run_b,
            "only_a": self.only_a,
            "only_b": self.only_b,
            "recommendation_a": self.recommendation_a,
            "recommendation_b": self.recommendation_b,
            "mismatches": self.mismatches,
            "cells": [
                {
                    "cell": d.cell,
                    "slo_a": d.slo_a,
                    "slo_b": d.slo_b,
                    "frontier_a": d.frontier_a,
                    "frontier_b": d.frontier_b,
                    "verdict_a": d.verdict_a,
                    "verdict_b": d.verdict_b,
                    "values": {
                        k: {"a": a, "b": b, "change": ch,
                            "difference": {True: "beyond", False: "within"}.get(d.beyond.get(k))}
                        for k, (a, b, ch) in d.values.items()
                    },
                }
                for d in self.cells
            ],
            "notes": self.notes,
        }


def rel_change(a: float | None, b: float | None) -> float | None:
    """(b - a) / |a|; None when either is missing or a is zero."""
    if a is None or b is None or a == 0:
        return None
    return (b - a) / abs(a)


def compare(a: RunAnalysis, b: RunAnalysis) -> Comparison:
    names_a = [c.cell for c in a.cells]
    names_b = [c.cell for c in b.cells]
    common = [n for n in names_a if n in set(names_b)]
    diffs = []
    for n in common:
        ca, cb = a.cell(n), b.cell(n)
        vals, beyond = {}, {}
        for col, _, _ in COMPARED:
            va, vb = ca.get(col), cb.get(col)
            vals[col] = (va, vb, rel_change(va, vb))
            ia, ib = ca.intervals.get(col), cb.intervals.get(col)
            beyond[col] = None if ia is None or ib is None else not overlaps(ia, ib)
        diffs.append(CellDiff(n, vals, ca.slo_ok, cb.slo_ok, ca.frontier, cb.frontier, beyond,
                              ca.verdict, cb.verdict))
    notes = []
    mismatches = mismatched(a, b)
    if mismatches:
        notes.append("the runs did not measure the same thing: " + "; ".join(mismatches))
    if a.latency_key != b.latency_key:
        notes.append(f"frontier latency differs: {a.latency_key} vs {b.latency_key}")
    if not common:
        notes.append("the runs share no cell")
    return Comparison(
        a.run_id,
        b.run_id,
        diffs,
        [n for n in names_a if n not in set(names_b)],
        [n for n in names_b if n not in set(names_a)],
        a.recommendation.sentence,
        b.recommendation.sentence,
        notes,
        mismatches,
    )


def _diff_keys(x, y, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two JSON-like trees."""
    if isinstance(x, dict) and isinstance(y, dict):
        out = []
        for k in sorted(set(x) | set(y)):
            out += _diff_keys(x.get(k), y.get(k), f"{prefix}{k}.")
        return out
    return [] if x == y else [prefix.rstrip(".")]


def _hardware(run) -> dict:
    hw = run.manifest.get("hardware") or {}
    cpu = hw.get("cpu") or {}
    out = {"cpu": {k: cpu.get(k) for k in ("model", "logical_cores", "usable_cores", "governor")}}
    out["gpus"] = [{k: g.get(k) for k in ("name", "driver", "power_limit_w", "max_sm_clock_mhz")}
                   for g in hw.get("gpus") or []]
    return out


def mismatched(a: RunAnalysis, b: RunAnalysis) -> list[str]:
    """What the runs measured differently: workload, SLO, target, harness version, hardware."""
    out = []
    sa, sb = a.run.scenario, b.run.scenario
    if sa is not None and sb is not None:
        for part in ("workload", "slo", "target"):
            keys = _diff_keys(getattr(sa, part).model_dump(mode="json"),
                              getattr(sb, part).model_dump(mode="json"))
            if keys:
                out.append(f"{part} ({', '.join(keys[:6])}{', ...' if len(keys) > 6 else ''})")
        keys = _diff_keys({k: v for k, v in sa.load.model_dump(mode="json").items()
                           if k in ("mode", "arrival", "duration_s", "warmup_s", "max_requests")},
                          {k: v for k, v in sb.load.model_dump(mode="json").items()
                           if k in ("mode", "arrival", "duration_s", "warmup_s", "max_requests")})
        if keys:
            out.append(f"load ({', '.join(keys)})")
    va = (a.run.manifest.get("versions") or {}).get("slm-harness")
    vb = (b.run.manifest.get("versions") or {}).get("slm-harness")
    if va and vb and va != vb:
        out.append(f"harness version ({va} vs {vb})")
    keys = _diff_keys(_hardware(a.run), _hardware(b.run))
    if keys and (a.run.manifest.get("hardware") or b.run.manifest.get("hardware")):
        out.append(f"host hardware ({', '.join(keys)})")
    return out
