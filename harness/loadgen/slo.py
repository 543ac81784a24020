"""SLO verdicts: the scenario's thresholds against a cell's measured window.

Latency percentiles come from the merged microsecond histograms (successful requests), the error
rate from all requests that started in the measured window.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

_METRICS = (("ttft_s", "ttft"), ("itl_s", "itl"), ("tpot_s", "tpot"), ("e2e_s", "e2e"))


@dataclass
class SloCheck:
    name: str            # e.g. "ttft_s.p99"
    limit: float
    observed: float | None
    ok: bool


@dataclass
class SloVerdict:
    checks: list[SloCheck] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def to_dict(self) -> dict:
        return {"ok": self.ok, "checks": [asdict(c) for c in self.checks]}


def evaluate(slo, stats, measure_s: float, ended_early: bool = False) -> SloVerdict:
    """Check ``stats`` (a PhaseStats of the measured window) against ``slo`` (scenario.slo)."""
    v = SloVerdict()
    if slo is None:
        return v
    for key, metric in _METRICS:
        pct = getattr(slo, key)
        if pct is None:
            continue
        for q, limit in pct.items():
            obs = stats.hist.percentile_s(metric, q)
            name = f"{key}.p{q:g}".replace("99.9", "999")
            v.checks.append(SloCheck(name, limit, obs, obs is not None and obs <= limit))
    if slo.max_error_rate is not None:
        rate = stats.error_rate() if stats.requests else None
        v.checks.append(SloCheck("error_rate", slo.max_error_rate, rate,
                                 rate is not None and rate <= slo.max_error_rate))
    if slo.min_output_tokens_per_s is not None:
        toks = stats.output_tokens if ended_early or not stats.window_tokens else stats.window_tokens
        tps = toks / measure_s if measure_s > 0 and stats.requests else None
        v.checks.append(SloCheck("output_tokens_per_s", slo.min_output_tokens_per_s, tps,
                                 tps is not None and tps >= slo.min_output_tokens_per_s))
    return v
