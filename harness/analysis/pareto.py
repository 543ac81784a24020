"""The Pareto frontier over cells: maximise throughput, minimise a latency percentile and J/token.

A cell B dominates A when B is at least as good on every objective and strictly better on one;
values are compared exactly (identical cells dominate neither other, so ties both stay on the
frontier). Where cells carry confidence intervals, B dominates A only when it is also better
beyond the intervals on at least one objective (B's interval clear of A's); a B that is better
only within the intervals is a tie: A stays on the frontier and ``ties`` names B. A cell with no throughput or no latency value (no successful request) is "excluded",
never on the frontier. J/token is an objective only when every ranked cell has it; otherwise
the frontier is computed on throughput and latency alone and the reason is given.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Point:
    key: str
    throughput: float | None  # maximise (output tokens/s)
    latency: float | None  # minimise (seconds)
    j_per_token: float | None  # minimise
    # (low, high) per objective ("throughput", "latency", "j_per_token"), when intervals exist
    ci: dict | None = None


@dataclass
class Frontier:
    status: dict[str, str]  # key -> "frontier" | "dominated" | "excluded"
    dominated_by: dict[str, list[str]]
    objectives: list[str]
    notes: list[str] = field(default_factory=list)
    ties: dict[str, list[str]] = field(default_factory=dict)  # key -> better only within intervals

    @property
    def keys(self) -> list[str]:
        return [k for k, s in self.status.items() if s == "frontier"]


def _dominates(b: tuple[float, ...], a: tuple[float, ...]) -> bool:
    """Objectives are in 'smaller is better' form."""
    return all(x <= y for x, y in zip(b, a)) and any(x < y for x, y in zip(b, a))


def pareto_frontier(points: list[Point], *, use_energy: bool = True) -> Frontier:
    status: dict[str, str] = {}
    dominated_by: dict[str, list[str]] = {p.key: [] for p in points}
    notes: list[str] = []
    ranked = []
    for p in points:
        if p.throughput is None or p.latency is None or p.throughput <= 0:
            status[p.key] = "excluded"
        else:
            ranked.append(p)
    energy = use_energy and bool(ranked) and all(p.j_per_token is not None for p in ranked)
    objectives = ["throughput", "latency"] + (["j_per_token"] if energy else [])
    if use_energy and ranked and not energy:
        missing = [p.key for p in ranked if p.j_per_token is None]
        notes.append("J/token left out of the frontier: no energy for " + ", ".join(missing))
    vec = {p.key: (-p.throughput, p.latency) + ((p.j_per_token,) if energy else ()) for p in ranked}
    ties: dict[str, list[str]] = {}
    for p in ranked:
        better = [q for q in ranked if q.key != p.key and _dominates(vec[q.key], vec[p.key])]
        dominated_by[p.key] = [q.key for q in better if _clear(q, p, objectives)]
        tied = [q.key for q in better if q.key not in dominated_by[p.key]]
        if tied:
            ties[p.key] = tied
        status[p.key] = "dominated" if dominated_by[p.key] else "frontier"
    for k, others in ties.items():
        if status[k] == "frontier":
            notes.append(
                f"{k} is on the frontier as a tie: {', '.join(others)} "
                f"{'is' if len(others) == 1 else 'are'} better only within the intervals"
            )
    return Frontier(
        status={p.key: status[p.key] for p in points},
        dominated_by=dominated_by,
        objectives=objectives,
        notes=notes,
        ties=ties,
    )


def _clear(b: Point, a: Point, objectives: list[str]) -> bool:
    """Whether ``b`` is better than ``a`` beyond the intervals on at least one objective (always
    true when either lacks intervals: then exact values decide)."""
    if not b.ci or not a.ci:
        return True
    for obj in objectives:
        bi, ai = b.ci.get(obj), a.ci.get(obj)
        if bi is None or ai is None:
            return True
        if obj == "throughput" and bi[0] > ai[1]:
            return True
        if obj != "throughput" and bi[1] < ai[0]:
            return True
    return False
