"""Soak: hours-long load against the emulator, and whether anything leaks or goes missing.

Runs ``slm-harness run`` at ``--streams`` closed-loop streams for ``--minutes`` against emulated
replicas, with the InfluxDB store on (a local ``influxd``, or ``--influx-url``). Every
``--every-s`` it reads the load generator's resident memory, open files and threads from /proc.
At the end every request is accounted for: the rows of ``requests.parquet``, the request points
in InfluxDB for the run, and the requests the emulator received (its own ground truth) must be
the same number. Prints one table row per sample and the accounting.

    python benchmarks/soak.py --minutes 30 --streams 256
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.records.rundir import read_table  # noqa: E402
from harness.store import InfluxQLReader, InfluxTarget  # noqa: E402
from tests.support.processes import harness_env, start_emulator  # noqa: E402  (the test suite's launchers)

SCENARIO = """
name: soak
target: {{protocol: tgi, request_timeout_s: 60}}
workload: {{seed: 1, prompt_tokens: {{dist: fixed, value: 64}}, output_tokens: {{dist: uniform, min: 16, max: 128}}}}
load: {{mode: concurrency, levels: [{streams}], warmup_s: 5, duration_s: {duration}, cooldown_s: 0}}
telemetry: {{enabled: false}}
store: {{influxdb: {{url: '{influx}', api: v1, database: soak}}}}
"""


def proc_stats(pid: int) -> dict:
    """Resident memory (MiB), open file descriptors and threads of ``pid`` from /proc."""
    st = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        if k in ("VmRSS", "Threads"):
            st[k] = int(v.split()[0])
    return {"rss_mib": st.get("VmRSS", 0) / 1024, "threads": st.get("Threads", 0),
            "fds": len(os.listdir(f"/proc/{pid}/fd"))}


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--streams", type=int, default=256)
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--profile", default="h100-smollm2-135m")
    ap.add_argument("--every-s", type=float, default=60.0)
    ap.add_argument("--influx-url", help="an InfluxDB 1.x to write to (default: start influxd)")
    ap.add_argument("--keep", help="keep the run directory here")
    ap.add_argument("--no-store", action="store_true",
                    help="without InfluxDB (to tell the store's memory from the generator's)")
    args = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="soak-"))
    influx = None
    if args.no_store:
        influx_url = None
    elif args.influx_url:
        influx_url = args.influx_url.rstrip("/")
    else:
        from tests.support.servers import InfluxServer   # the test suite's influxd launcher

        influx = InfluxServer(tmp / "influxdb").start()
        influx_url = influx.url
    emu, urls = start_emulator(tmp, "--replicas", str(args.replicas), profile=args.profile, timeout=60)
    results = Path(args.keep) if args.keep else tmp / "results"
    scen = tmp / "soak.yaml"
    text = SCENARIO.format(streams=args.streams, duration=args.minutes * 60, influx=influx_url)
    if influx_url is None:
        text = "\n".join(ln for ln in text.splitlines() if not ln.startswith("store:"))
    scen.write_text(text)
    cmd = [sys.executable, "-m", "harness", "run", str(scen), "--url", ",".join(urls),
           "--replicas", str(args.replicas), "--results", str(results), "--json",
           str(tmp / "summary.json"), "-q"]
    print(f"# soak: {args.minutes:g} min, {args.streams} streams, {args.replicas} emulated "
          f"replicas ({args.profile}), InfluxDB {influx_url or 'off'}", flush=True)
    print(f"{'t_min':>6} {'rss_mib':>8} {'fds':>5} {'threads':>7} {'received':>9}", flush=True)
    samples = []
    try:
        # output to a file: a pipe read only at the end fills up (64 KiB) and stalls the run
        run_log = open(tmp / "run.log", "w")
        run = subprocess.Popen(cmd, cwd=ROOT, env=harness_env(),
                               stdout=run_log, stderr=subprocess.STDOUT, text=True)
        t0 = time.monotonic()
        next_at = t0 + args.every_s                 # the first sample once the load is up
        while run.poll() is None:
            if time.monotonic() >= next_at:
                try:
                    s = proc_stats(run.pid)
                except (OSError, ValueError):
                    break
                gt = _get(f"{urls[0]}/emulator/ground_truth")["total"]
                s.update(t_min=(time.monotonic() - t0) / 60, received=gt["requests_received"])
                samples.append(s)
                print(f"{s['t_min']:6.1f} {s['rss_mib']:8.1f} {s['fds']:5d} {s['threads']:7d} "
                      f"{s['received']:9d}", flush=True)
                next_at += args.every_s
            time.sleep(0.5)
        run.wait()
        run_log.close()
        if run.returncode not in (0, 1):
            print((tmp / "run.log").read_text()[-3000:])
            raise SystemExit(f"the run exited with {run.returncode}")
        (run_dir,) = [p for p in results.iterdir() if p.is_dir() and p.name.startswith("soak-")]
        manifest = json.loads((run_dir / "manifest.json").read_text())
        req = read_table(run_dir, "requests")
        gt = _get(f"{urls[0]}/emulator/ground_truth")["total"]
        stored = len(req)
        if influx_url is not None:
            db = InfluxQLReader(InfluxTarget(url=influx_url, api="v1", database="soak"))
            stored = db.count("request", "request_id", f"run_id='{manifest['run_id']}'")
            db.close()
    finally:
        emu.terminate()
        emu.wait(20)
        if influx is not None:
            influx.kill()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    store = manifest.get("store") or {}
    errors = int(req.error_class.notna().sum())
    print()
    print(f"{'requests.parquet':>18} {'InfluxDB':>9} {'emulator':>9} {'errors':>7} "
          f"{'store acked':>11} {'spooled':>8} {'dropped':>8}")
    print(f"{len(req):18d} {stored:9d} {gt['requests_received']:9d} {errors:7d} "
          f"{store.get('acked', 0):11d} {store.get('spooled', 0):8d} {store.get('dropped', 0):8d}")
    if len(samples) >= 2:
        first, last = samples[0], samples[-1]
        growth = (last["rss_mib"] - first["rss_mib"]) / first["rss_mib"] * 100
        print(f"RSS {first['rss_mib']:.1f} -> {last['rss_mib']:.1f} MiB ({growth:+.1f}%), "
              f"fds {first['fds']} -> {last['fds']}, threads {first['threads']} -> {last['threads']}")
    ok = len(req) == stored == gt["requests_received"]
    print("every request accounted for" if ok else "MISMATCH: requests missing somewhere")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
