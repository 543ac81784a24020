"""The one-sentence answer: which replicas x level to run for the scenario's SLO, with its numbers.

Among the cells that meet the SLO, those whose output tokens/s interval overlaps the fastest
cell's interval count as equally fast (a tie, which the sentence names); without intervals, those
within ``THROUGHPUT_TIE`` (2 %) of the most output tokens/s; of those the one with the lowest
J/token wins, then lower frontier latency, then more throughput, then fewer replicas, then the
lower level (this order never picks a dominated cell). Without an SLO the same order applies to every cell with
successful requests. When no cell meets the SLO, the sentence names the closest cell (smallest
worst value/limit ratio) and says it does not meet the SLO.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.analysis.metrics import CellMetrics
from harness.analysis.slo import describe, in_ms, violation
from harness.scenario.models import Slo


THROUGHPUT_TIE = 0.02


@dataclass
class Recommendation:
    cell: str | None
    meets_slo: bool  # True also when there is no SLO and a cell had successful requests
    sentence: str
    ties: list[str] = field(default_factory=list)  # as fast within the intervals, not chosen
    closest: str | None = None  # no cell meets the SLO: the one nearest to it


def _fmt_s(v: float | None) -> str:
    if v is None:
        return "n/a"
    return f"{in_ms(v)} ms"   # one time unit with the tables, plots and SLO text


def _numbers(c: CellMetrics, latency_key: str) -> str:
    ci = c.intervals.get("output_tokens_per_s") if c.intervals else None
    parts = [
        f"{c.output_tokens_per_s:,.0f} output tok/s"
        + (f" (95% CI {ci[0]:,.0f}-{ci[1]:,.0f})" if ci else ""),
        f"{c.request_throughput_rps:.2f} req/s",
        f"goodput {c.goodput_rps:.2f} req/s",
    ]
    metric, q = latency_key[:-2].split("_")
    lat_name = f"{'e2e' if metric == 'e2e' else metric.upper()} {q}"
    parts.append(f"{lat_name} {_fmt_s(c.get(latency_key))}")
    if c.j_per_token is not None:
        parts.append(f"{c.j_per_token:.3g} J/token ({c.energy_source})")
    else:
        parts.append("energy not measured")
    if c.error_rate:
        parts.append(f"errors {c.error_rate:.1%}")
    return ", ".join(parts)


def _sort_key(c: CellMetrics, latency_key: str):
    lat = c.get(latency_key)
    return (
        c.j_per_token if c.j_per_token is not None else float("inf"),
        lat if lat is not None else float("inf"),
        -c.output_tokens_per_s,
        c.replicas,
        c.level,
    )


def _near_top(cells: list[CellMetrics]) -> list[CellMetrics]:
    """The cells as fast as the fastest: overlapping its interval, else within 2 %."""
    best = max(cells, key=lambda c: c.output_tokens_per_s)
    top_ci = best.intervals.get("output_tokens_per_s") if best.intervals else None
    out = []
    for c in cells:
        ci = c.intervals.get("output_tokens_per_s") if c.intervals else None
        if top_ci is not None and ci is not None:
            if ci[1] >= top_ci[0]:
                out.append(c)
        elif c.output_tokens_per_s >= (1.0 - THROUGHPUT_TIE) * best.output_tokens_per_s:
            out.append(c)
    return out


def _best(cells: list[CellMetrics], latency_key: str) -> CellMetrics:
    return min(_near_top(cells), key=lambda c: _sort_key(c, latency_key))


def _config(c: CellMetrics) -> str:
    rep = f"{c.replicas} replica" + ("s" if c.replicas != 1 else "")
    return f"{rep} at {c.level_label} ({c.cell})"


def recommend(cells: list[CellMetrics], slo: Slo | None, latency_key: str) -> Recommendation:
    if not cells:
        return Recommendation(None, False, "No cell was measured: nothing to recommend.")
    slo_text = describe(slo)
    has_slo = any(c.slo_ok is not None for c in cells)
    if has_slo:
        meeting = [c for c in cells if c.slo_ok]
    else:
        meeting = [c for c in cells if c.requests_ok > 0 and c.output_tokens_per_s > 0]
    if meeting:
        best = _best(meeting, latency_key)
        tail = (
            f"meets the SLO ({slo_text})"
            if has_slo
            else "no SLO was given, so this is the highest throughput"
        )
        ties = [c.cell for c in _near_top(meeting) if c.cell != best.cell]
        tie = ""
        if ties and best.intervals:
            tie = (
                f" Tied on throughput within the {best.interval_method or 'bootstrap'} "
                f"intervals with {', '.join(ties)}; chosen for the lowest J/token, then latency."
            )
        return Recommendation(
            best.cell,
            True,
            f"Recommended: {_config(best)}: {_numbers(best, latency_key)}; {tail}.{tie}",
            ties if best.intervals else [],
        )
    closest = min(
        cells,
        key=lambda c: (violation(c.to_dict() | c.extra_percentiles, slo), -c.output_tokens_per_s),
    )
    why = "; ".join(closest.slo_failures) or "no successful requests"
    return Recommendation(
        None,
        False,
        f"No configuration meets the SLO ({slo_text}); the closest is {_config(closest)}: "
        f"{_numbers(closest, latency_key)}; it fails {why}.",
        closest=closest.cell,
    )
