"""What scraping the replicas' /metrics costs the load generator's process.

    PYTHONPATH=. python benchmarks/server_metrics_cost.py            # ~1.5 minutes
    PYTHONPATH=. python benchmarks/server_metrics_cost.py --quick    # shorter windows

Serves a TGI-sized exposition (~2,000 samples, mostly histogram buckets) for 4 replicas from one
HTTP server process, then measures, over the same window, the CPU time of this process (standing
in for the load generator's) for: no scraping; the scraper as a thread of this process (how a
run scraped before it had a process of its own); and a run's scraping as it is
(:class:`harness.engine.server_metrics.ServerMetrics`: a process of its own), whose own CPU time
is in the table too. CPU time, not wall time: the figures hold on a host busy with other work.
Prints one table.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.exposition import tgi_sized_exposition  # noqa: E402  (the test's exposition)

REPLICAS = 4


def measure(kind: str, urls: list[str], secs: float, full_every_s: float, tmp: Path) -> dict:
    from harness.engine.server_metrics import ServerMetrics
    from harness.records.rundir import RunDir
    from harness.scenario.loader import parse_scenario
    from harness.telemetry.server_metrics import Scraper

    scen = parse_scenario(f"name: smcost\ntelemetry: {{server_metrics: {{rate_hz: 2, "
                          f"full_every_s: {full_every_s}}}}}\n")
    rd = RunDir.create(tmp, f"smcost-{kind}")
    sm = thread = None
    rows = rd.appender("server_metrics_thread", _schema())
    if kind == "process":
        sm = ServerMetrics(scen, rd)
        sm.start(urls)
    elif kind == "thread":
        cfg = scen.telemetry.server_metrics
        thread = Scraper(urls, rows.extend, rate_hz=cfg.rate_hz, timeout_s=cfg.timeout_s,
                         full_every_s=cfg.full_every_s, run_id=rd.run_id).start()
    cpu0 = time.process_time()
    time.sleep(secs)
    here = time.process_time() - cpu0
    out = {"kind": kind, "generator_cpu_per_s": here / secs, "scraper_cpu_per_s": None,
           "scrapes": None}
    if thread is not None:
        got = thread.stop()
        out["scrapes"] = sum(got["scrapes"].values())
    if sm is not None:
        sm.stop()
        sm.close()
        m = rd.manifest["server_metrics"]
        out["scrapes"] = sum(m["scrapes"].values())
        out["scraper_cpu_s_total"] = m.get("cpu_s")
    rd.close()
    return out


def _schema():
    from harness.telemetry.server_metrics import server_sample_schema

    return server_sample_schema()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    secs = 5.0 if a.quick else 15.0
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        www = tmp / "www"
        body = tgi_sized_exposition()
        for k in range(REPLICAS):
            (www / f"r{k}").mkdir(parents=True)
            (www / f"r{k}" / "metrics").write_text(body)
        srv = subprocess.Popen([sys.executable, "-u", "-m", "http.server", "0", "--bind",
                                "127.0.0.1", "--directory", str(www)], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
        try:
            port = int(srv.stdout.readline().split(" port ")[1].split()[0])
            urls = [f"http://127.0.0.1:{port}/r{k}" for k in range(REPLICAS)]
            rows = []
            for full in (5.0, 0.0):
                for kind in ("none", "thread", "process"):
                    r = measure(kind, urls, secs, full, tmp)
                    r["full_every_s"] = full
                    rows.append(r)
        finally:
            srv.terminate()
            srv.wait(10)
    print(f"{REPLICAS} replicas x ~{body.count(chr(10))} samples, 2 Hz, {secs:.0f} s windows")
    print(f"| full_every_s | scraping | generator process CPU (s per s) | scrapes | "
          f"scraper process CPU (s, whole life) |")
    print("|---|---|---|---|---|")
    names = {"none": "off", "thread": "thread in the generator's process",
             "process": "process of its own"}
    for r in rows:
        sc = "" if r["scrapes"] is None else r["scrapes"]
        own = r.get("scraper_cpu_s_total")
        print(f"| {r['full_every_s']:g} | {names[r['kind']]} | {r['generator_cpu_per_s']:.4f} | "
              f"{sc} | {'' if own is None else f'{own:.2f}'} |")


if __name__ == "__main__":
    main()
