"""The floor for the generator fidelity benchmark: a bare gevent raw-socket reader with nothing per token but a timestamp.

No Locust, no histograms, no records: one greenlet per stream sends ``/generate_stream`` requests
back to back on a keep-alive socket, reads with ``recv`` and stamps each read. It prints what
``generator_fidelity.py`` prints for the product (tokens/s vs ideal, TTFT error, ITL p50/p99, CPU
per token), so the two tables side by side show what the product's per-token work costs.

    python benchmarks/bare_reader.py --url http://127.0.0.1:8080 --streams 256,1024
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import struct  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from urllib.parse import urlsplit  # noqa: E402

import gevent  # noqa: E402
from gevent import socket  # noqa: E402

TOKENS, TTFT_S, ITL_S = 128, 0.050, 0.010


_ANC = socket.CMSG_SPACE(16)   # one struct timespec (SO_TIMESTAMPNS)
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)


def run_level(addrs: list[tuple[str, int]], streams: int, warmup_s: float, measure_s: float,
              ramp_s: float = 0.0, kernel_stamps: bool = False, signal: bool = False) -> dict:
    """Run ``streams`` closed-loop streams; measure over ``measure_s`` after ``ramp_s + warmup_s``.

    ``ramp_s``: stream i starts at i * ramp_s / streams (one cycle spreads their phases evenly,
    as the product's ramp stage does). ``kernel_stamps``: each read carries the time its data
    reached the host (``SO_TIMESTAMPNS``), the product's way, so the reader's own lateness
    stays out of TTFT and ITL and only tokens merged into one read show. Tokens read together
    count as the product counts them: one ITL to the read, then zeros. ``signal``: print
    ``# measure`` and ``# end`` on stdout as the window opens and closes (for a parent reading
    the server's ground truth over the same window)."""
    body = json.dumps({"inputs": "x " * 16, "parameters": {"max_new_tokens": TOKENS, "details": True}}).encode()
    st = {"tok": 0, "measure": False, "stop": False}
    itls: list[int] = []
    ttfts: list[int] = []

    def stream(host: str, port: int) -> None:
        req = (f"POST /generate_stream HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
        s = socket.create_connection((host, port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if kernel_stamps:
            s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        while not st["stop"]:
            t0 = time.perf_counter_ns()
            s.sendall(req)
            last = None
            while True:
                if kernel_stamps:
                    d, anc, _f, _a = s.recvmsg(65536, _ANC)
                    t = time.perf_counter_ns()
                    if anc:
                        sec, ns = struct.unpack("qq", anc[0][2])
                        t = sec * 1_000_000_000 + ns - (time.time_ns() - t)
                else:
                    d = s.recv(65536)
                    t = time.perf_counter_ns()
                n = d.count(b"data:")
                if n:
                    st["tok"] += n
                    if st["measure"]:
                        if last is None:
                            ttfts.append(t - t0)
                            n -= 1
                        else:
                            itls.append(t - last)
                            n -= 1
                        itls.extend([0] * n)
                    last = t
                if d.endswith(b"0\r\n\r\n") or not d:
                    break
        s.close()

    gl = [gevent.spawn_later(i * ramp_s / streams, stream, *addrs[i % len(addrs)]) for i in range(streams)]
    gevent.sleep(ramp_s + warmup_s)
    st["measure"] = True
    if signal:
        print("# measure", flush=True)
    t0, c0, cpu0 = time.monotonic(), st["tok"], os.times()
    gevent.sleep(measure_s)
    t1, c1, cpu1 = time.monotonic(), st["tok"], os.times()
    st["measure"], st["stop"] = False, True
    if signal:
        print("# end", flush=True)
    gevent.joinall(gl, timeout=5)
    gevent.killall(gl, block=False)
    cpu = cpu1.user - cpu0.user + cpu1.system - cpu0.system
    itls.sort()
    ttfts.sort()
    ideal = streams * TOKENS / (TTFT_S + (TOKENS - 1) * ITL_S)
    n, m = len(itls), len(ttfts)
    return {"streams": streams, "ideal_tok_s": ideal, "tok_s": (c1 - c0) / (t1 - t0),
            "pct_ideal": 100 * (c1 - c0) / (t1 - t0) / ideal,
            "ttft_mean_err_ms": (sum(ttfts) / max(1, m) / 1e6 - TTFT_S * 1e3),
            "ttft_p99_err_ms": (ttfts[m * 99 // 100] / 1e6 - TTFT_S * 1e3) if m else 0.0,
            "itl_p50_ms": itls[n // 2] / 1e6 if n else 0, "itl_p99_ms": itls[n * 99 // 100] / 1e6 if n else 0,
            "cpu_pct": 100 * cpu / (t1 - t0), "us_per_token": 1e6 * cpu / max(1, c1 - c0),
            "rss_mb": _rss_mb()}


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", required=True, help="emulator URL(s), comma-separated (streams spread over them)")
    ap.add_argument("--streams", default="256,1024")
    ap.add_argument("--warmup-s", type=float, default=3.0)
    ap.add_argument("--measure-s", type=float, default=8.0)
    ap.add_argument("--ramp-s", type=float, default=0.0, help="start the streams evenly over S seconds")
    ap.add_argument("--kernel-stamps", action="store_true", help="time reads by the kernel's receive stamps")
    ap.add_argument("--signal", action="store_true", help="print '# measure' and '# end' as the window opens and closes")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    addrs = [(urlsplit(u).hostname, urlsplit(u).port) for u in args.url.split(",")]
    rows = [run_level(addrs, int(s), args.warmup_s, args.measure_s, args.ramp_s, args.kernel_stamps, args.signal)
            for s in args.streams.split(",")]
    print("| streams | ideal tok/s | tok/s | % ideal | TTFT mean err ms | ITL p50 ms | ITL p99 ms | CPU % | us/token |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['streams']} | {r['ideal_tok_s']:.0f} | {r['tok_s']:.0f} | {r['pct_ideal']:.2f} | "
              f"{r['ttft_mean_err_ms']:+.2f} | {r['itl_p50_ms']:.2f} | {r['itl_p99_ms']:.2f} | {r['cpu_pct']:.0f} | "
              f"{r['us_per_token']:.1f} |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
