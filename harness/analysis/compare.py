"""Two runs side by side: the same cells' numbers and their relative change (B vs A).

First, whether the runs measured the same thing (:mod:`harness.analysis.comparable`: workload,
SLO, target, harness version, host hardware); then, per cell and figure, whether the change is
*beyond* the 95% intervals (the two runs' intervals do not overlap: a difference, not noise) or
*within* them (they overlap: the runs cannot tell these values apart)."""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.analysis.comparable import Difference, differences
from harness.analysis.intervals import overlaps, reach
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


def verdict(change: float | None, higher_better: bool, noise: str | None = None) -> bool | None:
    """True: B is clearly better than A on this metric; False: clearly worse; None: too close.

    With intervals on both sides (``noise`` "within" or "beyond") they decide: a change within
    them is never called better or worse. Without (``noise`` None), a change under
    :data:`SIGNIFICANT` is."""
    if change is None or noise == "within":
        return None
    if noise is None and abs(change) < SIGNIFICANT:
        return None
    if change == 0:
        return None
    return (change > 0) == higher_better


def noise_mark(ci_a, ci_b) -> str | None:
    """"within" when the two 95% intervals overlap, "beyond" when they don't; None without both."""
    if ci_a is None or ci_b is None:
        return None
    return "within" if overlaps(tuple(ci_a), tuple(ci_b)) else "beyond"


@dataclass
class CellDiff:
    cell: str
    values: dict[str, tuple[float | None, float | None, float | None]]  # col -> (a, b, rel change)
    slo_a: bool | None
    slo_b: bool | None
    frontier_a: str
    frontier_b: str
    # col -> (A's 95% interval, B's) where the cell carries one
    intervals: dict[str, tuple] = field(default_factory=dict)
    noise: dict[str, str | None] = field(default_factory=dict)  # col -> within | beyond | None
    verdict_a: str = ""
    verdict_b: str = ""
    # col -> (A's open end, B's): "upper"/"lower"/"both"/"" (harness.analysis.intervals)
    open_ends: dict[str, tuple[str, str]] = field(default_factory=dict)

    def rows(self):
        """(column, label, higher is better?, a, b, change, noise) for each metric either run has."""
        for col, label, higher_better in COMPARED:
            va, vb, ch = self.values[col]
            if va is not None or vb is not None:
                yield col, label, higher_better, va, vb, ch, self.noise.get(col)


@dataclass(frozen=True)
class Regression:
    """A figure of a common cell on which B is worse than A, beyond the two runs' 95% intervals
    (or, where either side has none, by :data:`SIGNIFICANT` or more)."""

    cell: str
    column: str
    label: str
    a: float | None
    b: float | None
    change: float | None
    noise: str | None

    def __str__(self) -> str:
        ch = f"{self.change:+.1%}" if self.change is not None else "changed"
        why = "beyond the intervals" if self.noise == "beyond" else "no intervals, 5% rule"
        return f"{self.cell} {self.label} {ch} ({why})"

    def to_dict(self) -> dict:
        return {"cell": self.cell, "column": self.column, "a": self.a, "b": self.b,
                "change": self.change, "noise": self.noise}


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
    differences: list[Difference] = field(default_factory=list)

    @property
    def comparable(self) -> bool:
        return not self.differences

    def regressions(self) -> list[Regression]:
        """Every figure the table marks worse (B vs A), cell by cell; power aside (more watts
        for more tokens is no regression; what a token costs is J/token)."""
        out = []
        for d in self.cells:
            for col, label, higher_better, va, vb, ch, noise in d.rows():
                if col != "mean_power_w" and verdict(ch, higher_better, noise) is False:
                    out.append(Regression(d.cell, col, label, va, vb, ch, noise))
        return out

    def invalid_cells(self) -> list[str]:
        """Common cells whose measurement is invalid in A or B (their verdict)."""
        return [d.cell for d in self.cells if "invalid" in (d.verdict_a, d.verdict_b)]

    def differing_aspects(self) -> list[str]:
        seen: list[str] = []
        for d in self.differences:
            if d.aspect not in seen:
                seen.append(d.aspect)
        return seen

    def to_dict(self) -> dict:
        return {
            "run_a": self.run_a,
            "run_b": self.run_b,
            "comparable": self.comparable,
            "differs_in": self.differing_aspects(),
            "differences": [d.to_dict() for d in self.differences],
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
                    "verdict_a": d.verdict_a,
                    "verdict_b": d.verdict_b,
                    "values": {
                        k: {"a": a, "b": b, "change": ch,
                            "ci_a": _ci(d.intervals.get(k), 0), "ci_b": _ci(d.intervals.get(k), 1),
                            "noise": d.noise.get(k),
                            **({"open_a": d.open_ends[k][0], "open_b": d.open_ends[k][1]}
                               if k in d.open_ends else {})}
                        for k, (a, b, ch) in d.values.items()
                    },
                }
                for d in self.cells
            ],
            "regressions": [r.to_dict() for r in self.regressions()],
            "invalid_cells": self.invalid_cells(),
            "notes": self.notes,
        }


def _ci(pair, i):
    return list(pair[i]) if pair is not None and pair[i] is not None else None


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
        vals, cis, noise, opened = {}, {}, {}, {}
        for col, _, _ in COMPARED:
            va, vb = ca.get(col), cb.get(col)
            vals[col] = (va, vb, rel_change(va, vb))
            ia, ib = ca.intervals.get(col), cb.intervals.get(col)
            if ia is not None or ib is not None:
                cis[col] = (ia, ib)
                how = (ca.intervals_open.get(col, ""), cb.intervals_open.get(col, ""))
                if any(how):
                    opened[col] = how
            noise[col] = (noise_mark(reach(ca, col), reach(cb, col))
                          if va is not None and vb is not None else None)
        diffs.append(CellDiff(n, vals, ca.slo_ok, cb.slo_ok, ca.frontier, cb.frontier, cis, noise,
                              ca.verdict, cb.verdict, opened))
    notes = []
    setup = differences(a.run, b.run)
    if setup:
        notes.append("the runs differ in " + ", ".join(dict.fromkeys(d.aspect for d in setup))
                     + ": a change below may come from that, not from what you varied")
    for d in diffs:
        bad = [tag for tag, v in (("A", d.verdict_a), ("B", d.verdict_b)) if v == "invalid"]
        if bad:
            notes.append(f"{d.cell}: the measurement is invalid in {' and '.join(bad)} "
                         "(its verdict): its changes are not evidence")
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
        setup,
    )
