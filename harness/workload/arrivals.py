"""Open-loop arrival gaps: constant, Poisson or gamma, at a rate that may change over time.

The schedule is a sequence of *intended* send times computed from the clock of the plan, never
from when the previous response came back, so a slow server cannot slow the offered load.
"""

from __future__ import annotations

import random


class Arrivals:
    """Gaps between intended sends for one generator stream at ``rate`` req/s."""

    def __init__(self, kind: str, seed: int | str, stream: int = 0, burstiness: float = 1.0):
        if kind not in ("constant", "poisson", "gamma"):
            raise ValueError(f"unknown arrival process {kind!r}")
        if not burstiness > 0:
            raise ValueError("burstiness must be > 0")
        self.kind = kind
        self.shape = burstiness
        self.rng = random.Random(f"arrivals:{seed}:{stream}")

    def unit(self) -> float:
        """The next gap in units of expected arrivals: 1 (constant), Exp(1) (Poisson) or
        Gamma(k, 1/k) with k the burstiness (mean 1, coefficient of variation 1/sqrt(k), as vLLM's
        ``--burstiness``).

        Consumed against the integral of the rate over time (time rescaling), which keeps a
        Poisson process exact when the rate changes, e.g. during a ramp.
        """
        if self.kind == "constant":
            return 1.0
        if self.kind == "gamma":
            return self.rng.gammavariate(self.shape, 1.0 / self.shape)
        return self.rng.expovariate(1.0)

    def gap_s(self, rate: float) -> float:
        if rate <= 0:
            return float("inf")
        return self.unit() / rate
