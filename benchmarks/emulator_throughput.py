"""How many streamed tokens/s one emulator process serves on one core, and how late they leave.

The emulator runs as a child process pinned to one CPU core with a fixed-timing profile (every
stream: first token after TTFT, then one every ITL, OUTPUT tokens per request); closed-loop client
processes on the other cores hold S streams open (keep-alive, a new request as soon as one ends)
and count the events they receive. Per stream count it prints the ideal token rate, what the
emulator wrote (its ground truth), what the clients received, the share of token writes a full
client socket left in the emulator's buffer (buffered %), the emulator's send lateness
percentiles (actual write time - scheduled time), the emulator's CPU use, and how bunched the
requests arrived (the busiest 10 ms against the mean).

With ``--arrivals poisson`` the clients run an open loop instead: requests arrive as a Poisson
process at S / cycle per second (cycle = TTFT + (OUTPUT - 1) x ITL), so S streams are in flight
on average, each sent on an idle keep-alive connection. A closed loop keeps any bunch of requests
(one stall's worth of responses that ended together, each followed at once by its next request)
together for every later cycle, and the emulator schedules a bunch's tokens together: the open
loop asks for the same mean token rate without those trains. ``--arrivals closed,poisson``
alternates the two at each level.

    python benchmarks/emulator_throughput.py                      # default stream counts
    python benchmarks/emulator_throughput.py --streams 256,1024 --seconds 10
    python benchmarks/emulator_throughput.py --streams 1024 --variants ";SLM_NATIVE=0"   # C vs Python writer
    python benchmarks/emulator_throughput.py --streams 1056 --rps --arrivals closed,poisson --repeat 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from host import core_ticks, cpu_latency, run_latency, start_emulator, variant_env, wait_file  # noqa: E402  (benchmarks/, beside this script)
from loopback_rps import steer_loopback  # noqa: E402

PROFILE = """name: bench-fixed
description: fixed timing for the throughput benchmark
model: {{id: emulated/bench, params: 134515008, weight_bytes: 269030016, layers: 30, kv_heads: 3, head_dim: 64}}
gpu: {{name: bench gpu, memory_bytes: 85520809984, mem_bandwidth_gb_s: 3350, peak_tflops: 989,
      idle_w: 100, active_w: 200, power_limit_w: 700, sm_clock_mhz: 1980}}
limits: {{max_concurrent_requests: 1000000, max_input_tokens: 100000, max_total_tokens: 200000,
         max_batch_total_tokens: 1000000000}}
timing: {{mode: fixed, ttft_ms: {ttft}, itl_ms: {itl}, util_streams: 2048}}
"""


# ------------------------------------------------------------------------------------------------
# client: raw asyncio protocol, counts events, closed loop on keep-alive connections
# ------------------------------------------------------------------------------------------------
class _Stream(asyncio.Protocol):
    """One keep-alive connection running requests back to back; counts the events it reads."""

    def __init__(self, request: bytes, state: dict, done: asyncio.Future, idle: list | None = None):
        self.request = request
        self.state = state
        self.done = done
        self.idle = idle  # open loop: back to this pool when a response ends, instead of a new request
        self.tail = b""
        self.t = None

    def connection_made(self, transport):
        self.t = transport
        if self.idle is None:
            self.send()
        else:
            self.idle.append(self)

    def send(self) -> None:
        self.t.write(self.request)

    def data_received(self, data: bytes):
        st = self.state
        st["events"] += data.count(b"data:")
        buf = self.tail + data
        if b"\r\n0\r\n\r\n" in buf:
            if not st["running"]:
                self.t.close()
            elif self.idle is None:
                self.send()
            else:
                self.idle.append(self)
            buf = b""
        self.tail = buf[-8:]

    def connection_lost(self, exc):
        if not self.done.done():
            self.done.set_result(None)


def _client_main(host: str, ports: list[int], streams: int, output: int, t_start: float, t_end: float,
                 q: mp.Queue, cycle_s: float = 0.0) -> None:
    """Count events received in [t_start, t_end].

    Closed loop (cycle_s 0): `streams` keep-alive connections opened spread until t_start, each
    sending its next request as soon as a response ends. Open loop (cycle_s > 0): Poisson arrivals
    at streams / cycle_s requests/s (so `streams` responses are in flight on average), each sent on
    an idle keep-alive connection from a pool opened beforehand; arrivals do not wait for responses.
    """
    async def run():
        loop = asyncio.get_running_loop()
        state = {"events": 0, "running": True, "extra_connections": 0}
        body = json.dumps({"inputs": "benchmark prompt of eight words in total here",
                           "parameters": {"max_new_tokens": output}}).encode()
        reqs = [(f"POST /generate_stream HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-type: application/json\r\n"
                 f"content-length: {len(body)}\r\n\r\n").encode() + body for port in ports]
        dones = []
        idle: list | None = [] if cycle_s > 0 else None

        async def connect(i: int):
            fut = loop.create_future()
            await loop.create_connection(lambda r=reqs[i % len(ports)], f=fut: _Stream(r, state, f, idle), host,
                                         ports[i % len(ports)])
            dones.append(fut)

        if idle is None:
            gap = max(0.0, (t_start - time.monotonic()) * 0.8) / max(1, streams)
            for i in range(streams):
                await connect(i)
                await asyncio.sleep(random.uniform(0, 2 * gap))
        else:
            # the pool covers the Poisson spread of in-flight responses; arrivals start early enough
            # that the number in flight has settled before the measured window
            pool = int(streams * 1.15 + 4 * streams ** 0.5 + 8)
            for i in range(pool):
                await connect(i)

            async def arrivals():
                rate = streams / cycle_s
                t = max(time.monotonic(), t_start - 1.5 * cycle_s)
                while state["running"]:
                    t += random.expovariate(rate)
                    await asyncio.sleep(max(0.0, t - time.monotonic()))
                    if not idle:
                        state["extra_connections"] += 1
                        await connect(len(dones))
                    if state["running"]:
                        idle.pop().send()
            arriving = loop.create_task(arrivals())
        await asyncio.sleep(max(0.0, t_start - time.monotonic()))
        e0, w0 = state["events"], time.monotonic()
        await asyncio.sleep(max(0.0, t_end - time.monotonic()))
        e1, w1 = state["events"], time.monotonic()
        state["running"] = False
        q.put(((e1 - e0) / (w1 - w0), state["extra_connections"]))
        if idle is not None:
            await arriving
            for s in idle:
                s.t.close()
        await asyncio.wait(dones, timeout=15)
    asyncio.run(run())


# ------------------------------------------------------------------------------------------------
def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def _post(url: str) -> None:
    urllib.request.urlopen(urllib.request.Request(url, data=b"", method="POST"), timeout=10).read()


def _cpu_s(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tck = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tck, int(fields[12]) / tck


def _core_state(pid: int, core: int) -> dict:
    """What else ran on the emulator's core: its involuntary context switches, the core's steal
    and softirq ticks, and the CPU time of that core's ksoftirqd (loopback receive work the
    kernel deferred from the emulator's send path)."""
    out = {"nvcsw": 0, "steal": 0, "softirq": 0, "ksoftirqd": 0}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("nonvoluntary_ctxt_switches"):
                out["nvcsw"] = int(line.split()[1])
        ticks = core_ticks(core)
        if ticks:
            out["softirq"], out["steal"] = ticks["softirq"], ticks["steal"]
        for p in Path("/proc").iterdir():
            if p.name.isdigit():
                try:
                    if (p / "comm").read_text().strip() == f"ksoftirqd/{core}":
                        f = (p / "stat").read_text().rsplit(")", 1)[1].split()
                        out["ksoftirqd"] = int(f[11]) + int(f[12])
                        break
                except OSError:
                    continue
    except OSError:
        pass
    return out


def _start_emulator(args, tmp: Path, server_core: int, variant: str) -> tuple[subprocess.Popen, list[int], str]:
    prof = tmp / "bench.yaml"
    prof.write_text(PROFILE.format(ttft=args.ttft_ms, itl=args.itl_ms))
    server, info = start_emulator(["--replicas", str(args.replicas), "--profile", str(prof), "--tick-us",
                                   str(args.tick_us)], tmp / "ports.json", prefix=["taskset", "-c", str(server_core)],
                                  env=variant_env(variant))
    return server, info["ports"], info["urls"][0]


def build_floor(tmp: Path) -> Path:
    """Compile ``bare_emitter.c`` (the emulator's floor: C, nothing per token but the send)."""
    exe = tmp / "bare_emitter"
    cc = os.environ.get("CC") or "cc"
    subprocess.run([cc, "-O2", "-o", str(exe), str(ROOT / "benchmarks" / "bare_emitter.c")], check=True)
    return exe


def run_level(streams: int, args, server_core: int, client_cores: list[int], variant: str = "",
              arrivals: str = "closed", floor: Path | None = None) -> dict:
    """One run: the emulator (or, with ``floor``, the bare C emitter) on ``server_core`` against
    ``streams`` client streams; what it served, how late, and its CPU."""
    tmp = Path(tempfile.mkdtemp(prefix="emu-bench-"))
    cycle_s = (args.ttft_ms + (args.output - 1) * args.itl_ms) / 1000.0
    lead = max(args.ramp_s, 1.5 * cycle_s + 1.0 if arrivals == "poisson" else 0.0)
    if floor is None:
        server, ports, base = _start_emulator(args, tmp, server_core, variant)
        t_start = time.monotonic() + lead
    else:   # the window goes on its command line: it has no HTTP side to reset
        t_start = time.monotonic() + 0.5 + lead
        out_json = tmp / "floor.json"
        server = subprocess.Popen(
            [str(floor), str(tmp / "port.json"), str(int(args.ttft_ms * 1000)), str(int(args.itl_ms * 1000)),
             str(args.output), str(int(args.tick_us)), str(int(t_start * 1e9)), str(int((t_start + args.seconds) * 1e9)),
             str(out_json)], stdout=subprocess.DEVNULL, preexec_fn=lambda: os.sched_setaffinity(0, {server_core}))
        ports, base = [json.loads(wait_file(tmp / "port.json", server))["port"]], None
    t_end = t_start + args.seconds
    try:
        n_clients = max(1, min(args.clients, len(client_cores)))
        q: mp.Queue = mp.Queue()
        procs = []
        for c in range(n_clients):
            share = streams // n_clients + (1 if c < streams % n_clients else 0)
            p = mp.Process(target=_client_main, args=("127.0.0.1", ports, share, args.output, t_start, t_end, q,
                                                      cycle_s if arrivals == "poisson" else 0.0))
            p.start()
            try:
                os.sched_setaffinity(p.pid, {client_cores[c % len(client_cores)]})
            except OSError:
                pass
            procs.append(p)
        time.sleep(max(0.0, t_start - time.monotonic()))
        if base:
            _post(base + "/emulator/ground_truth/reset")
        cpu0, w0, core0 = _cpu_s(server.pid), time.monotonic(), _core_state(server.pid, server_core)
        time.sleep(max(0.0, t_end - time.monotonic()))
        gt = _get(base + "/emulator/ground_truth") if base else None
        cpu1, w1, core1 = _cpu_s(server.pid), time.monotonic(), _core_state(server.pid, server_core)
        got = [q.get(timeout=60) for _ in procs]
        received, extra = sum(g[0] for g in got), sum(g[1] for g in got)
        for p in procs:
            p.join(timeout=30)
        if gt is None:
            f = json.loads(wait_file(out_json, server, timeout=10))
            gt = {"writer": "floor", "total": {"tokens_sent": f["tokens_sent"], "lateness_us": f["lateness_us"],
                                               "requests_received": f["requests"]}, "per_replica": []}
            w0, w1 = t_start, t_end
    finally:
        server.terminate()
        server.wait(timeout=10)
    tot = gt["total"]
    window = (w1 - w0)
    per_stream = args.output / cycle_s  # = in flight / cycle
    lat = tot["lateness_us"]
    return {"streams": streams, "variant": variant, "writer": gt.get("writer"), "ideal_tok_s": streams * per_stream, "served_tok_s": tot["tokens_sent"] / window,
            "received_tok_s": received, "late_p50_us": lat.get("p50"), "late_p99_us": lat.get("p99"),
            "late_p999_us": lat.get("p999"), "late_max_us": lat.get("max"),
            "server_user_pct": 100 * (cpu1[0] - cpu0[0]) / window,
            "server_sys_pct": 100 * (cpu1[1] - cpu0[1]) / window, "timer": gt.get("timer"),
            "buffered_pct": 100 * tot.get("tokens_buffered", 0) / max(1, tot["tokens_sent"]),
            "arrivals": arrivals, "extra_connections": extra,
            "requests_peak_10ms": tot.get("requests_peak_10ms"),
            "requests_mean_10ms": tot["requests_received"] / window / 100,
            "late_episodes": [p.get("late_episodes", []) for p in gt["per_replica"]], "gc": gt.get("gc"), "timer_wake_us": gt.get("timer_wake_us"), "loop_stalls": gt.get("loop_stalls"),
            "core": {k: core1[k] - core0[k] for k in core0}}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--streams", default="64,256,512,1024,1536")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--ramp-s", type=float, default=3.0)
    ap.add_argument("--ttft-ms", type=float, default=50)
    ap.add_argument("--itl-ms", type=float, default=10)
    ap.add_argument("--output", type=int, default=128)
    ap.add_argument("--replicas", type=int, default=1)
    ap.add_argument("--tick-us", type=float, default=100.0, help="the emulator's timer grid (emulate --tick-us)")
    ap.add_argument("--clients", type=int, default=max(1, (os.cpu_count() or 2) - 1),
                    help="client processes (one per spare core)")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each level (variants alternate)")
    ap.add_argument("--variants", default="", metavar="ENV;ENV",
                    help="';'-separated emulator environments run one after the other at each level, e.g. "
                         "';SLM_NATIVE=0' compares the C token writer with the Python one in one run")
    ap.add_argument("--arrivals", default="closed", metavar="closed,poisson",
                    help="one or both, alternating at each level; closed: each stream sends its next request as soon as a response ends (a closed loop keeps "
                         "any stall's bunch of requests together for every later cycle); poisson: open loop, requests "
                         "arrive at streams / cycle per second, independent of responses, so `streams` are in flight "
                         "on average")
    ap.add_argument("--floor", action="store_true",
                    help="follow each run with the same run against bare_emitter.c (C, nothing per token but its "
                         "send and a lateness stamp; built with cc) on the same core: the emulator's floor")
    ap.add_argument("--json", help="also write the rows as JSON here")
    ap.add_argument("--episodes", action="store_true", help="print the episodes of writes >= 16 ms late")
    ap.add_argument("--rps", action="store_true",
                    help="loopback packets received on every core but the emulator's (root; restored after): the "
                         "clients' TCP receive is not charged to the emulator's core, as with two hosts "
                         "(benchmarks/loopback_rps.py); idle cores poll for the runs (BENCH_CPU_LATENCY_US, "
                         "benchmarks/host.py)")
    args = ap.parse_args(argv)
    cores = sorted(os.sched_getaffinity(0))
    # the emulator gets the last core (core 0 tends to carry more interrupts and housekeeping)
    server_core, client_cores = cores[-1], (cores[:-1] or cores)
    print(f"# emulator pinned to core {server_core}; {args.clients} client process(es) on cores {client_cores}; "
          f"{os.cpu_count()} cores; TTFT {args.ttft_ms:g} ms, ITL {args.itl_ms:g} ms, {args.output} tokens/request, "
          f"{args.replicas} replica(s), {args.seconds:g} s per level")
    print("| streams | variant | arrivals | writer | ideal tok/s | served tok/s | received tok/s | lateness p50 us | p99 us "
          "| p99.9 us | max us | emulator CPU % user + sys | buffered % | requests per 10 ms: peak (mean) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    with steer_loopback(server_core if args.rps else None):
        rows = _levels(args, server_core, client_cores)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


def _levels(args, server_core: int, client_cores: list[int]) -> list[dict]:
    rows = []
    variants = args.variants.split(";") if args.variants else [""]
    floor = build_floor(Path(tempfile.mkdtemp(prefix="emu-floor-"))) if args.floor else None
    runs = [(s, v, a, f) for s in (int(x) for x in args.streams.split(",")) for _ in range(args.repeat)
            for v in variants for a in args.arrivals.split(",") for f in ([None, floor] if floor else [None])]
    for s, v, a, f in runs:
        with cpu_latency(run_latency(v, args.rps)):
            r = run_level(s, args, server_core, client_cores, v, a, f)
        rows.append(r)
        extra = f" (+{r['extra_connections']} conn)" if r["extra_connections"] else ""
        print(f"| {s} | {v or 'default'} | {a}{extra} | {r['writer']} | {r['ideal_tok_s']:.0f} | {r['served_tok_s']:.0f} | "
              f"{r['received_tok_s']:.0f} | {r['late_p50_us']:.0f} | {r['late_p99_us']:.0f} | "
              f"{r['late_p999_us']:.0f} | {r['late_max_us']} | "
              f"{r['server_user_pct']:.0f} + {r['server_sys_pct']:.0f} | {r['buffered_pct']:.2f} | "
              f"{r['requests_peak_10ms'] if r['requests_peak_10ms'] is not None else '-'} ({r['requests_mean_10ms']:.1f}) |",
              flush=True)
        if args.episodes and f is None:
            print(f"#   writes >= 16 ms late (start ms, length ms, writes, worst us): {r['late_episodes']}; "
                  f"GC pauses: {r['gc']}; on its core (ticks): {r['core']}; timer wake-up lateness us: "
                  f"{r['timer_wake_us']}; wake-ups >= 10 ms late (at ms, wall ms and CPU ms since the last CPU sample): "
                  f"{r['loop_stalls']}", flush=True)
    return rows


if __name__ == "__main__":
    main()
