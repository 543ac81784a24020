"""The timeline of a run: ramp stages, warm-up, measured window and cool-down for each level.

Every generator process computes the same plan from the scenario and one shared start time, so
the phase and cell of a request follow from the clock alone and need no messages per request.
"""

from __future__ import annotations

from dataclasses import dataclass


def cell_name(replicas: int, level: float, mode: str, repeat: int = 0) -> str:
    """``r2-c64`` (closed loop, concurrency) or ``r1-q7.5`` (open loop, req/s); the second and
    later repeats of one (replicas, level) end in ``-n2``, ``-n3``..."""
    base = f"r{replicas}-c{int(level)}" if mode == "concurrency" else f"r{replicas}-q{level:g}"
    return base if repeat == 0 else f"{base}-n{repeat + 1}"


EXP_FLOOR = 0.01


@dataclass(frozen=True, slots=True)
class Segment:
    start_s: float
    end_s: float
    phase: str          # ramp | warmup | measure | cooldown
    level: float
    cell: str
    from_value: float   # users (closed loop) or req/s (open loop) at start_s ...
    to_value: float     # ... and at end_s, linear (or exponential) in between
    shape: str = "linear"   # linear | exponential (a ramp stage's shape)

    def value_at(self, t_s: float) -> float:
        span = self.end_s - self.start_s
        if span <= 0 or self.from_value == self.to_value:
            return self.to_value
        f = min(max((t_s - self.start_s) / span, 0.0), 1.0)
        if self.shape == "exponential":
            # a constant growth factor per second; a ramp from 0 starts at 1% of its target
            a = self.from_value if self.from_value > 0 else self.to_value * EXP_FLOOR
            b = self.to_value if self.to_value > 0 else self.from_value * EXP_FLOOR
            return a * (b / a) ** f
        return self.from_value + f * (self.to_value - self.from_value)


@dataclass(frozen=True, slots=True)
class Plan:
    mode: str               # concurrency | rate
    replicas: int
    segments: tuple[Segment, ...]

    @property
    def total_s(self) -> float:
        return self.segments[-1].end_s if self.segments else 0.0

    def at(self, t_s: float) -> Segment | None:
        """The segment at ``t_s`` seconds since the start; None before 0 or after the end."""
        if t_s < 0:
            return None
        for seg in self.segments:
            if t_s < seg.end_s:
                return seg
        return None

    def cells(self) -> list[tuple[str, float]]:
        seen: dict[str, float] = {}
        for s in self.segments:
            seen.setdefault(s.cell, s.level)
        return list(seen.items())

    def windows(self) -> list[tuple[str, str, float, float, float]]:
        """(cell, phase, start_s, end_s, level) with consecutive segments of one phase merged:
        the phase windows every door writes (the one rule for both drivers)."""
        out: list[list] = []
        for s in self.segments:
            if out and out[-1][0] == s.cell and out[-1][1] == s.phase:
                out[-1][3] = s.end_s
            else:
                out.append([s.cell, s.phase, s.start_s, s.end_s, s.level])
        return [tuple(w) for w in out]

    def window(self, cell: str, phase: str) -> tuple[float, float] | None:
        segs = [s for s in self.segments if s.cell == cell and s.phase == phase]
        return (segs[0].start_s, segs[-1].end_s) if segs else None


def build_plan(load, levels: list[float], replicas: int, *, start_value: float = 0.0,
               repeat: int = 0) -> Plan:
    """Segments for ``levels`` back to back under the scenario's ``load`` timings."""
    segs: list[Segment] = []
    t = 0.0
    prev = start_value
    for level in levels:
        cell = cell_name(replicas, level, load.mode, repeat)
        for st in load.stages:
            segs.append(Segment(t, t + st.duration_s, "ramp", level, cell, prev, st.target,
                                getattr(st, "shape", "linear")))
            t += st.duration_s
            prev = st.target
        for phase, dur in (("warmup", load.warmup_s), ("measure", load.duration_s),
                           ("cooldown", load.cooldown_s)):
            if dur > 0:
                segs.append(Segment(t, t + dur, phase, level, cell, level, level))
                t += dur
        prev = level
    return Plan(load.mode, replicas, tuple(segs))


def users_at(seg: Segment) -> tuple[int, float]:
    """Closed-loop users and Locust spawn rate for a segment (the one ramp rule for both drivers):
    a ramp moves at its own slope; a level's users start together."""
    if seg.phase == "ramp":
        span = max(seg.end_s - seg.start_s, 1e-3)
        return max(1, int(round(seg.to_value))), max(abs(seg.to_value - seg.from_value) / span, 0.5)
    return int(seg.level), max(seg.level * 50.0, 100.0)
