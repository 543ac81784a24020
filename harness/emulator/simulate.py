"""Run the replica model in virtual time: closed-loop streams, no sockets, seconds of CPU.

This is how profiles are calibrated (``python -m harness.emulator.simulate PROFILE``) and how the
model's shape is tested; the HTTP server runs the very same engine objects on the real clock.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import statistics
from dataclasses import dataclass

from harness.emulator.engine import Seq, make_replica
from harness.emulator.gpu import SharedGpu
from harness.emulator.profile import Profile, load_profile


class VirtualTimer:
    """The emulator's timer interface on a virtual clock: due callbacks run in order, no waiting."""

    def __init__(self):
        self.heap: list = []
        self.counter = itertools.count()
        self.now = 0

    def at(self, due_ns, fn, arg):
        heapq.heappush(self.heap, (due_ns, next(self.counter), fn, arg))

    def now_ns(self) -> int:
        return self.now

    def run_until(self, t_end_ns: int) -> None:
        h = self.heap
        while h and h[0][0] <= t_end_ns:
            due, _, fn, arg = heapq.heappop(h)
            self.now = due
            fn(arg, due)
        self.now = t_end_ns


@dataclass
class SimResult:
    replicas: int
    streams: int
    tokens_per_s: float
    ttft_p50_ms: float
    tpot_p50_ms: float
    gpu_util_pct: float
    power_w: float
    j_per_token: float
    mean_batch: float


class _Client:
    """Closed loop: a new request the moment one finishes, to the least-loaded replica."""

    def __init__(self, replicas, timer, prompt, output, t_measure_ns):
        self.replicas = replicas
        self.timer = timer
        self.prompt = prompt
        self.output = output
        self.t_measure = t_measure_ns
        self.rid = itertools.count()
        self.first: dict[int, int] = {}
        self.ttft: list[float] = []
        self.tpot: list[float] = []
        self.tokens = 0

    def start(self, now):
        r = min(self.replicas, key=lambda x: x.active())
        s = Seq(next(self.rid), self.prompt, self.output, self, now)
        r.submit(s, now)

    def token(self, s, due, last):
        if due >= self.t_measure:
            self.tokens += 1
        if s.generated == 1:
            self.first[s.rid] = due
            if due >= self.t_measure:
                self.ttft.append((due - s.received_ns) / 1e6)
        if last:
            f = self.first.pop(s.rid)
            if due >= self.t_measure and s.max_new > 1:
                self.tpot.append((due - f) / 1e6 / (s.max_new - 1))
            self.timer.at(due, lambda _a, t: self.start(t), None)


def simulate(profile: Profile, replicas: int, streams: int, prompt: int = 128, output: int = 128,
             warmup_s: float = 20.0, measure_s: float = 40.0) -> SimResult:
    timer = VirtualTimer()
    gpu = SharedGpu(profile, replicas)
    gpu._last_ns = 0
    reps = [make_replica(i, profile, gpu, timer) for i in range(replicas)]
    t_measure = int(warmup_s * 1e9)
    client = _Client(reps, timer, prompt, output, t_measure)
    for _ in range(streams):
        client.start(0)
    timer.run_until(t_measure)
    e0 = gpu.snapshot(0, t_measure)["energy_j"]
    steps0 = sum(r.steps for r in reps)
    t_end = t_measure + int(measure_s * 1e9)
    # sample utilisation and batch size every 10 ms of virtual time
    utils, batches = [], []
    t = t_measure
    while t < t_end:
        t += 10_000_000
        timer.run_until(t)
        utils.append(gpu.util)
        batches.append(sum(r.last_batch for r in reps) / replicas)
    e1 = gpu.snapshot(0, t_end)["energy_j"]
    _ = steps0
    tok_s = client.tokens / measure_s
    return SimResult(
        replicas=replicas, streams=streams, tokens_per_s=tok_s,
        ttft_p50_ms=statistics.median(client.ttft) if client.ttft else float("nan"),
        tpot_p50_ms=statistics.median(client.tpot) if client.tpot else float("nan"),
        gpu_util_pct=100 * statistics.fmean(utils), power_w=(e1 - e0) / measure_s,
        j_per_token=(e1 - e0) / max(1, client.tokens), mean_batch=statistics.fmean(batches))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="simulate closed-loop load on an emulator profile")
    ap.add_argument("profile")
    ap.add_argument("--cells", default="1x16,1x64,1x256,2x256,4x256,8x256",
                    help="comma list of REPLICASxSTREAMS")
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--output", type=int, default=128)
    a = ap.parse_args(argv)
    prof = load_profile(a.profile)
    print("| replicas | streams | tok/s | TTFT p50 ms | TPOT p50 ms | power W | GPU util % | J/token | batch |")
    print("|---|---|---|---|---|---|---|---|---|")
    for cell in a.cells.split(","):
        n, c = (int(x) for x in cell.split("x"))
        r = simulate(prof, n, c, a.prompt, a.output)
        print(f"| {n} | {c} | {r.tokens_per_s:.0f} | {r.ttft_p50_ms:.0f} | {r.tpot_p50_ms:.0f} | "
              f"{r.power_w:.0f} | {r.gpu_util_pct:.0f} | {r.j_per_token:.3f} | {r.mean_batch:.0f} |")


if __name__ == "__main__":
    main()
