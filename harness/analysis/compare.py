"""Two runs side by side: the same cells' numbers and their relative change (B vs A)."""

from __future__ import annotations

from dataclasses import dataclass, field

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


def verdict(change: float | None, higher_better: bool) -> bool | None:
    """True: B is clearly better than A on this metric; False: clearly worse; None: too close."""
    if change is None or abs(change) < SIGNIFICANT:
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

    def to_dict(self) -> dict:
        return {
            "run_a": self.run_a,
            "run_b": self.run_b,
            "only_a": self.only_a,
            "only_b": self.only_b,
            "recommendation_a": self.recommendation_a,
            "recommendation_b": self.recommendation_b,
            "cells": [
                {
                    "cell": d.cell,
                    "slo_a": d.slo_a,
                    "slo_b": d.slo_b,
                    "frontier_a": d.frontier_a,
                    "frontier_b": d.frontier_b,
                    "values": {
                        k: {"a": a, "b": b, "change": ch} for k, (a, b, ch) in d.values.items()
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
        vals = {}
        for col, _, _ in COMPARED:
            va, vb = ca.get(col), cb.get(col)
            vals[col] = (va, vb, rel_change(va, vb))
        diffs.append(CellDiff(n, vals, ca.slo_ok, cb.slo_ok, ca.frontier, cb.frontier))
    notes = []
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
    )
