"""Telemetry and store speed: sampler CPU cost and schedule jitter, store write rate.

    PYTHONPATH=. python benchmarks/telemetry.py            # ~1.5 minutes
    PYTHONPATH=. python benchmarks/telemetry.py --quick    # shorter runs

Prints one table. Targets: sampler under 2% of one core at 100 Hz; 50,000 points/s
into the local InfluxDB with batching and no loss (verified by counting them back with InfluxQL).
Without an NVIDIA GPU the sampler reads the fake NVML binding (harness.telemetry.fakenvml), and
the table says so: its per-call cost is Python's, not the driver's.
Start the servers it needs (influxd, victoria-metrics) from the Debian packages, on free ports.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GEVENT_CHILD = """
from gevent import monkey; monkey.patch_all()
import json, sys, time, gevent
sys.path.insert(0, {root!r})
sys.argv = ['telemetry.py', '--child-sampler', '{rate}', '{secs}', '{fake}']
import runpy; runpy.run_path({path!r}, run_name='__main__')
"""


class NullSource:
    """A source whose reads cost nothing: isolates the sampler's own cost from the binding's."""

    gpus = [0]
    refresh_period_s = 0.1

    def __init__(self):
        from harness.records.schema import GpuSample

        self._s = GpuSample(ts_ns=0, gpu=0, source="null", power_w=100.0)

    def power_source(self, gpu):
        return "null"

    def counter_source(self, gpu):
        return None

    def read(self, gpu, detail=True):
        from dataclasses import replace

        return replace(self._s, ts_ns=time.time_ns())

    def processes(self, gpu):
        return []

    def describe(self):
        return {"kind": "null"}

    def close(self):
        pass


def open_sampler_source(force_fake: bool):
    from harness.telemetry.select import open_source

    if force_fake == "null":
        return NullSource(), "null source"
    if not force_fake:
        sel = open_source("nvml", warn=False)
        if sel.source is not None:
            return sel.source, "nvml"
    from harness.telemetry.fakenvml import FakeGpu, FakeNvml
    from harness.telemetry.nvml import NvmlSource

    return NvmlSource(binding=FakeNvml([FakeGpu(processes=[(1, 1 << 30)])], counter_cost_s=0)), "fake NVML"


def sampler_run(rate: float, secs: float, force_fake: bool, with_sinks: bool = True) -> dict:
    """Sampler (with the run-dir sink, as in a run) for ``secs``; process CPU over wall time."""
    from harness.records.rundir import RunDir
    from harness.telemetry.sampler import Sampler
    from harness.telemetry.sinks import RunDirSink

    src, kind = open_sampler_source(force_fake)
    with tempfile.TemporaryDirectory() as d:
        rd = RunDir(Path(d) / "run", "bench")
        s = Sampler(src, [RunDirSink(rd)] if with_sinks else [], rate_hz=rate, run_id="bench")
        s.start()
        time.sleep(0.5)   # thread start and first row group out of the measurement
        cpu0, t0 = time.process_time(), time.perf_counter()
        time.sleep(secs)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
        summary = s.stop()
        rd.close()
    src.close()
    return {"kind": kind, "rate": rate, "cpu_pct": 100 * cpu / wall,
            "sampler_thread_cpu_pct": 100 * summary["cpu_s"] / summary["wall_s"],
            "samples": summary["counts"]["samples"], "missed": summary["missed_ticks"],
            "p50_us": summary["lateness_us"]["p50"], "p99_us": summary["lateness_us"]["p99"]}


def sampler_under_gevent(rate: float, secs: float, force_fake: bool) -> dict:
    code = GEVENT_CHILD.format(root=str(ROOT), rate=rate, secs=secs, fake=int(force_fake),
                               path=str(Path(__file__).resolve()))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def bare_wake_cost(rate: float, secs: float) -> float:
    """CPU of a loop that only wakes at ``rate`` on absolute deadlines: this machine's floor."""
    c0, t0 = time.process_time(), time.perf_counter()
    nxt = t0
    while time.perf_counter() - t0 < secs:
        nxt += 1 / rate
        d = nxt - time.perf_counter()
        if d > 0:
            time.sleep(d)
    return 100 * (time.process_time() - c0) / (time.perf_counter() - t0)


def store_run(kind: str, points: int, offered_rate: float | None, batch: int) -> dict:
    """Write ``points`` GPU-sample points (encoding included) through InfluxWriter; count back."""
    from harness.records.schema import GpuSample
    from harness.store import InfluxQLReader, InfluxTarget, InfluxWriter, VictoriaMetricsReader
    from tests.support.servers import InfluxServer, VictoriaMetricsServer

    with tempfile.TemporaryDirectory() as d:
        srv = (InfluxServer if kind == "v1" else VictoriaMetricsServer)(Path(d) / "db").start()
        try:
            if kind == "v1":
                target = InfluxTarget(url=srv.url, api="v1", database="bench")
            else:
                target = InfluxTarget(url=srv.url, api="v2", bucket="bench")
            w = InfluxWriter(target, Path(d) / "spool", batch_size=batch, create_db=kind == "v1")
            t0ns = time.time_ns() - 3600 * 10**9
            chunk = 500
            made = [GpuSample(ts_ns=t0ns + i * 1000, gpu=i % 8, source="nvml-instant",
                              power_w=100.0 + i % 300, gpu_util_pct=50.0, sm_clock_mhz=1980.0,
                              mem_used_bytes=1 << 30, temperature_c=40.0, run_id="bench",
                              host="h") for i in range(points)]
            cpu0, t0 = time.process_time(), time.perf_counter()
            for k, i in enumerate(range(0, points, chunk)):
                w.write_gpu_samples(made[i:i + chunk])
                if offered_rate:
                    due = t0 + (k + 1) * chunk / offered_rate
                    delay = due - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
            submit_s = time.perf_counter() - t0
            w.flush(timeout_s=300)
            total_s = time.perf_counter() - t0
            cpu = time.process_time() - cpu0
            st = w.close()
            if kind == "v1":
                n = InfluxQLReader(target).count("gpu", "power_w", "run_id='bench'")
            else:
                vm = VictoriaMetricsReader(srv.url)
                vm.force_flush()
                n = len(vm.export('{__name__="gpu_power_w",run_id="bench"}'))
        finally:
            srv.kill()
    return {"kind": kind, "points": points, "offered": offered_rate, "rate": points / total_s,
            "submit_rate": points / submit_s, "drain_s": total_s - submit_s, "counted": n,
            "acked": st["acked"], "spooled": st["spooled"], "writer_cpu_pct": 100 * cpu / total_s}


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child-sampler":
        rate, secs, fake = float(sys.argv[2]), float(sys.argv[3]), bool(int(sys.argv[4]))
        print(json.dumps(sampler_run(rate, secs, fake, with_sinks=False)))
        return 0
    ap = argparse.ArgumentParser(description="telemetry + store benchmark")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--fake", action="store_true", help="use the fake NVML even where a GPU exists")
    ap.add_argument("--points", type=int, default=None)
    a = ap.parse_args()
    secs = 5.0 if a.quick else 15.0
    points = a.points or (300_000 if a.quick else 1_000_000)

    rows = [("calibration: a bare 100 Hz wake-up loop, no work",
             f"CPU {bare_wake_cost(100.0, min(secs, 5.0)):.2f}% of a core",
             "what waking 100 times a second costs on this machine", "")]
    for rate in (20.0, 100.0):
        r = sampler_run(rate, secs, a.fake)
        rows.append((f"sampler {rate:g} Hz ({r['kind']}), threads + run-dir sink",
                     f"CPU {r['cpu_pct']:.2f}% of a core (sampler thread {r['sampler_thread_cpu_pct']:.2f}%)",
                     f"lateness p50 {r['p50_us']:.0f} us, p99 {r['p99_us']:.0f} us; "
                     f"{r['samples']} samples, {r['missed']} missed ticks",
                     "target < 2% at 100 Hz" if rate == 100 else ""))
    r = sampler_run(100.0, secs, "null")
    rows.append(("sampler 100 Hz (zero-cost source), threads + run-dir sink",
                 f"CPU {r['cpu_pct']:.2f}% of a core (sampler thread {r['sampler_thread_cpu_pct']:.2f}%)",
                 "the sampler's own share: schedule, sample record, run-dir sink", ""))
    g = sampler_under_gevent(100.0, secs, a.fake)
    rows.append((f"sampler 100 Hz ({g['kind']}), under gevent, no sinks",
                 f"CPU {g['cpu_pct']:.2f}% of a core",
                 f"lateness p50 {g['p50_us']:.0f} us, p99 {g['p99_us']:.0f} us; {g['samples']} samples",
                 ""))
    for kind, offered in (("v1", None), ("v1", 50_000.0), ("v2", None)):
        s = store_run(kind, points, offered, batch=5000)
        label = ("InfluxDB 1.6.7 /write" if kind == "v1" else "VictoriaMetrics /api/v2/write (influxdb-client)")
        lost = s["points"] - s["counted"]
        rows.append((f"store {label}, {'paced at %d/s' % offered if offered else 'flat out'}",
                     f"{s['rate']:,.0f} points/s end to end (submit {s['submit_rate']:,.0f}/s)",
                     f"{s['points']:,} written, {s['counted']:,} counted back, lost {lost}; "
                     f"spooled {s['spooled']}; writer process CPU {s['writer_cpu_pct']:.0f}%",
                     "target 50,000/s, none lost" if kind == "v1" else ""))
    w = max(len(r[0]) for r in rows)
    print(f"\n{'case':<{w}} | {'cost / rate':<48} | detail")
    print("-" * (w + 110))
    for r in rows:
        print(f"{r[0]:<{w}} | {r[1]:<48} | {r[2]}" + (f"  [{r[3]}]" if r[3] else ""))
    print(f"\nmachine: {os.cpu_count()} cores, shared with other work while measured; "
          f"sampler runs {secs:g} s each, store {points:,} points per case.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
