"""Turns finished streams into records, histograms, error counts and Locust request events.

Runs once per request (never per token). A generator process either owns the run directory
(local mode: records go straight to it) or forwards: it accumulates a *delta* that
:meth:`Collector.export` hands to the master through Locust's message channel, and the master's
collector :meth:`absorb` s it, so histograms and counts add up exactly across workers.
"""

from __future__ import annotations

import os
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from time import perf_counter_ns
from typing import Callable


from harness.loadgen.hist import HistSet
from harness.loadgen.stream import StreamResult
from harness.protocols.base import RequestSpec
from harness.records.schema import ERROR_CLASSES, RequestRecord


class RequestFailed(Exception):
    """Carried in Locust's request event so its failure table groups by error class."""


@dataclass
class PhaseStats:
    """Counts and histograms of one (cell, phase)."""

    requests: int = 0
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    output_tokens: int = 0
    input_tokens: int = 0
    first_start_ns: int | None = None
    last_end_ns: int | None = None
    window_tokens: float = 0.0   # (measure) output tokens that arrived inside the measured window
    # reader health: read passes whose oldest data had waited >= 5 ms in the kernel, and the
    # longest such wait, credited to the next request accounted (see Reactor.take_late)
    reader_late: int = 0
    reader_lag_max_ns: int = 0
    # the generating thread's scheduler clock over this phase (summed over processes): time on a
    # CPU, time runnable but waiting for one (a starved generator), and the wall time they cover
    gen_cpu_ns: int = 0
    gen_wait_ns: int = 0
    gen_wall_ns: int = 0
    held: int = 0                # open loop: requests that waited for load.max_in_flight
    hist: HistSet = field(default_factory=HistSet)
    # per replica URL: [requests, failed requests, breaker openings, requests sent elsewhere
    # while its breaker was open] (balancing under faults)
    replicas: dict[str, list[int]] = field(default_factory=dict)

    def count_replica(self, url: str, error_class: str | None, tripped: bool) -> None:
        c = self.replicas.get(url)
        if c is None:
            c = self.replicas[url] = [0, 0, 0, 0]
        c[0] += 1
        c[1] += error_class is not None
        c[2] += tripped

    def count_skipped(self, urls) -> None:
        for u in urls:
            c = self.replicas.get(u)
            if c is None:
                c = self.replicas[u] = [0, 0, 0, 0]
            c[3] += 1

    def replica_summary(self) -> dict[str, dict]:
        return {u: {"requests": c[0], "errors": c[1], "breaker_opened": c[2],
                    "breaker_skipped": c[3] if len(c) > 3 else 0}
                for u, c in sorted(self.replicas.items())}

    def generator(self) -> dict:
        """The load generator's health over this phase, as analysis reads it (JSON-ready)."""
        wall = self.gen_wall_ns
        return {"late_read_passes": self.reader_late, "reader_lag_max_ms": self.reader_lag_max_ns / 1e6,
                "cpu_share": self.gen_cpu_ns / wall if wall else None,
                "wait_share": self.gen_wait_ns / wall if wall else None,
                "sched_wall_s": wall / 1e9, "held_back": self.held}

    def to_wire(self) -> dict:
        return {"requests": self.requests, "ok": self.ok, "errors": dict(self.errors),
                "output_tokens": self.output_tokens, "input_tokens": self.input_tokens,
                "first_start_ns": self.first_start_ns, "last_end_ns": self.last_end_ns,
                "window_tokens": self.window_tokens, "reader_late": self.reader_late,
                "reader_lag_max_ns": self.reader_lag_max_ns, "gen_cpu_ns": self.gen_cpu_ns,
                "gen_wait_ns": self.gen_wait_ns, "gen_wall_ns": self.gen_wall_ns, "held": self.held,
                "hist": self.hist.encode(), "replicas": {u: list(c) for u, c in self.replicas.items()}}

    def absorb(self, d: dict) -> None:
        self.requests += d["requests"]
        self.ok += d["ok"]
        for k, v in d["errors"].items():
            self.errors[k] = self.errors.get(k, 0) + v
        self.output_tokens += d["output_tokens"]
        self.input_tokens += d["input_tokens"]
        self.window_tokens += d.get("window_tokens", 0.0)
        self.reader_late += d.get("reader_late", 0)
        self.reader_lag_max_ns = max(self.reader_lag_max_ns, d.get("reader_lag_max_ns", 0))
        self.gen_cpu_ns += d.get("gen_cpu_ns", 0)
        self.gen_wait_ns += d.get("gen_wait_ns", 0)
        self.gen_wall_ns += d.get("gen_wall_ns", 0)
        self.held += d.get("held", 0)
        if d["first_start_ns"] is not None:
            self.first_start_ns = min(self.first_start_ns or d["first_start_ns"], d["first_start_ns"])
        if d["last_end_ns"] is not None:
            self.last_end_ns = max(self.last_end_ns or 0, d["last_end_ns"])
        self.hist.merge_encoded(d["hist"])
        for u, c in (d.get("replicas") or {}).items():
            mine = self.replicas.setdefault(u, [0, 0, 0, 0])
            for i, v in enumerate(c[:4]):
                mine[i] += v

    def error_rate(self) -> float:
        return (self.requests - self.ok) / self.requests if self.requests else 0.0


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(slots=True)
class CellInfo:
    run_id: str
    cell: str
    replicas: int
    level: float
    phase: str


class SchedClock:
    """The calling thread's scheduler clock (``/proc/thread-self/schedstat``: ns on a CPU, ns
    runnable but waiting in a run queue), read at most every ``every_ns``: ``take()`` returns
    (cpu, wait, wall) ns since the last reading, or None. A generator whose thread waits for a
    CPU sends late and reads late whatever its own code does; this tells that apart from a
    generator that is merely busy. Other systems: always None."""

    def __init__(self, every_ns: int = 50_000_000):
        self.every_ns = every_ns
        self._fd: int | None = None
        self._last: tuple[int, int, int] | None = None
        self._off = False

    def _read(self) -> tuple[int, int, int] | None:
        if self._fd is None:
            try:
                self._fd = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
            except OSError:
                self._off = True
                return None
        try:
            cpu, wait = os.pread(self._fd, 128, 0).split()[:2]
            return int(cpu), int(wait), perf_counter_ns()
        except (OSError, ValueError):
            self._off = True
            return None

    def take(self) -> tuple[int, int, int] | None:
        if self._off:
            return None
        last = self._last
        if last is not None and perf_counter_ns() - last[2] < self.every_ns:
            return None
        now = self._read()
        if now is None:
            return None
        self._last = now
        if last is None:
            return None
        return now[0] - last[0], now[1] - last[1], now[2] - last[2]


class Collector:
    """Per-process sink for finished requests; see the module docstring for the two modes."""

    def __init__(self, *, record_sink: Callable[[dict], None] | None = None, events=None,
                 protocol: str = "tgi", path: str = "", forward: bool = False):
        self.stats: dict[tuple[str, str], PhaseStats] = {}
        self.record_sink = record_sink
        self.forward = forward
        self._outbox: list[dict] = []
        self.events = events
        self.protocol = protocol
        self.path = path or protocol
        self.worker = worker_name()
        self.inflight = 0
        self.wall_offset_ns = time.time_ns() - perf_counter_ns()
        self.recent: deque[tuple[int, int]] = deque()   # (end_ns, output tokens), last 10 s
        self.current_cell: str | None = None
        # () -> (late read passes, longest wait ns) since the last call: the stream reader's health
        self.reader_health: Callable[[], tuple[int, int]] | None = None
        self.sched = SchedClock()

    # ------------------------------------------------------------------------------------------
    def phase_stats(self, cell: str, phase: str) -> PhaseStats:
        key = (cell, phase)
        st = self.stats.get(key)
        if st is None:
            st = self.stats[key] = PhaseStats()
        return st

    def add(self, res: StreamResult, spec: RequestSpec, info: CellInfo, intended_pc: int,
            window_pc: tuple[int, int] | None = None) -> RequestRecord:
        """Account one finished request; returns its record.

        ``window_pc`` is the cell's measured window on this process's perf clock: the request's
        tokens that arrived inside it (spread evenly from first to last token) are credited to the
        window, so closed-loop waves of requests do not quantise throughput.
        """
        off = self.wall_offset_ns
        start_ns = res.start_pc + off
        intended_ns = intended_pc + off
        end_ns = res.end_pc + off
        rec = RequestRecord(
            run_id=info.run_id, cell=info.cell, replicas=info.replicas, level=info.level,
            phase=info.phase, replica=res.replica, worker=self.worker, request_id=spec.request_id,
            intended_ns=intended_ns, start_ns=start_ns, end_ns=end_ns,
            input_tokens=res.input_tokens if res.input_tokens is not None else spec.input_tokens,
            output_tokens=res.output_tokens, finish_reason=res.finish_reason, status=res.status,
            error_class=res.error_class, error=res.error, protocol=self.protocol,
            session=spec.session, turn=spec.turn)
        st = self.phase_stats(info.cell, info.phase)
        st.requests += 1
        if self.reader_health is not None:
            late, lag = self.reader_health()
            if late:
                st.reader_late += late
                st.reader_lag_max_ns = max(st.reader_lag_max_ns, lag)
        tick = self.sched.take()
        if tick is not None:
            st.gen_cpu_ns += tick[0]
            st.gen_wait_ns += tick[1]
            st.gen_wall_ns += tick[2]
        st.first_start_ns = intended_ns if st.first_start_ns is None else min(st.first_start_ns, intended_ns)
        st.last_end_ns = end_ns if st.last_end_ns is None else max(st.last_end_ns, end_ns)
        st.input_tokens += rec.input_tokens or 0
        st.output_tokens += res.output_tokens
        e2e_ns = res.end_pc - intended_pc
        rec.e2e_s = e2e_ns / 1e9
        if res.first_pc is not None:
            rec.first_token_ns = res.first_pc + off
            ttft_ns = res.first_pc - intended_pc
            rec.ttft_s = ttft_ns / 1e9
            h = st.hist
            if res.error_class is None:
                h.record("ttft", ttft_ns // 1000)
            itl = res.itl_ns
            if itl:
                # plain Python: for ~100 values numpy's per-call overhead costs more than it saves
                n = len(itl)
                s = sorted(itl)
                rec.itl_mean_s = sum(s) / n / 1e9
                rec.itl_p50_s = s[n // 2] / 1e9
                rec.itl_p99_s = s[min(n - 1, (n * 99) // 100)] / 1e9
                rec.itl_max_s = s[-1] / 1e9
                if res.error_class is None:
                    h.record_many("itl", [x // 1000 for x in s])
            if res.output_tokens > 1 and res.end_pc > res.first_pc:
                rec.tpot_s = (res.end_pc - res.first_pc) / (res.output_tokens - 1) / 1e9
                if res.error_class is None:
                    h.record("tpot", int(rec.tpot_s * 1e6))
        if window_pc is not None and res.first_pc is not None and res.output_tokens:
            ws, we = window_pc
            first, last, n = res.first_pc, res.end_pc, res.output_tokens
            credit = 1.0 if ws <= first < we else 0.0
            if n > 1 and last > first:
                lo, hi = max(first, ws), min(last, we)
                if hi > lo:
                    credit += (n - 1) * (hi - lo) / (last - first)
            elif n > 1 and ws <= first < we:
                credit = float(n)
            if credit:
                self.phase_stats(info.cell, "measure").window_tokens += credit
        if res.error_class is None:
            st.ok += 1
            st.hist.record("e2e", e2e_ns // 1000)
        else:
            cls = res.error_class if res.error_class in ERROR_CLASSES else "other"
            st.errors[cls] = st.errors.get(cls, 0) + 1
        self._recent(end_ns, res.output_tokens)
        self.current_cell = info.cell
        self._fire(rec)
        d = rec.to_dict()
        if self.forward:
            self._outbox.append(d)
        elif self.record_sink is not None:
            self.record_sink(d)
        return rec

    def _recent(self, end_ns: int, tokens: int) -> None:
        q = self.recent
        q.append((end_ns, tokens))
        cutoff = end_ns - 10_000_000_000
        while q and q[0][0] < cutoff:
            q.popleft()

    def _fire(self, rec: RequestRecord) -> None:
        if self.events is None:
            return
        fire = self.events.request.fire
        exc = None if rec.error_class is None else RequestFailed(f"{rec.error_class}: {rec.error}")
        # One Locust request per HTTP request, so Locust's counts and RPS stay true; TTFT, ITL and
        # tokens/s live in the LLM tab and the run directory.
        fire(request_type="POST", name=self.path, response_time=(rec.e2e_s or 0.0) * 1000.0,
             response_length=rec.output_tokens, exception=exc, context={"replica": rec.replica})

    # ------------------------------------------------------------------------------------------
    def export(self) -> dict:
        """The delta since the last export (forward mode), then forget it."""
        payload = {"stats": [[c, p, st.to_wire()] for (c, p), st in self.stats.items()
                             if st.requests or st.window_tokens],
                   "records": self._outbox, "inflight": self.inflight, "worker": self.worker,
                   "current_cell": self.current_cell}
        self.stats = {}
        self._outbox = []
        return payload

    def absorb(self, payload: dict) -> None:
        """Merge a worker's delta; its records go to this collector's sink."""
        for cell, phase, wire in payload.get("stats", ()):
            self.phase_stats(cell, phase).absorb(wire)
        sink = self.record_sink
        for d in payload.get("records", ()):
            if sink is not None:
                sink(d)
            if d.get("end_ns"):
                self._recent(d["end_ns"], d.get("output_tokens") or 0)
        if payload.get("current_cell"):
            self.current_cell = payload["current_cell"]

    # ------------------------------------------------------------------------------------------
    def cell_stats(self, cell: str, phases=("measure",)) -> PhaseStats:
        """Merged stats of ``cell`` over ``phases`` (a fresh object)."""
        out = PhaseStats()
        for (c, p), st in self.stats.items():
            if c == cell and p in phases:
                out.absorb(st.to_wire())
        return out

    def tokens_per_s(self, window_s: float = 10.0) -> float:
        q = self.recent
        if not q:
            return 0.0
        now = time.time_ns()
        cutoff = now - int(window_s * 1e9)
        toks = sum(t for e, t in q if e >= cutoff)
        return toks / window_s
