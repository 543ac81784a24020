"""One run analysed: cells, frontier, recommendation; written as summary.json and cells.csv."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from harness.analysis.metrics import CellMetrics, compute_cells, window_started
from harness.analysis.attribution import attribute
from harness.analysis.verdict import judge
from harness.analysis.pareto import Frontier, Point, pareto_frontier
from harness.analysis.recommend import Recommendation, recommend
from harness.analysis.intervals import reach
from harness.analysis.repeats import pooled_cells
from harness.analysis.rundata import RunData, load_run
from harness.analysis.sessions import SessionReport, session_figures
from harness.analysis.sessions import write_csvs as write_session_csvs
from harness.analysis.slo import bounds, describe
from harness.errors import InputError
from harness.scenario.models import Slo

LATENCY_KEYS = tuple(
    f"{m}_p{q}_s" for m in ("ttft", "itl", "tpot", "e2e") for q in (50, 90, 95, 99)
)

# Figures that carry a 95% interval (cells.csv: <figure>_lo, <figure>_hi)
INTERVAL_KEYS = (
    "output_tokens_per_s",
    "request_throughput_rps",
    "goodput_rps",
    "j_per_token",
    *(f"{m}_p{q}_s" for m in ("ttft", "tpot", "e2e") for q in (50, 90, 95, 99)),
)

# Columns of cells.csv, in order (per-replica rows go to replicas.csv).
CSV_COLUMNS = (
    "cell",
    "replicas",
    "level",
    "level_kind",
    "duration_s",
    "requests_started",
    "requests_ok",
    "requests_failed",
    "requests_completed",
    "request_throughput_rps",
    "goodput_rps",
    "good_fraction",
    "output_tokens",
    "output_tokens_per_s",
    "steadiness",
    "error_rate",
    *LATENCY_KEYS,
    "itl_source",
    "mean_power_w",
    "energy_j",
    "energy_source",
    "energy_coverage",
    "j_per_token",
    "tokens_per_j",
    "gpu_util_pct",
    "mem_used_bytes",
    "slo_ok",
    "verdict",
    "verdict_reasons",
    "frontier",
    "dominated_by",
    "errors",
    "start_ns",
    "end_ns",
    "repeats",
    "interval_method",
    "intervals_open",
    *[f"{k}_{b}" for k in INTERVAL_KEYS for b in ("lo", "hi")],
    "server_queue_mean",
    "server_queue_max",
    "server_running_mean",
    "server_running_max",
    "server_kv_cache_mean",
    "server_kv_cache_max",
    "breaker_opened",
    "breaker_skipped",
)


def default_latency_key(slo: Slo | None) -> str:
    """The SLO's first bounded metric at its tail percentile (TTFT first), else TTFT p99."""
    bs = bounds(slo)
    for metric in ("ttft_s", "itl_s", "tpot_s", "e2e_s"):
        mine = [b for b in bs if b.metric == metric]
        if mine:
            return max(mine, key=lambda b: b.q).key
    return "ttft_p99_s"


@dataclass
class RunAnalysis:
    run: RunData
    cells: list[CellMetrics]
    frontier: Frontier
    recommendation: Recommendation
    latency_key: str
    slo: Slo | None
    notes: list[str] = field(default_factory=list)
    windows: list[CellMetrics] = field(default_factory=list)  # every measured window (repeats)
    sessions: SessionReport | None = None   # multi-turn runs: by turn index, per session

    @property
    def run_id(self) -> str:
        return self.run.run_id

    def cell(self, name: str) -> CellMetrics | None:
        return next((c for c in self.cells if c.cell == name), None)

    @property
    def invalid_cells(self) -> list[str]:
        return [c.cell for c in self.cells if c.verdict == "invalid"]

    def exit_code(self) -> int:
        """4 when a cell's measurement is invalid (its verdict), else 0 when the recommended
        configuration meets the SLO, 1 when no cell does."""
        if self.invalid_cells:
            return 4
        return 0 if self.recommendation.meets_slo else 1

    def to_summary(self) -> dict:
        sc = self.run.scenario
        return {
            "run_id": self.run_id,
            "scenario": sc.name if sc else None,
            "status": self.run.manifest.get("status"),
            "cells_partial": list(self.run.manifest.get("cells_partial") or []),
            "slo": describe(self.slo),
            "slo_bounds": [
                {"metric": b.metric, "percentile": b.q, "limit_s": b.limit_s}
                for b in bounds(self.slo)
            ],
            "latency_objective": self.latency_key,
            "hardware": self.run.manifest.get("hardware"),
            "servers": self.run.manifest.get("servers"),
            "server_metrics": self.run.manifest.get("server_metrics"),
            "verdicts": {
                k: [c.cell for c in self.cells if c.verdict == k]
                for k in ("valid", "warn", "invalid")
            },
            "frontier": {
                "objectives": self.frontier.objectives,
                "cells": self.frontier.keys,
                "notes": self.frontier.notes,
            },
            "recommendation": {
                "cell": self.recommendation.cell,
                "meets_slo": self.recommendation.meets_slo,
                "sentence": self.recommendation.sentence,
            },
            "definitions": DEFINITIONS,
            "notes": self.notes,
            "auto_search": auto_search(self.run),
            "intervals": {
                "confidence": 0.95,
                "method": "rates: percentile bootstrap over requests within a window "
                "('requests'), over repeats then requests within each ('repeats+requests'); "
                "latency percentiles: order-statistic (binomial) interval over the requests, "
                "with repeats over the pooled requests widened to every repeat's own percentile; "
                "an end in cells[].intervals_open is open (too few requests for the percentile)",
                "ties": self.frontier.ties,
                "recommendation_ties": self.recommendation.ties,
            },
            "cells": [c.to_dict() for c in self.cells],
            "windows": [c.to_dict() for c in self.windows]
            if any(c.repeats for c in self.cells)
            else [],
            **({"sessions": self.sessions.to_dict()} if self.sessions is not None else {}),
        }

    def write(self, out_dir: Path | None = None) -> tuple[Path, Path]:
        """Write summary.json and cells.csv (and replicas.csv) into the run dir (or out_dir)."""
        d = Path(out_dir or self.run.path)
        d.mkdir(parents=True, exist_ok=True)
        sj = d / "summary.json"
        tmp = d / "summary.json.tmp"
        tmp.write_text(json.dumps(_finite(self.to_summary()), indent=2, default=_json_default, allow_nan=False))
        tmp.replace(sj)
        cp = d / "cells.csv"
        with cp.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(CSV_COLUMNS)
            for c in self.cells:
                row = []
                for col in CSV_COLUMNS:
                    base, _, end = col.rpartition("_")
                    if end in ("lo", "hi") and base in INTERVAL_KEYS:
                        ci = c.intervals.get(base)
                        row.append("" if ci is None else ci[0 if end == "lo" else 1])
                        continue
                    v = c.get(col)
                    if col == "repeats":
                        v = " ".join(v)
                    if col == "errors":
                        v = ";".join(f"{k}={n}" for k, n in v.items())
                    elif col == "intervals_open":
                        v = " ".join(f"{k}:{how}" for k, how in sorted(v.items()))
                    elif col == "dominated_by":
                        v = " ".join(v)
                    elif col == "verdict_reasons":
                        v = " | ".join(v)
                    row.append("" if v is None else v)
                w.writerow(row)
        with (d / "replicas.csv").open("w", newline="") as fh:
            w = csv.writer(fh)
            cols = [
                "cell",
                "replica",
                "requests_started",
                "requests_ok",
                "requests_failed",
                "error_rate",
                "request_throughput_rps",
                "goodput_rps",
                "output_tokens_per_s",
                "token_share",
                "ttft_p50_s",
                "ttft_p99_s",
                "tpot_p50_s",
                "e2e_p99_s",
                "breaker_opened",
                "breaker_skipped",
            ]
            w.writerow(cols)
            for c in self.windows or self.cells:
                for r in c.per_replica:
                    w.writerow(
                        [c.cell]
                        + ["" if getattr(r, k) is None else getattr(r, k) for k in cols[1:]]
                    )
        if self.sessions is not None:
            write_session_csvs(self.sessions, d)
        return sj, cp


def _finite(o):
    """NaN/inf become null: summary.json stays strict JSON for every reader."""
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    return o


def _json_default(o):
    if hasattr(o, "item"):
        return o.item()
    return str(o)


DEFINITIONS = {
    "distributions": "TTFT/TPOT/e2e percentiles (linear interpolation) over successful requests "
    "whose intended send time is in the measured window; ITL from the load "
    "generator's per-token HDR histogram of that window when stored",
    "request_throughput_rps": "successful requests whose end_ns is in the measured window / window length",
    "goodput_rps": "request_throughput_rps x share of the successful requests sent in the window that "
    "met every per-request SLO bound",
    "steadiness": "(tokens/s in the 2nd half - in the 1st half) / mean over the measured window; "
    "beyond +-20% the cell is flagged as not steady",
    "output_tokens_per_s": "output tokens that arrived in the window (first token at first_token_ns, "
    "the rest spread evenly until end_ns) / window length",
    "error_rate": "failed / sent, over requests whose intended send time is in the window",
    "energy_j": "window (sampler at the edges) > sample-counter > power-integral over the measured window; source named",
    "j_per_token": "energy_j / output tokens that arrived in the same window",
    "intervals": "95% intervals (<figure>_lo/_hi). Rates: percentile bootstrap, requests resampled "
    "within a window; with repeats, the repeats resampled first, then the requests within each. "
    "Latency percentiles: order-statistic (binomial) interval of the requests (pooled over repeats, "
    "widened to every repeat's own percentile); intervals_open names the figures whose end is "
    "the extreme value seen (upper: too few requests to bound the percentile from above)",
    "verdict": "valid / warn / invalid from the load generator's health, energy, sample size, "
    "steadiness and failed requests (docs/trust.md); invalid cells are off the frontier",
}


def quantile_of(key: str) -> float:
    """'ttft_p99_s' -> 99.0, 'ttft_p999_s' -> 99.9."""
    d = key.split("_")[1][1:]
    return float(d[:2] + "." + d[2:]) if len(d) > 2 else float(d)


def auto_search(run: RunData) -> dict:
    """For ``levels: auto``, per replica count: the probe, the levels in run order, the bracket
    and why the search stopped (summary.json ``auto_search``)."""
    sc = run.scenario
    auto = run.manifest.get("auto_results")
    if sc is None or sc.load.levels != "auto" or not isinstance(auto, dict):
        return {}
    from harness.analysis.knee import KneeSearch, LevelResult, ProbeEstimate

    ks = KneeSearch.for_load(sc.load)
    probes = run.manifest.get("auto_probe") or {}
    out = {}
    for r, rows in sorted(auto.items(), key=lambda kv: int(kv[0])):
        res = [LevelResult.from_json(x) for x in rows]
        lo, hi = ks.bracket(res)
        probe = ProbeEstimate.from_json(probes[r]) if probes.get(r) else None
        out[r] = {
            "probe": probe.to_json() if probe else None,
            "probe_note": probe.describe() if probe else "",
            "start": res[0].level if res else None,
            "levels": [x.to_json() for x in res],
            "bracket": [lo, hi],
            "stopped": ks.why_stopped(res),
        }
    return out


def auto_notes(run: RunData) -> list[str]:
    """For ``levels: auto``, where the search started and why it stopped, per replica count."""
    out = []
    for r, a in auto_search(run).items():
        if a["probe_note"]:
            out.append(f"levels: auto, {r} replica(s): {a['probe_note']}")
        out.append(f"levels: auto, {r} replica(s): {a['stopped']}")
    return out


def edge_note(name: str | None, cells: list[CellMetrics], auto: dict | None = None,
              meets: bool = True) -> str:
    """A recommendation (or, when no cell meets the SLO, the closest cell ``name`` with ``meets``
    False) at the edge of the tested range says so, and what to try next: the answer may lie
    beyond it. ``auto``: :func:`auto_search` of a ``levels: auto`` run, whose settings are named."""
    rec = next((c for c in cells if c.cell == name), None)
    if rec is None or len(cells) < 2:
        return ""
    mine = sorted((c for c in cells if c.replicas == rec.replicas), key=lambda c: c.level)
    levels = sorted({c.level for c in mine})
    replicas = sorted({c.replicas for c in cells})
    unit = "streams" if rec.level_kind == "concurrency" else "req/s"
    lv = f"{rec.level:g} {unit}"
    search = (auto or {}).get(str(rec.replicas))
    out = []
    if len(levels) > 1 and rec.level == levels[-1]:
        head = f"the highest load tried for {rec.replicas} replica(s) ({lv})"
        stopped = search["stopped"] if search else ""
        if not search:
            out.append(f"{head}: add levels above {rec.level:g} (e.g. {rec.level * 2:g} {unit})")
        elif stopped.startswith("reached auto_max_level"):
            out.append(f"{head}: raise load.auto_max_level above {rec.level:g}")
        elif stopped.startswith("the cell budget"):
            out.append(f"{head}: raise load.auto_max_cells so the search goes above {rec.level:g}")
        # else the search saw the knee at its top level: nothing lies beyond worth trying
    if len(levels) > 1 and rec.level == levels[0] and (unit != "streams" or rec.level > 1):
        nxt = next(c for c in mine if c.level == levels[1])
        head = f"the lowest load tried for {rec.replicas} replica(s) ({lv})"
        if not meets:
            out.append(f"{head}: try levels below {rec.level:g} {unit}")
        elif nxt.slo_ok is False:
            out.append(f"{head}, and the SLO breaks at the next ({levels[1]:g} {unit}): try levels "
                       f"between {rec.level:g} and {levels[1]:g} {unit}")
    if len(replicas) > 1 and rec.replicas == replicas[-1]:
        out.append(f"the most replicas tried ({rec.replicas}): try {rec.replicas * 2}")
    if not out:
        return ""
    return "It is at the edge of the tested range, " + "; ".join(out) + "."


def _ci(c: CellMetrics, key: str) -> dict:
    """The cell's intervals under the frontier's objective names."""
    out = {}
    for obj, fig in (("throughput", "output_tokens_per_s"), ("latency", key),
                     ("j_per_token", "j_per_token")):
        if fig in c.intervals:
            out[obj] = reach(c, fig)   # an open end reaches +-inf: no win claimed beyond it
    return out


def judge_cells(run: RunData, cells: list[CellMetrics], key: str) -> None:
    """Give every cell its verdict (harness.analysis.verdict), thresholds from the scenario."""
    from harness.scenario.models import Validity

    th = run.scenario.validity if run.scenario is not None else Validity()
    rate = run.scenario.telemetry.rate_hz if run.scenario is not None else 20.0
    for c in cells:
        hist = run.histograms.get(c.cell) or {}
        gen = hist.get("generator") if isinstance(hist.get("generator"), dict) else None
        v = judge(
            c,
            gen=gen,
            started=window_started(run, c.cell, c.start_ns, c.end_ns),
            gpu=run.gpu,
            windows=run.windows,
            th=th,
            q=quantile_of(key),
            max_gap_s=max(1.0, 3.0 / rate),
        )
        c.verdict, c.verdict_reasons, c.checks = v.status, v.reasons, v.checks
        if c.energy_j is not None and c.energy_j > 0:
            req = run.requests
            c.energy_attribution = attribute(
                req[req["cell"] == c.cell] if not req.empty else req,
                run.gpu,
                c.start_ns,
                c.end_ns,
                c.energy_j,
                c.checks.get("idle_power_w"),
                prefill_weight=th.prefill_weight,
                decode_weight=th.decode_weight,
            )


def analyze(
    run: RunData | str | Path, *, latency_key: str | None = None, slo: Slo | None = None
) -> RunAnalysis:
    if not isinstance(run, RunData):
        run = load_run(run)
    if slo is None and run.scenario is not None:
        slo = run.scenario.slo
    key = latency_key or default_latency_key(slo)
    if key not in LATENCY_KEYS and not any(b.key == key for b in bounds(slo)):
        raise InputError(
            f"unknown latency metric {key!r}; use one of {', '.join(LATENCY_KEYS)}",
            field="--latency",
        )
    windows = compute_cells(run, slo)
    judge_cells(run, windows, key)
    cells = pooled_cells(run, windows, slo)
    from harness.analysis.server import attach

    attach(run, cells, windows)
    fr = pareto_frontier(
        [
            Point(c.cell, c.output_tokens_per_s, c.get(key), c.j_per_token, _ci(c, key))
            if c.verdict != "invalid"
            else Point(c.cell, None, None, None)
            for c in cells
        ]
    )
    for c in cells:
        c.frontier = fr.status[c.cell] if c.verdict != "invalid" else "invalid"
        c.dominated_by = fr.dominated_by[c.cell]
    invalid = [c.cell for c in cells if c.verdict == "invalid"]
    if invalid:
        fr.notes.append("left off the frontier, their measurement is invalid: " + ", ".join(invalid))
    ok_cells = [c for c in cells if c.verdict != "invalid"]
    if invalid and not ok_cells:
        rec = Recommendation(
            None, False, "Every measured cell is invalid (see its verdict): nothing to recommend."
        )
    else:
        rec = recommend(ok_cells, slo, key)
        edge = edge_note(rec.cell or rec.closest, cells, auto_search(run), rec.cell is not None)
        if edge:
            rec.sentence += " " + edge
        if invalid:
            rec.sentence += f" Left out as invalid: {', '.join(invalid)}."
    notes = list(run.notes)
    sm = run.manifest.get("server_metrics") or {}
    failed = {u: n for u, n in (sm.get("failures") or {}).items() if n}
    if failed:
        notes.append("server /metrics scrapes failed (counted, the run went on): " + ", ".join(
            f"{u} {n} of {(sm.get('scrapes') or {}).get(u, '?')} ({(sm.get('last_error') or {}).get(u, '')})"
            for u, n in sorted(failed.items())))
    if run.manifest.get("status") not in (None, "complete"):
        notes.append(f"run status: {run.manifest.get('status')}")
    done = run.manifest.get("cells_done")
    stopped = list(run.manifest.get("cells_partial") or [])
    if stopped:
        notes.append("partial, the run was stopped before their end (left out, never counted as "
                     "meeting the SLO): " + ", ".join(stopped))
    if isinstance(done, list) and not run.windows.empty:
        measured = run.windows[run.windows["phase"] != "idle"]
        partial = sorted(set(measured["cell"].astype(str)) - set(done) - set(stopped))
        if partial:
            notes.append("left out, the sweep did not finish them: " + ", ".join(partial))
    if not cells:
        notes.append("no measured window in this run")
    notes += auto_notes(run)
    if any(c.repeats for c in cells):
        notes.append(
            "repeats pooled per configuration: rates are the mean over repeats, percentiles over "
            "the pooled requests; rate intervals bootstrap the repeats, then the requests in each; "
            "percentile intervals are the pooled requests' order statistics, widened to every "
            "repeat's own percentile"
        )
    return RunAnalysis(
        run=run,
        cells=cells,
        frontier=fr,
        recommendation=rec,
        latency_key=key,
        slo=slo,
        notes=notes,
        windows=windows,
        sessions=session_figures(run.requests, _turns(run)),
    )


def _turns(run: RunData) -> int | None:
    sess = run.scenario.workload.sessions if run.scenario is not None else None
    return sess.turns if sess is not None else None
