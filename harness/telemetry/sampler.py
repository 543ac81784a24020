"""The GPU sampler: a thread that reads every selected GPU on absolute deadlines.

``start()`` / ``stop()``; ``begin_window(name)`` / ``end_window(name)`` give a window's energy
(hardware counter at both edges where there is one, else the trapezoid integral of power, the
source named); ``add_listener(fn)`` hands every tick's samples to a callback (the Locust web UI
tab shows latest power). Timestamps are ``time.time_ns()``, the request records' clock.

It runs the same under plain threads and under gevent's monkey-patching (Locust): it is one
thread (a greenlet once patched) that sleeps to absolute deadlines, and NVML calls are short.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Callable

from harness.records.schema import GpuSample
from harness.telemetry.energy import PowerIntegral
from harness.telemetry.records import GpuGap, GpuProcessSample, WindowEnergy
from harness.telemetry.schedule import Ticker
from harness.telemetry.sinks import Sink
from harness.telemetry.source import GpuSource, SourceError

log = logging.getLogger(__name__)

Listener = Callable[[list[GpuSample]], None]


def off_loop(fn, *args):
    """``fn(*args)`` in gevent's thread pool when this thread runs a gevent hub (the load
    generator's process), else directly. An NVML call blocks in C for microseconds to several
    milliseconds (the energy counter ~3-4 ms, process lists more); made from a greenlet it holds
    every stream's read for that long. From a pool thread it releases the interpreter and the
    reader goes on."""
    try:
        from gevent import get_hub
        from gevent.monkey import is_module_patched
    except ImportError:
        return fn(*args)
    owner = getattr(fn, "__self__", None)
    if not is_module_patched("threading") or not getattr(owner, "blocking_calls", False):
        return fn(*args)   # e.g. the emulated source: a cooperative HTTP read, not a C call
    return get_hub().threadpool.apply(fn, args)


def total_power(batch: list[GpuSample]) -> tuple[float | None, int, str]:
    """(watts summed over the tick's GPUs, its time, the source) for a live display: a listener
    for the Locust web UI's tab is ``lambda b: report_power(env, *total_power(b))``."""
    ws = [s.power_w for s in batch if s.power_w is not None]
    return (sum(ws) if ws else None), batch[0].ts_ns, batch[0].source


class _Edge:
    __slots__ = ("ts_ns", "counter_j", "integral_j", "samples", "gaps")

    def __init__(self, ts_ns, counter_j, integral_j, samples, gaps):
        self.ts_ns, self.counter_j, self.integral_j = ts_ns, counter_j, integral_j
        self.samples, self.gaps = samples, gaps


class Sampler:
    def __init__(self, source: GpuSource, sinks: list[Sink] | None = None, *, rate_hz: float = 20.0,
                 run_id: str = "", host: str | None = None, process_interval_s: float = 1.0,
                 deliver_interval_s: float = 0.25, detail_hz: float = 20.0):
        if not 0 < rate_hz <= 100:
            raise ValueError(f"telemetry rate_hz must be in (0, 100], got {rate_hz}")
        self.source = source
        self.sinks = list(sinks or [])
        self.rate_hz = rate_hz
        self.run_id = run_id
        self.host = host if host is not None else socket.gethostname()
        self.process_interval_ns = int(process_interval_s * 1e9)
        # sinks get samples in batches (fewer, larger writes: at 100 Hz the per-wake work is
        # what costs CPU); listeners still see every tick
        self.deliver_interval_ns = int(deliver_interval_s * 1e9)
        # power every tick; utilisation, clocks, memory, temperature and throttle reasons (NVML
        # averages or slow-moving values) on every k-th tick, at most detail_hz
        self.detail_every = max(1, round(rate_hz / detail_hz)) if detail_hz else 1
        self._pending: list[GpuSample] = []
        self._last_deliver_ns = 0
        self._listeners: list[Listener] = []
        self._integrals = {g: PowerIntegral() for g in source.gpus}
        self._latest: dict[int, GpuSample] = {}
        self._open_gaps: dict[int, GpuGap] = {}
        self._windows: dict[str, dict[int, _Edge]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ticker: Ticker | None = None
        self.counts = {"ticks": 0, "samples": 0, "read_errors": 0, "sink_errors": 0,
                       "listener_errors": 0, "gaps": 0}
        self._sink_failed: set[int] = set()
        self._sample_cpu_ns = 0
        self._started_ns = 0
        self._stopped_ns = 0

    # -- life cycle -------------------------------------------------------------------------
    def start(self) -> "Sampler":
        if self._thread is not None:
            raise RuntimeError("sampler already started")
        self._stop.clear()
        self._started_ns = time.time_ns()
        self._ticker = Ticker(self.rate_hz)
        self._thread = threading.Thread(target=self._run, name="gpu-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> dict:
        """Stop sampling, close open gaps, close the sinks; returns the summary."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        self._stopped_ns = time.time_ns()
        self._deliver()
        for g in list(self._open_gaps):
            self._close_gap(g, self._stopped_ns)
        summary = self.summary()
        for i, s in enumerate(self.sinks):
            self._call_sink(i, s.close, summary)
        return summary

    def __enter__(self) -> "Sampler":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def add_listener(self, fn: Listener) -> None:
        """Called with each tick's samples, in the sampler's thread; keep it short."""
        self._listeners.append(fn)

    def remove_listener(self, fn: Listener) -> None:
        if fn in self._listeners:
            self._listeners.remove(fn)

    def latest(self) -> dict[int, GpuSample]:
        return dict(self._latest)

    # -- the loop ---------------------------------------------------------------------------
    def _run(self) -> None:
        ticker = self._ticker
        last_procs = 0
        while not self._stop.is_set():
            deadline = ticker.next_deadline()
            # plain sleep (cheaper per wake than Event.wait), in slices so stop() is prompt
            while (wait_ns := deadline - time.perf_counter_ns()) > 0 and not self._stop.is_set():
                time.sleep(min(wait_ns, 100_000_000) / 1e9)
            if self._stop.is_set():
                break
            ticker.woke(deadline)
            c0 = time.thread_time_ns()
            self._tick()
            now = time.time_ns()
            if self.process_interval_ns and now - last_procs >= self.process_interval_ns:
                last_procs = now
                self._read_processes()
            self._sample_cpu_ns += time.thread_time_ns() - c0

    def _tick(self) -> None:
        self.counts["ticks"] += 1
        detail = (self.counts["ticks"] - 1) % self.detail_every == 0
        batch: list[GpuSample] = []
        for g in self.source.gpus:
            try:
                s = off_loop(self.source.read, g, detail)
            except SourceError as e:
                self._read_failed(g, str(e))
                continue
            except Exception as e:  # noqa: BLE001 - an unknown failure is still a gap, not a crash
                self._read_failed(g, f"{type(e).__name__}: {e}")
                continue
            s.run_id = self.run_id
            s.host = self.host
            if g in self._open_gaps:
                self._close_gap(g, s.ts_ns)
            if s.power_w is not None:
                self._integrals[g].add(s.ts_ns, s.power_w)
            self._latest[g] = s
            batch.append(s)
        if not batch:
            return
        self.counts["samples"] += len(batch)
        self._pending += batch
        if batch[0].ts_ns - self._last_deliver_ns >= self.deliver_interval_ns:
            self._deliver()
        for fn in list(self._listeners):
            try:
                fn(batch)
            except Exception:  # noqa: BLE001
                self.counts["listener_errors"] += 1

    def _deliver(self) -> None:
        pending, self._pending = self._pending, []
        self._last_deliver_ns = time.time_ns()
        if pending:
            for i, sink in enumerate(self.sinks):
                self._call_sink(i, sink.samples, pending)

    def _read_processes(self) -> None:
        ts = time.time_ns()
        batch = []
        for g in self.source.gpus:
            if g in self._open_gaps:
                continue
            try:
                procs = off_loop(self.source.processes, g)
            except Exception:  # noqa: BLE001 - per-process memory is a nicety; the gap logic covers the GPU
                continue
            batch += [GpuProcessSample(ts_ns=ts, gpu=g, pid=pid, used_bytes=used, host=self.host,
                                       run_id=self.run_id) for pid, used in procs]
        if batch:
            for i, sink in enumerate(self.sinks):
                self._call_sink(i, sink.processes, batch)

    def _read_failed(self, gpu: int, err: str) -> None:
        self.counts["read_errors"] += 1
        gap = self._open_gaps.get(gpu)
        if gap is None:
            self._open_gaps[gpu] = GpuGap(gpu=gpu, start_ns=time.time_ns(), end_ns=0, errors=1,
                                          error=err, host=self.host, run_id=self.run_id)
            self._integrals[gpu].gap()
            log.warning("telemetry: GPU %d read failed (%s); recording a gap, sampling goes on",
                        gpu, err)
        else:
            gap.errors += 1

    def _close_gap(self, gpu: int, end_ns: int) -> None:
        gap = self._open_gaps.pop(gpu)
        gap.end_ns = end_ns
        self.counts["gaps"] += 1
        log.warning("telemetry: GPU %d back after a %.3f s gap (%d failed reads)", gpu,
                    gap.duration_s, gap.errors)
        for i, sink in enumerate(self.sinks):
            self._call_sink(i, sink.gap, gap)

    def _call_sink(self, i: int, fn, arg) -> None:
        try:
            fn(arg)
        except Exception as e:  # noqa: BLE001 - a broken sink must not stop the others
            self.counts["sink_errors"] += 1
            if i not in self._sink_failed:
                self._sink_failed.add(i)
                log.error("telemetry: sink %s failed (%s: %s); counting further failures",
                          type(self.sinks[i]).__name__, type(e).__name__, e)

    # -- energy windows ---------------------------------------------------------------------
    def _edge(self, ts_ns: int | None) -> dict[int, _Edge]:
        edges = {}
        for g in self.source.gpus:
            counter = None
            if self.source.counter_source(g) is not None and g not in self._open_gaps:
                try:
                    t0 = time.time_ns()
                    counter = off_loop(self.source.read_energy_j, g)
                    stamp = (t0 + time.time_ns()) // 2
                except SourceError:
                    counter, stamp = None, time.time_ns()
            else:
                stamp = time.time_ns()
            if g not in self._open_gaps:
                try:  # a fresh power reading pins the integral at the edge (cheap: microseconds)
                    s = self.source.read(g, False)
                    if s.power_w is not None:
                        self._integrals[g].add(s.ts_ns, s.power_w)
                except Exception:  # noqa: BLE001 - the sampler's own tick will record the failure
                    pass
            ts = stamp if ts_ns is None else ts_ns
            integral, n = self._integrals[g].at(ts)
            edges[g] = _Edge(ts, counter, integral, n, self._integrals[g].gaps + (g in self._open_gaps))
        return edges

    def begin_window(self, name: str, ts_ns: int | None = None) -> int:
        """Mark a window's start (reads the energy counter: ~4 ms per GPU on NVML)."""
        edges = self._edge(ts_ns)
        self._windows[name] = edges
        return min(e.ts_ns for e in edges.values()) if edges else (ts_ns or time.time_ns())

    def end_window(self, name: str, ts_ns: int | None = None) -> WindowEnergy:
        """Close a window and give its energy; the window is forgotten afterwards."""
        begin = self._windows.pop(name)
        end = self._edge(ts_ns)
        per_gpu: dict[int, tuple[float | None, str | None]] = {}
        samples = 0
        for g, b in begin.items():
            e = end[g]
            samples += e.samples - b.samples
            if b.counter_j is not None and e.counter_j is not None and e.counter_j >= b.counter_j:
                per_gpu[g] = (e.counter_j - b.counter_j, self.source.counter_source(g))
            elif (b.integral_j is not None and e.integral_j is not None and e.samples > b.samples
                  and e.gaps == b.gaps):   # a gap inside: no guess; analysis integrates with coverage
                per_gpu[g] = (e.integral_j - b.integral_j, "integral:" + self.source.power_source(g))
            else:
                per_gpu[g] = (None, None)
        integrals = [end[g].integral_j - b.integral_j for g, b in begin.items()
                     if b.integral_j is not None and end[g].integral_j is not None
                     and end[g].gaps == b.gaps]
        known = [v for v, _ in per_gpu.values() if v is not None]
        sources = sorted({s for _, s in per_gpu.values() if s})
        total = sum(known) if known and len(known) == len(per_gpu) else None
        start = min((b.ts_ns for b in begin.values()), default=ts_ns or 0)
        stop = max((e.ts_ns for e in end.values()), default=ts_ns or 0)
        return WindowEnergy(name=name, start_ns=start, end_ns=stop, energy_j=total,
                            source="+".join(sources) if total is not None else None,
                            per_gpu=per_gpu, samples=samples,
                            integral_j=sum(integrals) if len(integrals) == len(begin) else None)

    # -- reporting --------------------------------------------------------------------------
    def summary(self) -> dict:
        wall_s = ((self._stopped_ns or time.time_ns()) - self._started_ns) / 1e9 if self._started_ns else 0.0
        t = self._ticker
        return {
            "rate_hz": self.rate_hz,
            "source": self.source.describe(),
            "counts": dict(self.counts),
            "missed_ticks": t.missed if t else 0,
            "lateness_us": t.jitter_us() if t else {},
            "cpu_s": self._sample_cpu_ns / 1e9,
            "wall_s": wall_s,
            "power_resolution_note": "NVML power values change about every 100 ms; finer "
                                     "sampling repeats values" if self.source.refresh_period_s else
                                     "modeled power",
        }
