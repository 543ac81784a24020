"""GPU check: 100 Hz sampling under an on/off matmul load; energy from power vs the hardware counter.

Run on a GPU machine with only python3 + torch + nvidia-ml-py and this repository on PYTHONPATH
(no pandas, pyarrow or influxdb-client needed):

    PYTHONPATH=. python3 benchmarks/gpu_energy_check.py                 # 60 s, 100 Hz, GPU 0
    PYTHONPATH=. python3 benchmarks/gpu_energy_check.py --seconds 90 --phase-s 10 --json out.json
    PYTHONPATH=. python3 benchmarks/gpu_energy_check.py --fake --seconds 6   # dry run, no GPU

The load runs in a child process (as replicas do), the harness's own Sampler (the code a run uses)
in this one; it marks one window over the whole load and
one per phase, and prints per window: the hardware energy counter's delta (read at the edges
only), the trapezoid integral of the 100 Hz power samples, the same integral from every 5th
sample (20 Hz), and their differences. Also: achieved rate, schedule lateness, sampler CPU, and
how often the power value really changed. Exit 0 when the whole-load integral is within
``--tolerance-pct`` (1%) of the counter.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.telemetry.energy import trapezoid_j  # noqa: E402
from harness.telemetry.nvml import NvmlSource  # noqa: E402
from harness.telemetry.sampler import Sampler  # noqa: E402
from harness.telemetry.sinks import Sink  # noqa: E402


class Keep(Sink):
    """Keeps every sample in memory (60 s at 100 Hz is 6,000 samples)."""

    def __init__(self):
        self.kept = []

    def samples(self, batch):
        self.kept.extend(batch)


def matmul_load(stop, on, ready, n: int, gpu: int) -> None:
    """The GPU load, in its own process (as replicas are): it never competes with the sampler
    for the GIL, so the sampler's rate, lateness and CPU are what a run would see."""
    import torch

    dev = torch.device(f"cuda:{gpu}")
    a = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    a @ b
    torch.cuda.synchronize(dev)
    ready.set()
    while not stop.is_set():
        if on.is_set():
            for _ in range(8):
                a @ b
            torch.cuda.synchronize(dev)
        else:
            time.sleep(0.005)


def integral_between(samples, t0, t1) -> float:
    """Trapezoid over the samples inside [t0, t1], the edges held at the nearest sample."""
    xs = [(s.ts_ns, s.power_w) for s in samples if t0 <= s.ts_ns <= t1 and s.power_w is not None]
    if not xs:
        return float("nan")
    ts = [t0] + [t for t, _ in xs] + [t1]
    ps = [xs[0][1]] + [p for _, p in xs] + [xs[-1][1]]
    return trapezoid_j(ts, ps)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--rate-hz", type=float, default=100.0)
    ap.add_argument("--phase-s", type=float, default=5.0, help="length of each on / off phase")
    ap.add_argument("--gpu", type=int, default=0)
    ap.add_argument("--matrix", type=int, default=8192)
    ap.add_argument("--tolerance-pct", type=float, default=1.0)
    ap.add_argument("--fake", action="store_true", help="fake NVML and no load (dry run)")
    ap.add_argument("--json", metavar="FILE")
    a = ap.parse_args(argv)

    if a.fake:
        from harness.telemetry.fakenvml import FakeGpu, FakeNvml, square_wave

        binding = FakeNvml([FakeGpu(power_w=square_wave(90, 600, 2 * a.phase_s))])
    else:
        binding = None
    src = NvmlSource(gpus=[a.gpu], binding=binding)
    info = src.describe()
    keep = Keep()
    sampler = Sampler(src, [keep], rate_hz=a.rate_hz, run_id="gpu-energy-check", process_interval_s=0)
    loader = None
    if a.fake:
        stop, on = threading.Event(), threading.Event()
    else:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        stop, on, ready = ctx.Event(), ctx.Event(), ctx.Event()
        loader = ctx.Process(target=matmul_load, args=(stop, on, ready, a.matrix, a.gpu), daemon=True)
        loader.start()
        if not ready.wait(300):   # allocations and kernels warmed before the clock starts
            raise SystemExit("the matmul load process did not start")
    sampler.start()
    time.sleep(0.5)
    cpu0 = time.process_time()
    sampler.begin_window("all")
    windows = []
    t_end = time.monotonic() + a.seconds
    k = 0
    while time.monotonic() < t_end:
        name = f"{k:02d}-{'on' if k % 2 == 0 else 'off'}"
        (on.set if k % 2 == 0 else on.clear)()
        sampler.begin_window(name)
        time.sleep(max(0.0, min(a.phase_s, t_end - time.monotonic())))
        windows.append(sampler.end_window(name))
        k += 1
    on.clear()
    total = sampler.end_window("all")
    cpu = time.process_time() - cpu0
    summary = sampler.stop()
    stop.set()
    if loader:
        loader.join(30)
        if loader.is_alive():
            loader.terminate()
    src.close()

    samples = keep.kept
    every5 = samples[::5]
    rows = []
    for w in [*windows, total]:
        counter = w.energy_j if w.source == "nvml-counter" else None
        i100 = integral_between(samples, w.start_ns, w.end_ns)
        i20 = integral_between(every5, w.start_ns, w.end_ns)
        dur = (w.end_ns - w.start_ns) / 1e9

        def pct(x):
            return (x - counter) / counter * 100 if counter else float("nan")

        rows.append({"window": w.name, "seconds": dur, "mean_w": (counter or i100) / dur,
                     "counter_j": counter, "integral_100hz_j": i100, "diff_100hz_pct": pct(i100),
                     "integral_20hz_j": i20, "diff_20hz_pct": pct(i20),
                     "sampler_integral_j": w.integral_j, "samples": w.samples})

    ts = [s.ts_ns for s in samples]
    changes, last = [], None
    for s in samples:
        if last is not None and s.power_w != last.power_w:
            changes.append(s.ts_ns)
        last = s if last is None or s.power_w != last.power_w else last
    change_ms = statistics.median(b - a_ for a_, b in zip(changes, changes[1:])) / 1e6 if len(changes) > 2 else float("nan")
    wall = (ts[-1] - ts[0]) / 1e9 if len(ts) > 1 else float("nan")
    facts = {
        "gpu": info["gpus"][str(a.gpu)].get("name"), "driver": info.get("driver"),
        "power_source": src.power_source(a.gpu), "counter_source": src.counter_source(a.gpu),
        "rate_hz_asked": a.rate_hz, "rate_hz_achieved": (len(ts) - 1) / wall if wall else None,
        "missed_ticks": summary["missed_ticks"], "lateness_us": summary["lateness_us"],
        "sampler_cpu_pct_of_core": 100 * summary["cpu_s"] / summary["wall_s"],
        "process_cpu_pct_of_core": 100 * cpu / a.seconds,
        "power_value_change_median_ms": change_ms,
        "distinct_power_values": len({s.power_w for s in samples}),
        "fake": a.fake,
    }

    print(f"GPU {a.gpu}: {facts['gpu']} (driver {facts['driver']}); power from "
          f"{facts['power_source']}, counter {facts['counter_source']}" + ("  [FAKE NVML]" if a.fake else ""))
    print(f"sampling: asked {a.rate_hz:g} Hz, got {facts['rate_hz_achieved']:.2f} Hz, missed ticks "
          f"{facts['missed_ticks']}, lateness p50 {facts['lateness_us']['p50']:.0f} us p99 "
          f"{facts['lateness_us']['p99']:.0f} us, sampler CPU {facts['sampler_cpu_pct_of_core']:.2f}% "
          f"of a core; power value changed every {change_ms:.1f} ms (median)")
    hdr = (f"{'window':<8} {'s':>6} {'mean W':>8} {'counter J':>11} {'100Hz J':>11} {'diff%':>7} "
           f"{'20Hz J':>11} {'diff%':>7} {'samples':>7}")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        c = f"{r['counter_j']:11.1f}" if r["counter_j"] is not None else f"{'-':>11}"
        print(f"{r['window']:<8} {r['seconds']:6.2f} {r['mean_w']:8.1f} {c} {r['integral_100hz_j']:11.1f} "
              f"{r['diff_100hz_pct']:7.2f} {r['integral_20hz_j']:11.1f} {r['diff_20hz_pct']:7.2f} "
              f"{r['samples']:7d}")
    whole = rows[-1]
    ok = whole["counter_j"] is not None and abs(whole["diff_100hz_pct"]) <= a.tolerance_pct
    print(f"{'PASS' if ok else 'FAIL'}: whole-load integral at {a.rate_hz:g} Hz vs counter: "
          f"{whole['diff_100hz_pct']:+.3f}% (tolerance {a.tolerance_pct}%)")
    if a.json:
        Path(a.json).write_text(json.dumps({"facts": facts, "windows": rows}, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
