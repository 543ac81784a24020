"""What one cell's run returns: merged histograms, counts per phase, windows, SLO verdict."""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.loadgen.collector import PhaseStats
from harness.loadgen.hist import HistSet
from harness.loadgen.slo import SloVerdict
from harness.records.schema import CellWindow


@dataclass
class CellResult:
    run_id: str
    cell: str
    replicas: int
    level: float
    mode: str                                   # concurrency | rate
    measure: PhaseStats                         # the measured window, all workers merged
    phases: dict[str, PhaseStats] = field(default_factory=dict)
    windows: list[CellWindow] = field(default_factory=list)
    measure_s: float = 0.0
    slo: SloVerdict = field(default_factory=SloVerdict)
    workers: int = 1

    @property
    def histograms(self) -> HistSet:
        return self.measure.hist

    ended_early: bool = False

    @property
    def output_tokens_per_s(self) -> float:
        """Tokens that arrived inside the measured window per second (whole requests started in
        it when the window was cut short by ``max_requests``)."""
        if not self.measure_s:
            return 0.0
        if self.measure.window_tokens and not self.ended_early:
            return self.measure.window_tokens / self.measure_s
        return self.measure.output_tokens / self.measure_s

    @property
    def requests_per_s(self) -> float:
        return self.measure.requests / self.measure_s if self.measure_s else 0.0

    def summary(self) -> dict:
        """JSON-ready figures of the measured window (seconds, tokens/s)."""
        m = self.measure
        return {
            "run_id": self.run_id, "cell": self.cell, "replicas": self.replicas, "level": self.level,
            "mode": self.mode, "workers": self.workers, "measure_s": self.measure_s,
            "requests": m.requests, "ok": m.ok, "errors": dict(m.errors),
            "error_rate": m.error_rate(), "output_tokens": m.output_tokens,
            "input_tokens": m.input_tokens, "window_output_tokens": m.window_tokens,
            "output_tokens_per_s": self.output_tokens_per_s,
            "requests_per_s": self.requests_per_s, "latency": m.hist.summary(),
            "phases": {p: {"requests": s.requests, "ok": s.ok, "errors": dict(s.errors),
                           "replicas": s.replica_summary()}
                       for p, s in self.phases.items()},
            "replicas": m.replica_summary(),
            "slo": self.slo.to_dict(),
            # the load generator's own health: read passes that found data which had waited
            # >= 5 ms in the kernel (token times stay exact; tokens that queued together share one)
            "generator": {**m.generator(), "lag_max_ms": m.reader_lag_max_ns / 1e6},
        }
