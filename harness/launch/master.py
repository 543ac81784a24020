"""The compose stack's Locust master: plain Locust with its web UI; its exit code is the run's.

``python -m harness.launch.master --results /results [--linger-s 10] -- LOCUST_ARGS...``

First every replica named by ``--host`` must answer ``GET /health`` (TGI downloads and loads the
model first; compose cannot express "the replicas of whichever profile is active" as a
dependency). Locust then runs with ``--autostart`` so that the run starts by itself once the
expected workers are connected while the web UI stays live on its port (plain ``--headless``
has no web UI). When the plan ends, the slm-harness plugin writes the run directory's report
(report.html, summary.json, cells.csv) and its summary (``--slm-json``); Locust leaves the web UI
up for ``--linger-s`` seconds (``--autoquit``) and exits with the engine's exit code
(:func:`harness.engine.outcome.exit_code`: 0 met, 1 SLO violated, 2 bad input, 3 target
unreachable, 4 a measurement invalid, 130 stopped early), which this process returns. 3 also when
the replicas never became healthy or Locust ended before the run did.
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


def _host_urls(locust_args: list[str]) -> list[str]:
    for i, a in enumerate(locust_args):
        if a in ("--host", "-H") and i + 1 < len(locust_args):
            return [u.strip() for u in locust_args[i + 1].split(",") if u.strip()]
        if a.startswith("--host="):
            return [u.strip() for u in a.split("=", 1)[1].split(",") if u.strip()]
    return []


def _access(locust_args: list[str]):
    """The scenario's TLS settings and headers (a hosted endpoint's token) for the health checks;
    None when the scenario cannot be read (Locust then reports it, exit 2)."""
    from harness.errors import InputError

    for i, a in enumerate(locust_args):
        if a == "--scenario" and i + 1 < len(locust_args):
            from harness.protocols.access import Access
            from harness.scenario.loader import load_scenario

            try:
                return Access.from_target(load_scenario(locust_args[i + 1]).target)
            except (InputError, OSError):
                return None
    return None


def _wait_healthy(urls: list[str], timeout_s: float, access=None) -> bool:
    from harness.launch.health import is_healthy

    deadline = time.monotonic() + timeout_s
    waiting = list(urls)
    while waiting:
        waiting = [u for u in waiting if not is_healthy(u, timeout_s=2.0, access=access)]
        if not waiting:
            break
        if time.monotonic() > deadline:
            print(f"stack master: not healthy after {timeout_s:g} s: {', '.join(waiting)}",
                  file=sys.stderr, flush=True)
            return False
        time.sleep(1.0)
    print(f"stack master: {len(urls)} replica(s) healthy", flush=True)
    return True


#: what each of the engine's exit codes says (harness/engine/outcome.py)
VERDICTS = {0: "SLO met", 1: "SLO violated", 2: "bad input", 3: "target unreachable",
            4: "a measurement is invalid", 130: "stopped early"}


def engine_code(code: int | None, run_dir: str | None) -> int:
    """Locust's exit code when it is one of the engine's; otherwise (Locust had to be killed
    after the run ended) the engine's rule applied to the run directory."""
    if code in VERDICTS:
        return code
    from harness.engine.outcome import exit_code

    status, analysis = "interrupted", None
    if run_dir:
        try:
            status = json.loads((Path(run_dir) / "manifest.json").read_text()).get("status", status)
            from harness.analysis.summary import analyze

            analysis = analyze(run_dir)
        except Exception as e:  # noqa: BLE001 - no analysis: the rule says 1 (nothing measured)
            print(f"stack master: the run could not be analysed: {type(e).__name__}: {e}",
                  file=sys.stderr, flush=True)
    return exit_code(status, analysis, "every")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.launch.master")
    ap.add_argument("--results", default="/results", help="the results directory (a volume)")
    ap.add_argument("--linger-s", type=float, default=10.0,
                    help="keep the web UI up this long after the run ends")
    ap.add_argument("--no-report", action="store_true",
                    help="do not render report.html when Locust ended without writing it")
    ap.add_argument("--health-timeout-s", type=float, default=900.0,
                    help="how long to wait for every replica's /health before giving up")
    ap.add_argument("locust_args", nargs=argparse.REMAINDER)
    args = ap.parse_args(argv)
    locust_args = [a for a in args.locust_args if a != "--"] if args.locust_args[:1] == ["--"] \
        else args.locust_args
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    urls = _host_urls(locust_args)
    if not _wait_healthy(urls, args.health_timeout_s, _access(locust_args)):
        return 3
    summary = results / f".summary-{time.time_ns()}.json"
    cmd = [sys.executable, "-m", "locust", *locust_args, "--autoquit", f"{args.linger_s:g}",
           "--slm-results", str(results), "--slm-json", str(summary)]
    print("stack master:", " ".join(cmd), flush=True)
    proc = subprocess.Popen(cmd)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda s, f: proc.send_signal(s))
    code = None
    while code is None:
        if summary.exists():
            print(f"stack master: run finished; web UI stays up {args.linger_s:g} s", flush=True)
            try:
                code = proc.wait(args.linger_s + 30)
            except subprocess.TimeoutExpired:
                _stop(proc)
                code = proc.returncode
            break
        code = proc.poll()
        time.sleep(0.2)
    if not summary.exists():
        print(f"stack master: Locust exited with code {code} before the run finished",
              file=sys.stderr, flush=True)
        return code if code in (2, 3, 130) else 3
    data = json.loads(summary.read_text())
    summary.unlink()
    run_dir = data.get("run_dir")
    verdict = engine_code(code, run_dir)
    if run_dir:
        (results / "latest").unlink(missing_ok=True)
        os.symlink(Path(run_dir).name, results / "latest")
        (Path(run_dir) / "locust-summary.json").write_text(json.dumps(data, indent=2))
        try:
            from harness.launch.storesync import sync_run_to_store

            st = sync_run_to_store(run_dir)
            if st["status"] == "written":
                print(f"stack master: {st['requests']} request records and {st['windows']} "
                      f"windows written to InfluxDB after the run (acked {st['acked']}, "
                      f"spooled {st['spooled']})", flush=True)
        except Exception as e:  # noqa: BLE001 - the run's files are intact; say why, go on
            print(f"stack master: records not written to InfluxDB: {type(e).__name__}: {e}",
                  file=sys.stderr, flush=True)
        if not args.no_report and not (Path(run_dir) / "report.html").exists():
            # the plugin writes it at the run's end; only a Locust killed before that lacks it
            from harness.engine.outcome import write_outputs

            write_outputs(Path(run_dir))
    print(f"stack master: {VERDICTS.get(verdict, 'exit')}; exit {verdict}", flush=True)
    return verdict


if __name__ == "__main__":
    sys.exit(main())
