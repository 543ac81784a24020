"""How exactly and how fast the load generator reads token streams (docs/benchmarks/generator_fidelity.md).

The emulator (fixed profile: TTFT 50 ms, ITL 10 ms, 128 tokens) runs pinned to one core, the
generator (``slm-harness run``, closed loop, everything on: histograms, records, Locust events)
pinned to another. For each stream count it prints achieved output tokens/s against the ideal
(streams x 128 / 1.32 s), TTFT mean/p99 against the schedule (50 ms) and against the emulator's
own first-write times, ITL p50/p99 against the emulator's recorded send times, the emulator's
lateness (when it, not the client, is the limit), and the generator's CPU and memory.

    python benchmarks/generator_fidelity.py                       # 64 256 512 1024 streams
    python benchmarks/generator_fidelity.py --streams 256 --measure-s 600   # memory over 10 min
    python benchmarks/generator_fidelity.py --streams 256 --compare ../old --repeat 3  # A/B, alternating
    python benchmarks/generator_fidelity.py --protocol openai-chat --streams 1024   # vLLM's framing
    python benchmarks/generator_fidelity.py --tls --streams 256      # https (a certificate made here)
    python benchmarks/generator_fidelity.py --protocol tgi,openai-chat --tls both --streams 256  # alternating

``--protocol openai-completions|openai-chat`` has the emulator frame events as vLLM, SGLang and
OpenAI do (``data: {``, chat chunks with ``delta`` objects); ``--tls`` serves https with a
self-signed certificate made with ``openssl`` for the run, which the generator trusts through
``target.tls.ca_file``.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

import host
from host import CPU_LATENCY_VAR, core_share, core_ticks, cpu_latency, run_latency, variant_env
from loopback_rps import steer_loopback

ROOT = Path(__file__).resolve().parents[1]
TOKENS = 128
TTFT_S = 0.050
ITL_S = 0.010


def _ctx(url: str):
    """https: the emulator of this run, on this host, with the certificate made for it."""
    return ssl._create_unverified_context() if url.startswith("https://") else None


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10, context=_ctx(url)) as r:
        return json.loads(r.read())


def _post(url: str) -> None:
    req = urllib.request.Request(url, data=b"", method="POST")
    urllib.request.urlopen(req, timeout=10, context=_ctx(url)).read()


def make_cert(tmp: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (openssl), for --tls."""
    key, crt = tmp / "key.pem", tmp / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(crt), "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return crt, key


def _pin(cpu: int | None) -> list[str]:
    return ["taskset", "-c", str(cpu)] if cpu is not None else []


def start_emulator(cpu: int | None, replicas: int, tmp: Path, k: int = 0,
                   extra: tuple[str, ...] = ()) -> tuple[subprocess.Popen, list[str]]:
    proc, info = host.start_emulator(["--replicas", str(replicas), "--profile", "fixed-50ms-10ms", *extra],
                                     tmp / f"emulator{k}.json", prefix=_pin(cpu), log=tmp / f"emulator{k}.log")
    return proc, info["urls"]


SCENARIO = """
name: fidelity
target: {{protocol: {protocol}, request_timeout_s: 60{tls}}}
workload: {{seed: 1, prompt_tokens: {{dist: fixed, value: 16}}, output_tokens: {{dist: fixed, value: {tokens}}}}}
load: {{mode: concurrency, levels: [{streams}], warmup_s: {warmup}, duration_s: {measure}, cooldown_s: 0.5{stages}}}
"""


def _gt_total(gt_urls: list[str]) -> dict:
    """Ground truth of every emulator process: counts added, percentiles weighted by count."""
    whole = [_get(u + "/emulator/ground_truth") for u in gt_urls]
    parts = [w["total"] for w in whole]
    out = {"gc_max_ms": max((g.get("max_ms", 0.0) for w in whole for g in w.get("gc", {}).values()), default=0.0),
           "stalls": sum(len(w.get("loop_stalls", [])) for w in whole),
           # with --diag the generator stamps its sends (SLM_SENT_HEADER): requests' way to the parser
           "req_delay_p99_us": max((p.get("request_delay_us", {}).get("p99", 0) for p in parts), default=0),
           "req_delay_max_us": max((p.get("request_delay_us", {}).get("max", 0) for p in parts), default=0),
           # the busiest 10 ms of requests read by one emulator process, and the mean (ground truth's
           # requests_peak_10ms): a closed loop's bunches keep their tokens due together
           "req_peak_10ms": max((p.get("requests_peak_10ms", 0) for p in parts), default=0),
           "req_mean_10ms": sum(p["requests_received"] for p in parts) / len(parts)
           / max(1e-9, (time.time_ns() - min(p["since_ns"] for p in parts)) / 1e7)}
    for key in ("ttft_us", "itl_us", "lateness_us"):
        n = sum(p[key].get("count", 0) for p in parts) or 1
        out[key] = {q: sum(p[key].get(q, 0) * p[key].get("count", 0) for p in parts) / n
                    for q in ("mean", "p50", "p99")}
    out["tokens_sent"] = sum(p["tokens_sent"] for p in parts)
    return out


def _tokens_in_window(run_dir: Path) -> tuple[float, float]:
    """Output tokens that arrived inside the measured window (tokens spread evenly from the first
    token to the last of each request), and the window's length: closed-loop streams start in
    waves, so counting whole requests that *started* in the window would quantise throughput."""
    import pandas as pd

    win = pd.read_parquet(run_dir / "windows.parquet")
    w = win[win.phase == "measure"].iloc[0]
    ws, we = int(w.start_ns), int(w.end_ns)
    req = pd.read_parquet(run_dir / "requests.parquet")
    req = req[req.error_class.isna() & req.first_token_ns.notna()]
    total = 0.0
    for first, end, n in zip(req.first_token_ns.astype("int64"), req.end_ns.astype("int64"), req.output_tokens):
        if n <= 1 or end <= first:
            total += n if ws <= first < we else 0
            continue
        lo, hi = max(first, ws), min(end, we)
        if hi > lo:
            total += (n - 1) * (hi - lo) / (end - first)
        if ws <= first < we:
            total += 1
    return total, (we - ws) / 1e9


def _diagnose(run_dir: Path, lag_log: Path) -> str:
    """Where the TTFT error sits: its quantiles, and whether it clusters in time (stalls) or not."""
    import numpy as np
    import pandas as pd

    # the measured window on this machine's perf_counter scale (the records are wall-clock ns;
    # every process here shares CLOCK_MONOTONIC and CLOCK_REALTIME)
    win = pd.read_parquet(run_dir / "windows.parquet")
    w = win[win.phase == "measure"].iloc[0]
    off = time.time_ns() - time.perf_counter_ns()
    ws, we = int(w.start_ns) - off, int(w.end_ns) - off
    lag = ""
    a = np.zeros((0, 10))
    if lag_log.exists():   # the reader's late wake-ups: perf_counter ns, lag ns, sockets ready, pass ns
        a = np.loadtxt(lag_log, ndmin=2)
        lag_log.unlink()
        a = a[(a[:, 0] >= ws) & (a[:, 0] < we)]   # the measured window only
    if len(a):
        gaps = np.diff(a[:, 0]) / 1e6
        lag = (f"; in the measured window, reader late (>=5 ms) {len(a)} wake-ups, lag ms p50/max {np.median(a[:, 1]) / 1e6:.1f}/"
               f"{a[:, 1].max() / 1e6:.1f}, ready p50 {np.median(a[:, 2]):.0f}, "
               + (f"pass ms p50/max {np.median(a[:, 3]) / 1e6:.1f}/{a[:, 3].max() / 1e6:.1f}, " if a.shape[1] > 3 else "")
               + (f"CPU in the 5 longest passes ms {', '.join(f'{c / 1e6:.1f}/{d / 1e6:.1f}' for d, c in sorted(zip(a[:, 3], a[:, 4]))[-5:])}, "
                  if a.shape[1] > 4 else "")
               + (f"in those passes: reads for Python p50/max {np.median(a[:, 5]):.0f}/{a[:, 5].max():.0f}, "
                  f"ends p50/max {np.median(a[:, 6]):.0f}/{a[:, 6].max():.0f}, "
                  f"in the 5 longest (ms: reads, ends, ms of its first C pass, further C passes, "
                  f"ms of its slowest system call in C) "
                  f"{', '.join(f'{d / 1e6:.1f}: {o:.0f}, {e:.0f}, {c / 1e6:.1f}, {x:.0f}, {m / 1e6:.2f}' for d, o, e, c, x, m in sorted(zip(a[:, 3], a[:, 5], a[:, 6], a[:, 7], a[:, 8], a[:, 9]))[-5:])}; "
                  if a.shape[1] > 9 else "")
               + "ms between them p10/p50/p90 "
               + ("/".join(f"{v:.0f}" for v in np.percentile(gaps, [10, 50, 90])) if len(gaps) else "-"))
    hold = Path(str(lag_log) + ".holders")
    if hold.exists():   # which greenlet ran longest before each late pass: lag ns, its ns, its name
        by = {}
        for line in hold.read_text().splitlines():
            t, _lag, ns, name = line.split(" ", 3)
            if not ws <= int(t) < we:
                continue
            n, tot, mx = by.get(name, (0, 0, 0))
            by[name] = (n + 1, tot + int(ns), max(mx, int(ns)))
        hold.unlink()
        top = sorted(by.items(), key=lambda kv: -kv[1][1])[:4]
        lag += "; before those passes, the longest runner: " + ", ".join(
            f"{name} {n}x max {mx / 1e6:.1f} ms" for name, (n, _t, mx) in top)
    gcl = Path(str(lag_log) + ".gc")
    if gcl.exists():   # the generator's cyclic collections of >= 1 ms: generation, ns
        g = np.loadtxt(gcl, ndmin=2)
        gcl.unlink()
        lag += (f"; collections >= 1 ms: {len(g)} (gen2 {int((g[:, 0] == 2).sum())}), ms p50/max "
                f"{np.median(g[:, 1]) / 1e6:.1f}/{g[:, 1].max() / 1e6:.1f}")
    stacks = Path(str(lag_log) + ".stacks")
    if stacks.exists():   # SLM_READER_WATCHDOG_MS: what the process did while the reader stalled
        print(stacks.read_text()[:12000], file=sys.stderr)
        stacks.unlink()
    req = pd.read_parquet(run_dir / "requests.parquet")
    req = req[(req.phase == "measure") & req.error_class.isna() & req.ttft_s.notna()]
    if req.empty:
        return "no measured requests"
    err = (req.ttft_s.to_numpy() - TTFT_S) * 1e3
    q = np.percentile(err, [10, 50, 90, 99])
    start = req.start_ns.to_numpy()
    bins = (start - start.min()) // 100_000_000
    per_bin = pd.Series(err).groupby(bins).mean().sort_values()
    itl_max = req.itl_max_s.to_numpy() * 1e3
    return (f"TTFT err ms p10/p50/p90/p99 {q[0]:.2f}/{q[1]:.2f}/{q[2]:.2f}/{q[3]:.2f}; per 100 ms of starts: "
            f"median bin {per_bin.median():.2f}, worst bins {', '.join(f'{v:.1f}' for v in per_bin.tail(5))}; "
            f"requests with an ITL > 15 ms: {100 * (itl_max > 15).mean():.1f}%{lag}")


def run_level(streams: int, urls: list[str], gen_cpu: int | None, warmup_s: float, measure_s: float,
              tmp: Path, gt_urls: list[str] | None = None, root: Path = ROOT, diag: bool = False,
              variant: str = "", ramp_s: float = 0.0, emu_cpus: tuple[int, ...] = (),
              protocol: str = "tgi", ca_file: Path | None = None) -> dict:
    gt_urls = gt_urls or urls[:1]
    scen = tmp / f"s{streams}.yaml"
    stages = f", stages: [{{duration_s: {ramp_s}, target: {streams}}}]" if ramp_s > 0 else ""
    tls = f", tls: {{ca_file: '{ca_file}'}}" if ca_file else ""
    scen.write_text(SCENARIO.format(tokens=TOKENS, streams=streams, warmup=warmup_s, measure=measure_s,
                                    stages=stages, protocol=protocol, tls=tls))
    out = tmp / f"r{streams}.json"
    for u in urls:
        _post(u + "/emulator/ground_truth/reset")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    env.update(variant_env(variant))
    env.pop(CPU_LATENCY_VAR, None)   # for the benchmark itself (the caller holds it), not the generator
    lag_log = tmp / f"lag{streams}.txt"
    if diag:
        env["SLM_READER_LAG_LOG"] = str(lag_log)
        env["SLM_SENT_HEADER"] = "1"
    t_start = time.monotonic()
    proc = subprocess.Popen([*_pin(gen_cpu), sys.executable, "-m", "harness", "run", str(scen), "--quiet",
                             "--url", ",".join(urls), "--results", str(tmp / "res"), "--json", str(out)],
                            env=env, stderr=open(Path(os.environ.get("FIDELITY_LOG_DIR", tmp)) / f"gen{streams}.log", "wb"))
    ps = psutil.Process(proc.pid)
    cpu0 = None
    rss_max = 0
    rss_samples = []
    # the measured window starts warm-up (and ramp) after the first request reaches an emulator:
    # the generator's own start-up (imports, checks, its plan's start) varies from run to run
    measure_start = measure_end = float("inf")
    load_seen = False
    cpu_measure = None
    sleeps = 0.0
    steal = softirq = emu_steal = 0.0
    core0 = None
    emu0: list = []
    gt = None
    while proc.poll() is None:
        try:
            now = time.monotonic()
            kids = [ps] + ps.children(recursive=True)
            t = sum(p.cpu_times().user + p.cpu_times().system for p in kids)
            sw = ps.num_ctx_switches().voluntary   # the main thread's: the event loop's sleeps
            rss = sum(p.memory_info().rss for p in kids)
            rss_max = max(rss_max, rss)
            rss_samples.append((now - t_start, rss))
            if not load_seen and (sum(_get(u + "/emulator/ground_truth")["total"]["requests_received"]
                                      for u in gt_urls) > 0 or now - t_start > 60):
                load_seen = True
                measure_start = now + ramp_s + warmup_s
                measure_end = measure_start + measure_s
            if cpu0 is None and now >= measure_start:
                cpu0 = (now, t, sw)
                core0 = core_ticks(gen_cpu)
                emu0 = [core_ticks(c) for c in emu_cpus]
                for u in urls:   # ground truth over the measured window only
                    _post(u + "/emulator/ground_truth/reset")
            if cpu0 is not None and cpu_measure is None and now >= measure_end:
                emu_steal = max((core_share(a, core_ticks(c))[0] for a, c in zip(emu0, emu_cpus)), default=0.0)
                cpu_measure = (t - cpu0[1]) / (now - cpu0[0])
                sleeps = (sw - cpu0[2]) / (now - cpu0[0])
                steal, softirq = core_share(core0, core_ticks(gen_cpu))
                gt = _gt_total(gt_urls)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.2)
    if gt is None:
        gt = _gt_total(gt_urls)
    summary = json.loads(out.read_text())
    res = summary["cells"][0]
    toks, win_s = _tokens_in_window(Path(summary["run_dir"]))
    if diag:
        print(f"# {streams} streams: {_diagnose(Path(summary['run_dir']), lag_log)}; emulators: longest collection "
              f"{gt['gc_max_ms']:.1f} ms, timer wake-ups >= 10 ms late {gt['stalls']}, most steal on their cores "
              f"{emu_steal:.1f}%, requests' way from the generator's send to the emulator's parser p99/max ms "
              f"{gt['req_delay_p99_us'] / 1e3:.2f}/{gt['req_delay_max_us'] / 1e3:.1f}, requests per 10 ms in one emulator "
              f"process peak {gt['req_peak_10ms']} (mean {gt['req_mean_10ms']:.1f})", file=sys.stderr, flush=True)
    lat = res["latency"]
    ideal = streams * TOKENS / (TTFT_S + (TOKENS - 1) * ITL_S)
    return {
        "protocol": protocol + (" tls" if ca_file else ""),
        "streams": streams, "code": "" if root == ROOT else str(root), "variant": variant, "ramp_s": ramp_s, "ideal_tok_s": ideal, "tok_s": toks / win_s,
        "pct_ideal": 100 * toks / win_s / ideal, "requests": res["requests"],
        "errors": res["requests"] - res["ok"],
        "ttft_mean_err_ms": (lat["ttft"]["mean_s"] - TTFT_S) * 1e3,
        "ttft_p99_err_ms": (lat["ttft"]["p99_s"] - TTFT_S) * 1e3,
        "ttft_mean_vs_emu_ms": lat["ttft"]["mean_s"] * 1e3 - gt["ttft_us"]["mean"] / 1e3,
        "itl_p50_ms": lat["itl"]["p50_s"] * 1e3, "itl_p99_ms": lat["itl"]["p99_s"] * 1e3,
        # closed loop: each stream's cycle is its request's e2e plus the gap to its next send, so the
        # mean gap is what the throughput lost that the responses' own times do not explain
        "e2e_mean_ms": lat["e2e"]["mean_s"] * 1e3,
        "gap_mean_ms": (streams * TOKENS / (toks / win_s) - lat["e2e"]["mean_s"]) * 1e3 if toks else 0.0,
        "emu_itl_p50_ms": gt["itl_us"]["p50"] / 1e3, "emu_itl_p99_ms": gt["itl_us"]["p99"] / 1e3,
        "emu_late_p99_ms": gt["lateness_us"].get("p99", 0) / 1e3,
        "gen_cpu_pct": 100 * (cpu_measure or 0.0),
        "gen_us_per_token": 1e6 * (cpu_measure or 0.0) / (toks / win_s) if toks else 0.0, "gen_rss_mb": rss_max / 2**20,
        "gen_sleeps_s": sleeps, "core_steal_pct": steal, "core_softirq_pct": softirq,
        "rss_samples": rss_samples,
    }


def run_floor(streams: int, urls: list[str], gen_cpu: int | None, warmup_s: float, measure_s: float,
              tmp: Path, gt_urls: list[str], ramp_s: float = 0.0) -> dict:
    """The same level read by ``bare_reader.py`` (nothing per token but a kernel stamp), on the
    generator's core, against the same emulators over the same kind of window: the floor.

    Where the floor misses a target too, the machine (its emulators, the kernel's loopback path,
    other guests) cannot show that target in that run, whatever the product does."""
    out = tmp / f"floor{streams}.json"
    proc = subprocess.Popen([*_pin(gen_cpu), sys.executable, str(ROOT / "benchmarks" / "bare_reader.py"),
                             "--url", ",".join(urls), "--streams", str(streams), "--warmup-s", str(warmup_s),
                             "--measure-s", str(measure_s), "--ramp-s", str(ramp_s), "--kernel-stamps",
                             "--signal", "--json", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    core0 = core1 = gt = None
    for line in proc.stdout:
        if line.startswith("# measure"):
            core0 = core_ticks(gen_cpu)
            for u in urls:   # ground truth over the measured window only
                _post(u + "/emulator/ground_truth/reset")
        elif line.startswith("# end"):
            core1 = core_ticks(gen_cpu)
            gt = _gt_total(gt_urls)
    if proc.wait() != 0 or gt is None:
        raise SystemExit(f"bare_reader.py failed at {streams} streams (exit {proc.returncode})")
    r = json.loads(out.read_text())[0]
    steal, softirq = core_share(core0, core1)
    return {
        "streams": streams, "code": "floor", "variant": "bare reader", "ramp_s": ramp_s,
        "ideal_tok_s": r["ideal_tok_s"], "tok_s": r["tok_s"], "pct_ideal": r["pct_ideal"], "requests": 0, "errors": 0,
        "ttft_mean_err_ms": r["ttft_mean_err_ms"], "ttft_p99_err_ms": r["ttft_p99_err_ms"],
        "ttft_mean_vs_emu_ms": r["ttft_mean_err_ms"] + TTFT_S * 1e3 - gt["ttft_us"]["mean"] / 1e3,
        "itl_p50_ms": r["itl_p50_ms"], "itl_p99_ms": r["itl_p99_ms"], "e2e_mean_ms": 0.0, "gap_mean_ms": 0.0,
        "emu_itl_p50_ms": gt["itl_us"]["p50"] / 1e3, "emu_itl_p99_ms": gt["itl_us"]["p99"] / 1e3,
        "emu_late_p99_ms": gt["lateness_us"].get("p99", 0) / 1e3,
        "gen_cpu_pct": r["cpu_pct"], "gen_us_per_token": r["us_per_token"], "gen_rss_mb": r["rss_mb"],
        "gen_sleeps_s": 0.0, "core_steal_pct": steal, "core_softirq_pct": softirq, "rss_samples": [],
    }


def _reader() -> str:
    """Which stream reader the generator gets on this machine (harness.loadgen.native)."""
    sys.path.insert(0, str(ROOT))
    from harness.loadgen.native import load
    return "C pass (fastread.c)" if load() is not None else "Python (no C compiler, or SLM_NATIVE=0)"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--streams", default="64,256,512,1024")
    ap.add_argument("--warmup-s", type=float, default=3.0)
    ap.add_argument("--ramp-s", default="0", metavar="S[,S]",
                    help="start the streams over S seconds (a ramp stage: Locust spawns them one by one) "
                         "instead of all at once (0); one cycle (1.32) spreads their phases evenly. Several "
                         "values run alternately at each level, like --variants")
    ap.add_argument("--measure-s", type=float, default=10.0)
    ap.add_argument("--emulator-cpu", type=int, default=0)
    ap.add_argument("--generator-cpu", type=int, default=None,
                    help="core for the generator (default: the one after the emulator cores)")
    ap.add_argument("--emulator-replicas", type=int, default=1)
    ap.add_argument("--emulator-processes", type=int, default=1,
                    help="emulator processes on cores EMULATOR_CPU.. (when one emulator core is the limit)")
    ap.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    ap.add_argument("--json", default=None, help="write the rows here")
    ap.add_argument("--rps", action="store_true",
                    help="loopback packets received on every core but the generator's (root; restored after): "
                         "the emulator's side of each ACK is not charged to the generator's core, as with two "
                         "hosts (benchmarks/loopback_rps.py); idle cores poll for the runs (BENCH_CPU_LATENCY_US, "
                         "benchmarks/host.py), so the packets handed to them do not wait for a halted vCPU")
    ap.add_argument("--diag", action="store_true", help="print where the TTFT error sits (quantiles, stalls)")
    ap.add_argument("--compare", default=None, metavar="DIR",
                    help="another checkout of this repository: each level also runs its generator, "
                         "alternating with this one against the same emulator (A/B on a shared machine)")
    ap.add_argument("--floor", action="store_true",
                    help="each run of a level is followed by bare_reader.py at that level on the same cores and "
                         "emulators (code 'floor'): what the machine lets a reader with nothing per token show")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each level (and of each side)")
    ap.add_argument("--protocol", default="tgi", metavar="P[,P]",
                    help="the API read: tgi (TGI's native stream, data:{), openai-completions or openai-chat "
                         "(framed as vLLM, SGLang and OpenAI do, data: {); several run alternately at each level "
                         "against the same emulators (an A/B on a shared machine)")
    ap.add_argument("--tls", nargs="?", const="on", default="off", choices=["on", "both"],
                    help="https: emulators serve TLS with a certificate made for the run (openssl) and the "
                         "generator decrypts every stream; 'both': plaintext and TLS alternately at each level")
    ap.add_argument("--variants", default="", metavar="ENV;ENV",
                    help="';'-separated generator environments run alternately at each level against the same "
                         "emulator, e.g. ';SLM_NATIVE=0' (default settings, then the Python reader)")
    args = ap.parse_args(argv)
    variants = args.variants.split(";") if args.variants else [""]
    protocols = [x.strip() for x in args.protocol.split(",") if x.strip()]
    if not protocols or set(protocols) - {"tgi", "openai-completions", "openai-chat"}:
        ap.error("--protocol: tgi, openai-completions or openai-chat, comma-separated")
    transports = {"off": [False], "on": [True], "both": [False, True]}[args.tls]
    print(f"# generator reader: {_reader()}; protocol {', '.join(protocols)}"
          f"{'; https' if args.tls == 'on' else '; http and https alternately' if args.tls == 'both' else ''}",
          flush=True)
    if args.floor and (args.tls != "off" or protocols != ["tgi"]):
        ap.error("--floor reads TGI's plain framing only (bare_reader.py)")
    emu_cpu = None if args.no_pin else args.emulator_cpu
    gen_cpu = None if args.no_pin else (args.generator_cpu if args.generator_cpu is not None
                                         else args.emulator_cpu + args.emulator_processes)
    if args.rps and gen_cpu is None:
        ap.error("--rps needs the generator pinned (no --no-pin)")
    emu_cpus = () if emu_cpu is None else tuple(range(emu_cpu, emu_cpu + args.emulator_processes))
    rows = []
    with steer_loopback(gen_cpu if args.rps else None), tempfile.TemporaryDirectory(prefix="fidelity-") as d:
        tmp = Path(d)
        emus = []
        # one set of emulators per transport (the OpenAI routes framed "data: {"; TGI's is unchanged)
        sets: dict[bool, tuple[list[str], list[str], Path | None]] = {}
        for tls in transports:
            extra: tuple[str, ...] = ("--sse-space",)
            ca_file = None
            if tls:
                ca_file, key = make_cert(tmp)
                extra += ("--tls-cert", str(ca_file), "--tls-key", str(key))
            urls, gt_urls = [], []
            for k in range(args.emulator_processes):
                e, u = start_emulator(None if emu_cpu is None else emu_cpu + k, args.emulator_replicas, tmp,
                                      k + 100 * tls, extra)
                emus.append(e)
                urls += u
                gt_urls.append(u[0])
            sets[tls] = (urls, gt_urls, ca_file)
        urls, gt_urls, _ = sets[transports[0]]
        try:
            roots = [ROOT] + ([Path(args.compare).resolve()] if args.compare else [])
            for n in [int(x) for x in args.streams.split(",")]:
                for _ in range(args.repeat):
                    for root in roots:
                        for v, ramp, proto, tls in [(v, float(x), pr, t) for v in variants
                                                    for x in args.ramp_s.split(",") for pr in protocols
                                                    for t in transports]:
                            t_urls, t_gt, ca = sets[tls]
                            with cpu_latency(run_latency(v, args.rps)):
                                rows.append(run_level(n, t_urls, gen_cpu, args.warmup_s, args.measure_s, tmp,
                                                      t_gt, root, args.diag, v.strip(), ramp, emu_cpus, proto, ca))
                            r = rows[-1]
                            print(f"{n} streams done ({r['code'] or 'this tree'} {v} {r['protocol']}): "
                                  f"{r['pct_ideal']:.2f}% of ideal", file=sys.stderr, flush=True)
                    if args.floor:
                        for ramp in [float(x) for x in args.ramp_s.split(",")]:
                            with cpu_latency(run_latency("", args.rps)):
                                rows.append(run_floor(n, urls, gen_cpu, args.warmup_s, args.measure_s, tmp, gt_urls, ramp))
                            print(f"{n} streams done (floor): {rows[-1]['pct_ideal']:.2f}% of ideal",
                                  file=sys.stderr, flush=True)
        finally:
            for emu in emus:
                emu.terminate()
                try:
                    emu.wait(5)
                except subprocess.TimeoutExpired:
                    emu.kill()
    hdr = ("protocol", "streams", "code", "variant", "ramp s", "ideal tok/s", "tok/s", "% ideal", "err", "TTFT mean err ms", "TTFT p99 err ms",
           "TTFT vs emu ms", "e2e mean ms", "gap mean ms", "ITL p50 ms (emu)", "ITL p99 ms (emu)", "emu late p99 ms", "gen CPU %",
           "gen us/token", "gen sleeps/s", "gen core steal %", "gen core softirq %", "gen RSS MB")
    print("| " + " | ".join(hdr) + " |")
    print("|" + "---|" * len(hdr))
    for r in rows:
        print(f"| {r.get('protocol', 'tgi')} | {r['streams']} | {r['code'] if r['code'] == 'floor' else 'B' if r['code'] else 'A'} | {r['variant'] or 'default'} | {r['ramp_s']:g} | {r['ideal_tok_s']:.0f} | {r['tok_s']:.0f} | {r['pct_ideal']:.2f} | "
              f"{r['errors']} | {r['ttft_mean_err_ms']:+.2f} | {r['ttft_p99_err_ms']:+.2f} | "
              f"{r['ttft_mean_vs_emu_ms']:+.2f} | {r['e2e_mean_ms']:.1f} | {r['gap_mean_ms']:.1f} | {r['itl_p50_ms']:.2f} ({r['emu_itl_p50_ms']:.2f}) | "
              f"{r['itl_p99_ms']:.2f} ({r['emu_itl_p99_ms']:.2f}) | {r['emu_late_p99_ms']:.2f} | "
              f"{r['gen_cpu_pct']:.0f} | {r['gen_us_per_token']:.1f} | {r['gen_sleeps_s']:.0f} | "
              f"{r['core_steal_pct']:.1f} | {r['core_softirq_pct']:.1f} | {r['gen_rss_mb']:.0f} |")
    if args.compare:
        print(f"\ncode A: this tree; B: {Path(args.compare).resolve()}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
