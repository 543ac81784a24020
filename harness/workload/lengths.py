"""Token-length samplers for the scenario's distributions, seeded so a run can be repeated."""

from __future__ import annotations

import math
import random
from typing import Callable

from harness.scenario.models import Fixed, LogNormal, Normal, Uniform


def _clip(v: float, lo: int, hi: int | None) -> int:
    n = int(round(v))
    if n < lo:
        n = lo
    if hi is not None and n > hi:
        n = hi
    return n


def length_sampler(dist, rng: random.Random) -> Callable[[], int]:
    """A function that draws one length in tokens from ``dist`` using ``rng``."""
    if isinstance(dist, Fixed):
        v = dist.value
        return lambda: v
    if isinstance(dist, Uniform):
        lo, hi = dist.min, dist.max
        return lambda: rng.randint(lo, hi)
    if isinstance(dist, Normal):
        return lambda: _clip(rng.gauss(dist.mean, dist.std), dist.min, dist.max)
    if isinstance(dist, LogNormal):
        mu = math.log(dist.median)
        return lambda: _clip(rng.lognormvariate(mu, dist.sigma), dist.min, dist.max)
    raise TypeError(f"unknown length distribution {dist!r}")
