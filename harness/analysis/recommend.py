"""The one-sentence answer: which replicas x level to run for the scenario's SLO, with its numbers.

Among the cells that meet the SLO, those within ``THROUGHPUT_TIE`` (2 %) of the most output
tokens/s count as equally fast (closer than run-to-run noise); of those the one with the lowest
J/token wins, then lower frontier latency, then more throughput, then fewer replicas, then the
lower level (this order never picks a dominated cell). Without an SLO the same order applies to every cell with
successful requests. When no cell meets the SLO, the sentence names the closest cell (smallest
worst value/limit ratio) and says it does not meet the SLO.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.analysis.metrics import CellMetrics
from harness.analysis.slo import describe, violation
from harness.scenario.models import Slo


THROUGHPUT_TIE = 0.02


@dataclass
class Recommendation:
    cell: str | None
    meets_slo: bool  # True also when there is no SLO and a cell had successful requests
    sentence: str


def _fmt_s(v: float | None) -> str:
    if v is None:
        return "n/a"
    return f"{v * 1000:.0f} ms" if v < 1 else f"{v:.2f} s"


def _numbers(c: CellMetrics, latency_key: str) -> str:
    parts = [
        f"{c.output_tokens_per_s:,.0f} output tok/s",
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


def _best(cells: list[CellMetrics], latency_key: str) -> CellMetrics:
    top = max(c.output_tokens_per_s for c in cells)
    near = [c for c in cells if c.output_tokens_per_s >= (1.0 - THROUGHPUT_TIE) * top]
    return min(near, key=lambda c: _sort_key(c, latency_key))


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
        return Recommendation(
            best.cell, True, f"Recommended: {_config(best)}: {_numbers(best, latency_key)}; {tail}."
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
    )
