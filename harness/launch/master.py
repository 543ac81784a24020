"""The compose stack's Locust master: plain Locust with its web UI, then the report.

``python -m harness.launch.master --results /results [--linger-s 10] -- LOCUST_ARGS...``

Locust runs with ``--autostart`` so that the run starts by itself once the expected workers are
connected while the web UI stays live on its port (plain ``--headless`` has no web UI). When the
plan ends, the slm-harness plugin writes its summary (``--slm-json``); the web UI is left up for
``--linger-s`` seconds, Locust is stopped, ``slm-harness report`` renders the run directory, and
this process exits with the run's SLO verdict: 0 met, 1 violated, 2 bad input, 3 no run.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def _stop(proc: subprocess.Popen, grace_s: float = 15.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.launch.master")
    ap.add_argument("--results", default="/results", help="the results directory (a volume)")
    ap.add_argument("--linger-s", type=float, default=10.0,
                    help="keep the web UI up this long after the run ends")
    ap.add_argument("--no-report", action="store_true", help="skip `slm-harness report`")
    ap.add_argument("locust_args", nargs=argparse.REMAINDER)
    args = ap.parse_args(argv)
    locust_args = [a for a in args.locust_args if a != "--"] if args.locust_args[:1] == ["--"] \
        else args.locust_args
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    summary = results / f".summary-{time.time_ns()}.json"
    cmd = ["locust", *locust_args, "--slm-results", str(results), "--slm-json", str(summary)]
    print("stack master:", " ".join(cmd), flush=True)
    proc = subprocess.Popen(cmd)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda s, f: proc.send_signal(s))
    code = None
    while code is None:
        if summary.exists():
            time.sleep(0.5)                       # let the plugin finish writing
            print(f"stack master: run finished; web UI stays up {args.linger_s:g} s", flush=True)
            time.sleep(args.linger_s)
            _stop(proc)
            break
        code = proc.poll()
        time.sleep(0.2)
    if not summary.exists():
        print(f"stack master: Locust exited with code {code} before the run finished",
              file=sys.stderr, flush=True)
        return code if code == 2 else 3
    data = json.loads(summary.read_text())
    summary.unlink()
    run_dir = data.get("run_dir")
    verdict = 0 if data.get("slo_ok") else 1
    if run_dir:
        (results / "latest").unlink(missing_ok=True)
        os.symlink(Path(run_dir).name, results / "latest")
        (Path(run_dir) / "locust-summary.json").write_text(json.dumps(data, indent=2))
        if not args.no_report:
            r = subprocess.run([sys.executable, "-m", "harness", "report", run_dir, "-q"])
            if r.returncode not in (0, 1):
                print(f"stack master: report failed with code {r.returncode}", file=sys.stderr)
    print(f"stack master: SLO {'met' if verdict == 0 else 'violated'}; exit {verdict}", flush=True)
    return verdict


if __name__ == "__main__":
    sys.exit(main())
