"""The frontier's objectives as a figure reads them: a cell's value and its 95% interval in the
unit the report shows (latency in ms everywhere), and which direction is better."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from harness.analysis.metrics import CellMetrics
from harness.analysis.summary import RunAnalysis
from harness.report.figure import latency_label

Interval = tuple[float, float]


@dataclass(frozen=True)
class Objective:
    name: str
    label: str  # axis or colour-bar label, with the unit
    value: Callable[[CellMetrics], float | None]
    interval: Callable[[CellMetrics], Interval | None]
    higher_is_better: bool
    latency_key: str | None = None   # set on the latency objective: the SLO bound it is judged by
    # which end of the interval is open in this objective's direction: "upper", "lower", "both"
    # or "" (a percentile with too few requests to bound it, harness.analysis.intervals)
    open_end: Callable[[CellMetrics], str] = lambda c: ""


def _open(c: CellMetrics, key: str) -> str:
    return (getattr(c, "intervals_open", None) or {}).get(key, "")


def _field(key: str, scale: float = 1.0):
    def value(c: CellMetrics) -> float | None:
        v = c.get(key)
        return None if v is None else v * scale

    def interval(c: CellMetrics) -> Interval | None:
        ci = c.intervals.get(key) if c.intervals else None
        return None if ci is None else (ci[0] * scale, ci[1] * scale)

    return value, interval


def _open_end(key: str):
    return lambda c: _open(c, key)


def throughput() -> Objective:
    return Objective("throughput", "output tokens/s", *_field("output_tokens_per_s"), True,
                     open_end=_open_end("output_tokens_per_s"))


def latency(a: RunAnalysis) -> Objective:
    key = a.latency_key
    return Objective("latency", latency_label(key), *_field(key, 1000.0), False, latency_key=key,
                     open_end=_open_end(key))


def energy() -> Objective:
    return Objective("energy", "J per output token", *_field("j_per_token"), False,
                     open_end=_open_end("j_per_token"))


def per_user_speed() -> Objective:
    """Tokens/s one stream sees: 1 / TPOT p50 (its interval inverted: the slow end is the low one)."""

    def value(c: CellMetrics) -> float | None:
        return 1.0 / c.tpot_p50_s if c.tpot_p50_s else None

    def interval(c: CellMetrics) -> Interval | None:
        ci = c.intervals.get("tpot_p50_s") if c.intervals else None
        return None if ci is None or ci[0] <= 0 else (1.0 / ci[1], 1.0 / ci[0])

    def open_end(c: CellMetrics) -> str:
        flip = {"upper": "lower", "lower": "upper"}   # a slow TPOT left open is a low speed
        how = _open(c, "tpot_p50_s")
        return flip.get(how, how)

    return Objective("per-user speed", "per-user output tokens/s (1 / TPOT p50)", value, interval,
                     True, open_end=open_end)
