"""The plan of a run: which cells, in which order.

A cell is one (replicas, level, repeat) measurement. Cells are grouped by replica count because
replicas are launched once per group; inside a group, repeats interleave (every level once, then
every level again) so a drift over time shows as a spread between repeats rather than as a level
effect. ``levels=None`` means the knee search chooses each group's levels as cells finish.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.workload.plan import cell_name as _timeline_name


def cell_name(mode: str, replicas: int, level: float, repeat: int = 0) -> str:
    """``r2-c64`` (closed loop) or ``r1-q7.5`` (open loop, req/s); repeats after the first end in
    ``-n2``, ``-n3``... (the load generator's own rule, :func:`harness.workload.plan.cell_name`)."""
    return _timeline_name(replicas, level, mode, repeat)


@dataclass(frozen=True, slots=True)
class Cell:
    replicas: int
    level: float
    mode: str               # concurrency | rate
    repeat: int = 0         # 0 for the first measurement of (replicas, level)

    @property
    def name(self) -> str:
        return cell_name(self.mode, self.replicas, self.level, self.repeat)


@dataclass(frozen=True)
class Group:
    """The cells run against one launch of ``replicas`` replicas (``cells`` empty: auto levels)."""

    replicas: int
    cells: tuple[Cell, ...] = ()


@dataclass(frozen=True)
class RunPlan:
    mode: str
    replicas: tuple[int, ...]
    levels: tuple[float, ...] | None      # None: the knee search picks them ("auto")
    repeats: int = 1
    auto_max_level: float = 0.0
    auto_max_cells: int = 0
    done: frozenset[str] = field(default_factory=frozenset)   # cells finished earlier (--resume)

    @classmethod
    def from_scenario(cls, scenario, *, replicas: list[int] | None = None,
                      levels: list[float] | None = None, repeats: int | None = None,
                      done=()) -> "RunPlan":
        ld = scenario.load
        lv = levels if levels is not None else (None if ld.levels == "auto" else ld.levels)
        return cls(ld.mode, tuple(replicas or ld.replicas),
                   None if lv is None else tuple(float(x) for x in lv),
                   max(1, int(repeats or getattr(ld, "repeats", 1) or 1)),
                   float(ld.auto_max_level), int(ld.auto_max_cells), frozenset(done))

    @property
    def auto(self) -> bool:
        return self.levels is None

    def cells_of(self, replicas: int) -> tuple[Cell, ...]:
        """Every cell of one group in run order, finished ones included (repeats interleaved)."""
        if self.levels is None:
            return ()
        return tuple(Cell(replicas, lv, self.mode, rep)
                     for rep in range(self.repeats) for lv in self.levels)

    def groups(self) -> list[Group]:
        return [Group(r, self.cells_of(r)) for r in self.replicas]

    def total_cells(self) -> int:
        per = self.auto_max_cells if self.levels is None else len(self.levels) * self.repeats
        return per * len(self.replicas)
