"""How closely a trace replay keeps its intended send times (docs/benchmarks/replay_fidelity.md).

A Mooncake-format trace with Poisson arrivals at each rate (short outputs: 2 tokens, prompts of
32 tokens) is written to a temporary file and replayed open loop by ``slm-harness run`` (the
real path: plan, Locust users, records, histograms) pinned to one core, against the emulator
(fixed profile: TTFT 50 ms, ITL 10 ms) pinned to the other. From ``requests.parquet`` it prints
the send lag (actual send - intended send) p50/p99/max and the share of requests sent more than
1 ms late, and checks that every request of the trace was sent and received.

    python benchmarks/replay_fidelity.py                         # 200 500 1000 req/s, 5 s each
    python benchmarks/replay_fidelity.py --rates 1000 --seconds 10
    python benchmarks/replay_fidelity.py --pacers loop timerfd --baseline /tmp/base --repeat 2 --rt

``--pacers`` compares send clocks (``loop``: gevent's timers), ``--baseline`` another source
tree, ``--rt`` runs the generator under SCHED_FIFO so a busy host's other processes cannot delay
its wake-ups; ``cpu wait`` is the share of the window the generator waited for a CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import pandas as pd

from host import start_emulator

ROOT = Path(__file__).resolve().parents[1]


def _pin(core: int | None, rt: bool = False) -> list[str]:
    pin = ["taskset", "-c", str(core)] if core is not None and os.cpu_count() and os.cpu_count() > 1 else []
    # --rt: the generator under SCHED_FIFO, so other processes on its core cannot delay its wake-ups
    return pin + (["chrt", "-f", "10"] if rt else [])


def write_trace(path: Path, rate: float, seconds: float, seed: int, output_tokens: int = 2) -> int:
    rng = random.Random(seed)
    t, n = 0.0, 0
    with path.open("w") as fh:
        while True:
            t += rng.expovariate(rate)
            if t >= seconds:
                break
            fh.write(json.dumps({"timestamp": round(t * 1000, 3), "input_length": 32, "output_length": output_tokens,
                                 "hash_ids": [n]}) + "\n")
            n += 1
    return n


def replay(url: str, rate: float, seconds: float, work: Path, gen_core: int | None, pacer: str,
           rt: bool = False, tree: Path = ROOT, output_tokens: int = 2) -> dict:
    trace = work / f"trace-{rate:g}.jsonl"
    n = write_trace(trace, rate, seconds, seed=int(rate), output_tokens=output_tokens)
    sc = work / f"replay-{rate:g}.yaml"
    sc.write_text(f"""name: replay-{rate:g}
target: {{protocol: tgi, request_timeout_s: 30}}
workload: {{trace: {{path: {trace}, format: mooncake, block_tokens: 16}}}}
load: {{mode: rate, levels: [{rate:g}], warmup_s: 0, duration_s: {seconds + 0.5}, cooldown_s: 0}}
telemetry: {{enabled: false}}
""")
    urllib.request.urlopen(urllib.request.Request(url + "/emulator/ground_truth/reset", method="POST")).read()
    res = Path(tempfile.mkdtemp(prefix=f"res-{rate:g}-{pacer}-", dir=work))
    p = subprocess.run([*_pin(gen_core, rt), sys.executable, "-m", "harness", "run", str(sc), "--url", url,
                        "--results", str(res)], cwd=tree, capture_output=True, text=True, timeout=seconds + 120,
                       env=dict(os.environ, **({"SLM_PACER": pacer} if pacer != "baseline" else {}),
                                PYTHONPATH=os.pathsep.join(filter(None, [str(tree), os.environ.get("PYTHONPATH")]))))
    if p.returncode not in (0, 4):
        raise SystemExit(f"run failed ({p.returncode}): {p.stderr[-2000:]}")
    (rd,) = list(res.iterdir())
    req = pd.read_parquet(rd / "requests.parquet")
    if req.empty:
        raise SystemExit(f"no request records in {rd}: {p.stdout[-1500:]}\n{p.stderr[-1500:]}")
    with urllib.request.urlopen(url + "/emulator/ground_truth") as r:
        gt = json.loads(r.read())["total"]
    checks = json.loads((rd / "summary.json").read_text())["cells"][0].get("checks", {})
    lag_ms = (req.start_ns - req.intended_ns) / 1e6
    return {"rate": rate, "pacer": pacer, "trace": n, "sent": len(req), "received": gt["requests_received"],
            "errors": int(req.error_class.notna().sum()),
            "p50": lag_ms.quantile(0.5), "p99": lag_ms.quantile(0.99), "max": lag_ms.max(),
            "late": float((lag_ms > 1.0).mean()),
            # the generator thread's share of the window waiting for a CPU (the host's noise) and
            # running on one (its own cost): a row is only as good as its host was quiet
            "cpu_wait": checks.get("generator_cpu_wait_share"), "cpu": checks.get("generator_cpu_share")}


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rates", type=float, nargs="+", default=[200, 500, 1000])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--gen-core", type=int, default=0)
    ap.add_argument("--emu-core", type=int, default=1)
    ap.add_argument("--pacers", nargs="*", default=["timerfd"], choices=["timerfd", "loop"],
                    help="send clocks to compare, run alternately at each rate (loop: gevent timers)")
    ap.add_argument("--rt", action="store_true",
                    help="run the generator under SCHED_FIFO (chrt -f 10): on a busy host, other processes "
                         "on its core then cannot delay its wake-ups (needs the right to, e.g. root)")
    ap.add_argument("--baseline", type=Path, metavar="TREE",
                    help="also run the generator from this source tree (a checkout of an earlier "
                         "commit), alternately with the others; its rows say 'baseline'")
    ap.add_argument("--output-tokens", type=int, default=2,
                    help="tokens per answer (more: more streams to read while sending)")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each (rate, pacer), interleaved")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        emu, info = start_emulator(["--profile", "fixed-50ms-10ms"], work / "ports.json", prefix=_pin(a.emu_core),
                                   stderr=None, cwd=ROOT)
        try:
            url = info["urls"][0]
            print(f"{'req/s':>6} {'pacer':>8} {'trace':>6} {'sent':>6} {'recv':>6} {'err':>4} {'lag p50 ms':>10} "
                  f"{'p99 ms':>8} {'max ms':>8} {'> 1 ms':>7} {'cpu wait':>8} {'cpu':>5}")
            for rate in a.rates:
                for _ in range(a.repeat):
                    runs = [(p, ROOT) for p in a.pacers] + ([("baseline", a.baseline)] if a.baseline else [])
                    for pacer, tree in runs:
                        r = replay(url, rate, a.seconds, work, a.gen_core, pacer, a.rt, tree, a.output_tokens)
                        print(f"{r['rate']:>6g} {r['pacer']:>8} {r['trace']:>6} {r['sent']:>6} {r['received']:>6} "
                              f"{r['errors']:>4} {r['p50']:>10.3f} {r['p99']:>8.3f} {r['max']:>8.2f} "
                              f"{100 * r['late']:>6.1f}% {_pct(r['cpu_wait']):>8} {_pct(r['cpu']):>5}", flush=True)
        finally:
            emu.terminate()
            emu.wait(timeout=10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
