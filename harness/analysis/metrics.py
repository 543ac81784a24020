"""Per-cell and per-replica metrics from the measured window of each cell.

Which requests count (say it once, use it everywhere):
- Distributions (TTFT, ITL, TPOT, e2e) and the error rate: requests of the cell whose intended
  send time (``intended_ns``; ``start_ns`` where missing) falls in the measured window
  ``[start_ns, end_ns)`` (the load generator's own phase rule); latencies from the successful
  ones. A request sent in the window and finished in the cool-down is included.
- Request throughput: successful requests whose ``end_ns`` falls in the window, divided by the
  window's length: completions per second inside the window.
- Goodput: request throughput x the share of the window's successful requests (the distribution
  population above) that met every per-request SLO bound. In a steady window this equals "good
  completions per second"; unlike counting good completions, it is not skewed by which requests
  happen to finish inside a short window (e.g. only a warm-up wave).
- Output tokens/s: tokens that arrived in the window (see :mod:`harness.analysis.tokens`) per
  second; the same tokens divide the window's energy for J/token.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from harness.analysis.energy import window_energy
from harness.analysis.rundata import RunData
from harness.analysis.slo import bounds, cell_verdict, good_mask
from harness.analysis.stats import REPORTED_PERCENTILES, pct_name, percentile
from harness.analysis.tokens import tokens_in_window
from harness.records.schema import ERROR_CLASSES
from harness.scenario.models import Slo

LAT_METRICS = ("ttft", "itl", "tpot", "e2e")
STEADY_TOLERANCE = 0.2  # tokens/s halves of a window differing more than this get a note


@dataclass
class ReplicaMetrics:
    replica: str
    requests_started: int
    requests_ok: int
    requests_failed: int
    error_rate: float | None
    request_throughput_rps: float
    goodput_rps: float
    output_tokens_per_s: float
    token_share: float | None
    ttft_p50_s: float | None
    ttft_p99_s: float | None
    tpot_p50_s: float | None
    e2e_p99_s: float | None
    # the balancing circuit breaker over the window (the load generator's count; None when not
    # recorded): times it opened, and requests sent to another replica while it was open
    breaker_opened: int | None = None
    breaker_skipped: int | None = None


@dataclass
class CellMetrics:
    run_id: str
    cell: str
    replicas: int
    level: float
    level_kind: str
    start_ns: int
    end_ns: int
    duration_s: float
    requests_started: int = 0
    requests_ok: int = 0
    requests_failed: int = 0
    requests_completed: int = 0
    request_throughput_rps: float = 0.0
    goodput_rps: float = 0.0
    good_fraction: float | None = None
    output_tokens: float = 0.0
    output_tokens_per_s: float = 0.0
    steadiness: float | None = None  # (2nd half - 1st half) / mean, tokens/s in the window
    error_rate: float | None = None
    errors: dict[str, int] = field(default_factory=dict)
    ttft_p50_s: float | None = None
    ttft_p90_s: float | None = None
    ttft_p95_s: float | None = None
    ttft_p99_s: float | None = None
    itl_p50_s: float | None = None
    itl_p90_s: float | None = None
    itl_p95_s: float | None = None
    itl_p99_s: float | None = None
    tpot_p50_s: float | None = None
    tpot_p90_s: float | None = None
    tpot_p95_s: float | None = None
    tpot_p99_s: float | None = None
    e2e_p50_s: float | None = None
    e2e_p90_s: float | None = None
    e2e_p95_s: float | None = None
    e2e_p99_s: float | None = None
    itl_source: str = ""
    extra_percentiles: dict[str, float | None] = field(default_factory=dict)
    mean_power_w: float | None = None
    energy_j: float | None = None
    energy_source: str | None = None
    energy_coverage: float = 0.0
    energy_note: str = ""
    j_per_token: float | None = None
    tokens_per_j: float | None = None
    gpu_util_pct: float | None = None
    mem_used_bytes: int | None = None
    gpu_samples: int = 0
    slo_ok: bool | None = None
    slo_failures: list[str] = field(default_factory=list)
    frontier: str = ""  # "frontier" | "dominated" | "excluded"
    dominated_by: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    verdict: str = "valid"  # valid | warn | invalid (harness.analysis.verdict)
    verdict_reasons: list[str] = field(default_factory=list)
    checks: dict = field(default_factory=dict)
    # 95% intervals, {figure: (low, high)} (harness.analysis.intervals); method "requests" (one
    # window) or "repeats+requests" (a configuration measured in several windows)
    intervals: dict = field(default_factory=dict)
    interval_method: str = ""
    # figure -> "upper"/"lower"/"both": that end is the extreme value seen, the interval is open
    # beyond it (too few requests for the percentile)
    intervals_open: dict = field(default_factory=dict)
    repeats: list[str] = field(default_factory=list)  # the windows a configuration pools
    # measured energy split into idle and per-request shares (harness.analysis.attribution)
    energy_attribution: dict | None = None
    per_replica: list[ReplicaMetrics] = field(default_factory=list)
    # the replicas' own /metrics over the window (harness.analysis.server): per replica, and
    # the replicas' mean of means / max of maxima
    server_metrics: dict = field(default_factory=dict)
    server_queue_mean: float | None = None
    server_queue_max: float | None = None
    server_running_mean: float | None = None
    server_running_max: float | None = None
    server_kv_cache_mean: float | None = None
    server_kv_cache_max: float | None = None
    # the breaker's figures summed over the replicas (per replica in ``per_replica``)
    breaker_opened: int | None = None
    breaker_skipped: int | None = None

    def get(self, key: str):
        """A metric by column name, including SLO-only percentiles such as 'ttft_p999_s'."""
        if key in self.extra_percentiles:
            return self.extra_percentiles[key]
        return getattr(self, key, None)

    def put(self, key: str, value) -> None:
        """Set a metric by column name; a percentile with no field of its own (an SLO-only one)
        goes to ``extra_percentiles``."""
        if hasattr(self, key):
            setattr(self, key, value)
        else:
            self.extra_percentiles[key] = value

    @property
    def level_label(self) -> str:
        return level_label(self.level_kind, self.level)

    def to_dict(self) -> dict:
        return asdict(self)


def level_label(kind: str, level: float) -> str:
    return f"concurrency {level:g}" if kind == "concurrency" else f"{level:g} req/s"


def _itl_from_histograms(hist: dict | None, qs) -> dict[str, float] | None:
    """ITL percentiles (s) over every token gap, from the cell's merged HDR histogram (us)."""
    if not hist:
        return None
    enc = None
    for k in ("itl_us", "itl"):
        if isinstance(hist.get(k), str):
            enc = hist[k]
            break
    if enc is None:
        return None
    try:
        from hdrh.histogram import HdrHistogram

        h = HdrHistogram.decode(enc)
    except Exception:  # noqa: BLE001 - an unreadable histogram falls back to the records
        return None
    if h.get_total_count() == 0:
        return None
    return {pct_name(q): h.get_value_at_percentile(q) / 1e6 for q in qs}


def _measure_windows(run: RunData) -> dict[str, dict]:
    """The last measured window of each cell (a resumed cell's retry supersedes its attempt)."""
    out: dict[str, dict] = {}
    w = run.windows
    if not w.empty:
        w = w[w["phase"] == "measure"].sort_values("start_ns")
        for row in w.to_dict("records"):
            out[row["cell"]] = row
    done = run.manifest.get("cells_done")
    if isinstance(done, list):  # a sweep: a cell counts once the sweep recorded it finished
        out = {c: row for c, row in out.items() if c in set(done)}
    if out or run.requests.empty or run.manifest.get("cells_partial"):
        return out   # a stopped run's partial cell is never measured from its records
    # No windows stored: derive one per cell from records marked 'measure'.
    r = run.requests[run.requests["phase"] == "measure"]
    for cell, g in r.groupby("cell"):
        first = g.iloc[0]
        kind = "concurrency" if str(cell).split("-")[-1].startswith("c") else "rate"
        out[str(cell)] = dict(
            run_id=first["run_id"],
            cell=cell,
            replicas=int(first["replicas"]),
            level=float(first["level"]),
            level_kind=kind,
            phase="measure",
            start_ns=int(g["start_ns"].min()),
            end_ns=int(g["start_ns"].max()) + 1,
            energy_j=None,
            energy_source=None,
            note="derived from records: no window stored",
        )
    return out


def window_started(run: RunData, cell: str, a: int, b: int) -> pd.DataFrame:
    """The cell's requests whose intended send time falls in ``[a, b)`` (the distributions' rule)."""
    req = run.requests
    cell_req = req[req["cell"] == cell] if not req.empty else req
    sent = _sent_ns(cell_req)
    return cell_req[(sent >= a) & (sent < b)]


def _sent_ns(df: pd.DataFrame) -> pd.Series:
    """When a request was meant to go (the schedule's time), falling back to when it went."""
    if df.empty:
        return pd.Series([], dtype="int64")
    return df["intended_ns"].fillna(df["start_ns"]) if "intended_ns" in df else df["start_ns"]


def _lat(df: pd.DataFrame, col: str, q: float) -> float | None:
    return percentile(pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float), q)


def compute_cell(
    run: RunData, win: dict, slo: Slo | None, *, max_gap_s: float = 1.0
) -> CellMetrics:
    a, b = int(win["start_ns"]), int(win["end_ns"])
    dur = (b - a) / 1e9
    m = CellMetrics(
        run_id=str(win.get("run_id") or run.run_id),
        cell=str(win["cell"]),
        replicas=int(win["replicas"]),
        level=float(win["level"]),
        level_kind=str(win.get("level_kind") or "concurrency"),
        start_ns=a,
        end_ns=b,
        duration_s=dur,
    )
    if win.get("note"):
        m.notes.append(str(win["note"]))
    req = run.requests
    cell_req = req[req["cell"] == m.cell] if not req.empty else req
    sent = _sent_ns(cell_req)
    started = cell_req[(sent >= a) & (sent < b)]
    ok_started = started[started["error_class"].isna()]
    m.requests_started = int(len(started))
    m.requests_ok = int(len(ok_started))
    m.requests_failed = m.requests_started - m.requests_ok
    m.error_rate = (m.requests_failed / m.requests_started) if m.requests_started else None
    m.errors = {c: int(n) for c, n in started["error_class"].dropna().value_counts().items()}
    m.errors = {
        c: m.errors[c]
        for c in list(ERROR_CLASSES) + sorted(set(m.errors) - set(ERROR_CLASSES))
        if c in m.errors
    }

    ended = cell_req[(cell_req["end_ns"] >= a) & (cell_req["end_ns"] < b)]
    ended_ok = ended[ended["error_class"].isna()]
    m.requests_completed = int(len(ended_ok))
    if dur > 0:
        m.request_throughput_rps = m.requests_completed / dur
        m.goodput_rps = m.request_throughput_rps * _good_share(ok_started, slo)
        m.output_tokens = tokens_in_window(cell_req, a, b)
        m.output_tokens_per_s = m.output_tokens / dur
        mid = a + (b - a) // 2
        first, second = tokens_in_window(cell_req, a, mid), tokens_in_window(cell_req, mid, b)
        if first + second >= 100:
            m.steadiness = (second - first) / ((first + second) / 2)
            if abs(m.steadiness) > STEADY_TOLERANCE:
                m.notes.append(
                    f"output tokens/s changed by {m.steadiness:+.0%} between the halves of "
                    f"the measured window: not steady (a longer warm-up or window helps)"
                )
    if m.requests_started:
        m.good_fraction = float(good_mask(started, slo).sum()) / m.requests_started

    qs = sorted(set(REPORTED_PERCENTILES) | {bd.q for bd in bounds(slo)})
    for metric in ("ttft", "tpot", "e2e"):
        for q in qs:
            m.put(f"{metric}_{pct_name(q)}_s", _lat(ok_started, f"{metric}_s", q))
    itl = _itl_from_histograms(run.histograms.get(m.cell), qs)
    if itl is not None:
        m.itl_source = "hdr-histogram"
    else:
        m.itl_source = "request-summaries (estimate)" if m.requests_ok else ""
        itl = {
            pct_name(q): _lat(ok_started, "itl_p50_s" if q <= 50 else "itl_p99_s", q) for q in qs
        }
    for name, v in itl.items():
        m.put(f"itl_{name}_s", v)

    en = window_energy(
        run.gpu,
        a,
        b,
        counter_j=_f(win.get("energy_j")),
        counter_source=win.get("energy_source"),
        max_gap_s=max_gap_s,
    )
    m.energy_j, m.energy_source, m.energy_coverage = en.energy_j, en.source, en.coverage
    m.mean_power_w, m.gpu_util_pct, m.mem_used_bytes = (
        en.mean_power_w,
        en.gpu_util_pct,
        en.mem_used_bytes,
    )
    m.gpu_samples, m.energy_note = en.samples, en.note
    if m.energy_j is not None and m.output_tokens > 0:
        m.j_per_token = m.energy_j / m.output_tokens
        m.tokens_per_j = m.output_tokens / m.energy_j if m.energy_j > 0 else None
    elif m.energy_j is not None:
        m.tokens_per_j = 0.0
        m.notes.append("no output tokens in the window: J/token undefined")

    m.slo_ok, m.slo_failures = cell_verdict(_as_metrics(m), slo)
    m.per_replica = _per_replica(cell_req, started, a, b, slo, m.output_tokens)
    br = getattr(run.scenario.target, "breaker", None) if run.scenario is not None else None
    if br is None or br.enabled:      # off: the figures stay empty, not zero
        _breaker_figures(m, (run.histograms.get(m.cell) or {}).get("replicas"))
    return m


def _breaker_figures(m: CellMetrics, counted: dict | None) -> None:
    """The load generator's per-replica breaker counts of the measured window onto the cell's
    replicas (a replica skipped for the whole window, so without records, gets a row too)."""
    if not isinstance(counted, dict):
        return
    have = {r.replica: r for r in m.per_replica}
    for url, c in sorted(counted.items()):
        r = have.get(url)
        if r is None:
            r = ReplicaMetrics(url, 0, 0, 0, None, 0.0, 0.0, 0.0, None, None, None, None, None)
            m.per_replica.append(r)
        r.breaker_opened = int(c.get("breaker_opened") or 0)
        r.breaker_skipped = int(c.get("breaker_skipped") or 0)
    for r in m.per_replica:
        if r.breaker_opened is None:
            r.breaker_opened = r.breaker_skipped = 0
    m.breaker_opened = sum(r.breaker_opened for r in m.per_replica)
    m.breaker_skipped = sum(r.breaker_skipped for r in m.per_replica)


def _good_share(ok: pd.DataFrame, slo: Slo | None) -> float:
    """Share of successful requests that met every per-request bound (0 when there are none)."""
    return float(good_mask(ok, slo).sum()) / len(ok) if len(ok) else 0.0


def _f(x) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) else None


def _as_metrics(m: CellMetrics) -> dict:
    d = {k: v for k, v in asdict(m).items() if k not in ("per_replica",)}
    d.update(m.extra_percentiles)
    return d


def _per_replica(
    cell_req: pd.DataFrame,
    started: pd.DataFrame,
    a: int,
    b: int,
    slo: Slo | None,
    total_tokens: float,
) -> list[ReplicaMetrics]:
    dur = (b - a) / 1e9
    out = []
    for rep in sorted(set(cell_req["replica"].dropna().astype(str))):
        all_r = cell_req[cell_req["replica"] == rep]
        st = started[started["replica"] == rep]  # started: sent in the window (see _sent_ns)
        ok = st[st["error_class"].isna()]
        ended = all_r[(all_r["end_ns"] >= a) & (all_r["end_ns"] < b)]
        toks = tokens_in_window(all_r, a, b)
        out.append(
            ReplicaMetrics(
                replica=rep,
                requests_started=int(len(st)),
                requests_ok=int(len(ok)),
                requests_failed=int(len(st) - len(ok)),
                error_rate=(len(st) - len(ok)) / len(st) if len(st) else None,
                request_throughput_rps=float(ended["error_class"].isna().sum()) / dur
                if dur > 0
                else 0.0,
                goodput_rps=(
                    float(ended["error_class"].isna().sum()) / dur * _good_share(ok, slo)
                    if dur > 0
                    else 0.0
                ),
                output_tokens_per_s=toks / dur if dur > 0 else 0.0,
                token_share=toks / total_tokens if total_tokens > 0 else None,
                ttft_p50_s=_lat(ok, "ttft_s", 50),
                ttft_p99_s=_lat(ok, "ttft_s", 99),
                tpot_p50_s=_lat(ok, "tpot_s", 50),
                e2e_p99_s=_lat(ok, "e2e_s", 99),
            )
        )
    return out


def compute_cells(
    run: RunData, slo: Slo | None = None, *, max_gap_s: float | None = None
) -> list[CellMetrics]:
    """Metrics of every cell that has a measured window, ordered by replicas then level."""
    if slo is None and run.scenario is not None:
        slo = run.scenario.slo
    if max_gap_s is None:
        rate = run.scenario.telemetry.rate_hz if run.scenario is not None else 20.0
        max_gap_s = max(1.0, 3.0 / rate)
    cells = [compute_cell(run, w, slo, max_gap_s=max_gap_s) for w in _measure_windows(run).values()]
    cells.sort(key=lambda c: (c.replicas, c.level, c.cell))
    return cells
