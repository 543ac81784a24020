"""The replicas' own /metrics scraped during a run: rows in the run directory and in a real
InfluxDB, per-cell queue/batch figures in summary.json and cells.csv (emulator TGI and vLLM
personalities), and a dead or broken /metrics endpoint counted, never fatal."""

from __future__ import annotations

import csv
import http.server
import json
import os
import subprocess
import sys
import threading

import pandas as pd
import pytest

from harness.store.reader import InfluxQLReader
from harness.store.target import InfluxTarget
from harness.telemetry.server_metrics import Scraper, parse

from tests.support.emulator import emulate_process
from tests.support.exposition import tgi_sized_exposition
from tests.support.ports import dead_url
from tests.support.processes import ROOT, harness, harness_env, prefix_proxy, stop

SCEN = """
name: scrape
target: {protocol: tgi, launcher: {kind: emulator, profile: h100-smollm2-135m}}
workload: {seed: 2, prompt_tokens: {dist: fixed, value: 16}, output_tokens: {dist: fixed, value: 64}}
load: {mode: concurrency, levels: [2, 32], replicas: [2], warmup_s: 0.5, duration_s: 2, cooldown_s: 0.2}
slo: {ttft_s: {p99: 5.0}}
telemetry: {source: emulated, rate_hz: 20, server_metrics: {rate_hz: 4}}
"""


def _cli(*args):
    return harness(*args, timeout=300, env=harness_env(INFLUXDB_TOKEN=None))


@pytest.mark.slow
def test_sweep_scrapes_every_replica_into_run_dir_store_and_summary(influxdb, tmp_path):
    scen = tmp_path / "s.yaml"
    scen.write_text(SCEN + f"store:\n  influxdb: {{url: {influxdb.url}, api: v1, database: harness}}\n")
    p = _cli("sweep", str(scen), "--results", str(tmp_path / "res"), "-q")
    assert p.returncode in (0, 4), p.stderr[-3000:]
    (run,) = list((tmp_path / "res").iterdir())
    manifest = json.loads((run / "manifest.json").read_text())
    urls = manifest["urls"]
    assert len(urls) == 2

    rows = pd.read_parquet(run / "server_metrics.parquet")
    assert set(rows["replica"]) == set(urls)
    assert {"tgi_queue_size", "tgi_batch_current_size", "tgi_batch_current_max_tokens",
            "tgi_request_count_total", "tgi_request_duration_bucket"} <= set(rows["name"])
    # histograms whole at the first scrape and every full_every_s (5 s); the gauges every scrape
    per = rows.groupby("name")["ts_ns"].nunique()
    assert 1 <= per["tgi_request_duration_bucket"] < per["tgi_queue_size"]
    assert per["tgi_queue_size"] == rows["ts_ns"].nunique()
    # a counter keeps its name between full scrapes (its TYPE line kept with it)
    assert per["tgi_request_count_total"] == per["tgi_queue_size"] and "tgi_request_count" not in per
    # the same wall clock as the requests: scrapes before the first request, and beyond every
    # measured window's end
    req = pd.read_parquet(run / "requests.parquet")
    win = pd.read_parquet(run / "windows.parquet")
    win = win[win["phase"] == "measure"]
    assert rows["ts_ns"].min() < req["start_ns"].min() and rows["ts_ns"].max() > win["end_ns"].max()
    sm = manifest["server_metrics"]
    assert all(sm["failures"][u] == 0 and sm["scrapes"][u] >= 8 for u in urls)
    assert sum(sm["samples"].values()) == len(rows)

    reader = InfluxQLReader(InfluxTarget(url=influxdb.url, api="v1", database="harness"))
    try:
        # every sample but histograms' buckets (store_buckets: false)
        kept = rows[~rows["name"].str.endswith("_bucket")]
        assert 0 < len(kept) < len(rows)
        assert reader.count("server_metric", "value", f"run_id = '{run.name}'") == len(kept)
        q = reader.query(f"SELECT max(\"value\") FROM \"server_metric\" WHERE run_id = '{run.name}' "
                         "AND \"name\" = 'tgi_batch_current_size' GROUP BY \"replica\"")
        assert not q.empty
    finally:
        reader.close()

    summary = json.loads((run / "summary.json").read_text())
    cells = {c["cell"]: c for c in summary["cells"]}
    # 2 streams on 2 replicas: at most 2 running on one; 32 streams: ~16 on each, nothing queued
    lo, hi = cells["r2-c2"], cells["r2-c32"]
    assert set(hi["server_metrics"]) == set(urls)
    assert 0 < lo["server_running_max"] <= 2
    assert 10 <= hi["server_running_mean"] <= 32 and hi["server_running_max"] <= 32
    assert hi["server_queue_mean"] is not None and hi["server_queue_max"] >= hi["server_queue_mean"]
    for u in urls:
        assert hi["server_metrics"][u]["running_mean"] > lo["server_metrics"][u]["running_mean"]
    with (run / "cells.csv").open() as fh:
        got = {r["cell"]: r for r in csv.DictReader(fh)}
    assert float(got["r2-c32"]["server_running_mean"]) == pytest.approx(hi["server_running_mean"])


@pytest.mark.slow
def test_vllm_personality_gives_waiting_running_and_kv_cache(tmp_path):
    scen = tmp_path / "s.yaml"
    scen.write_text(SCEN.replace("protocol: tgi", "protocol: openai-completions, model: m")
                    .replace("levels: [2, 32]", "levels: [8]").replace("replicas: [2]", "replicas: [1]")
                    .replace("source: emulated", "source: none"))
    with emulate_process("cpu-demo", "--server", "vllm") as url:
        p = _cli("run", str(scen), "--url", url, "--results", str(tmp_path / "res"), "-q")
    assert p.returncode in (0, 1, 4), p.stderr[-3000:]
    (run,) = list((tmp_path / "res").iterdir())
    rows = pd.read_parquet(run / "server_metrics.parquet")
    assert {"vllm:num_requests_running", "vllm:num_requests_waiting",
            "vllm:gpu_cache_usage_perc"} <= set(rows["name"])
    assert json.loads(rows[rows["name"] == "vllm:num_requests_running"]["labels"].iloc[0]) == {
        "model_name": json.loads(rows[rows["name"] == "vllm:num_requests_waiting"]["labels"].iloc[0])["model_name"]}
    (cell,) = json.loads((run / "summary.json").read_text())["cells"]
    assert 0 < cell["server_running_max"] <= 8
    assert 0 < cell["server_kv_cache_max"] <= 1


class _Handler(http.server.BaseHTTPRequestHandler):
    body = b""
    status = 200
    seen_headers: list = []

    def do_GET(self):  # noqa: N802
        type(self).seen_headers.append(dict(self.headers))
        self.send_response(self.status)
        self.send_header("content-length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *a):
        pass


def _serve(body: bytes, status: int = 200):
    h = type("H", (_Handler,), {"body": body, "status": status, "seen_headers": []})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), h)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, h, f"http://127.0.0.1:{srv.server_address[1]}"


def test_unknown_server_kept_as_is_and_failures_counted_not_raised():
    good, gh, good_url = _serve(b'# TYPE my_gauge gauge\nmy_gauge{a="x",b="y"} 3.5\nother_total 7\n')
    bad, _, bad_url = _serve(b"oops", status=500)
    junk, _, junk_url = _serve(b"this is { not prometheus\n")
    dead = dead_url()
    got = []
    sc = Scraper([good_url, bad_url, junk_url, dead], got.extend, rate_hz=20, timeout_s=0.5)
    try:
        sc.scrape_once()
        sc.scrape_once()
    finally:
        for s in (good, bad, junk):
            s.shutdown()
    assert sorted((r.name, r.labels, r.value) for r in got if r.ts_ns == got[0].ts_ns) == [
        ("my_gauge", '{"a":"x","b":"y"}', 3.5), ("other_total", "{}", 7.0)]
    assert {r.replica for r in got} == {good_url}
    s = sc.summary()
    assert s["scrapes"] == {good_url: 2, bad_url: 2, junk_url: 2, dead: 2}
    assert s["failures"] == {good_url: 0, bad_url: 2, junk_url: 2, dead: 2}
    assert s["last_error"][bad_url] == "HTTP 500"
    assert "unparsable" in s["last_error"][junk_url]
    assert "refused" in s["last_error"][dead].lower()


def test_headers_reach_metrics_and_never_the_error_text():
    from harness.protocols.access import Access
    from harness.secrets import Secret

    srv, h, url = _serve(b"x 1\n", status=401)
    access = Access({"Authorization": Secret("Bearer sekrit-token-123")})
    sc = Scraper([url], lambda rows: None, access=access)
    try:
        sc.scrape_once()
    finally:
        srv.shutdown()
    assert h.seen_headers[0]["Authorization"] == "Bearer sekrit-token-123"
    assert sc.failures[url] == 1 and "sekrit" not in json.dumps(sc.summary())


@pytest.mark.slow
def test_run_goes_on_when_metrics_is_dead_and_the_report_says_so(tmp_path):
    """A replica that serves generation but whose /metrics answers 404 (behind a gateway):
    every scrape counted as failed, the run's outcome as usual, the summary says so."""
    scen = tmp_path / "s.yaml"
    scen.write_text(SCEN.replace("levels: [2, 32]", "levels: [4]").replace("replicas: [2]", "replicas: [1]")
                    .replace("source: emulated", "source: none"))
    with emulate_process("cpu-demo") as up:
        proxy, base = prefix_proxy(up, "/gw", "--hide-metrics")
        try:
            url = base + "/gw"
            p = _cli("run", str(scen), "--url", url, "--results", str(tmp_path / "res"), "-q")
        finally:
            stop(proxy)
    assert p.returncode in (0, 4), p.stderr[-3000:]
    (run,) = list((tmp_path / "res").iterdir())
    summary = json.loads((run / "summary.json").read_text())
    (cell,) = summary["cells"]
    assert cell["requests_ok"] > 0 and cell["server_metrics"] == {}
    sm = summary["server_metrics"]
    assert sm["failures"][url] == sm["scrapes"][url] >= 8 and sm["last_error"][url] == "HTTP 404"
    assert any("/metrics scrapes failed" in n and url in n for n in summary["notes"])
    assert "server_metrics" not in [f.stem for f in run.glob("*.parquet")] or \
        pd.read_parquet(run / "server_metrics.parquet").empty


def test_parse_keeps_histogram_series():
    text = ('# TYPE d histogram\nd_bucket{le="0.1"} 1\nd_bucket{le="+Inf"} 3\nd_sum 0.7\nd_count 3\n')
    assert [(n, lab, v) for n, lab, v in parse(text)] == [
        ("d_bucket", {"le": "0.1"}, 1.0), ("d_bucket", {"le": "+Inf"}, 3.0),
        ("d_sum", {}, 0.7), ("d_count", {}, 3.0)]


@pytest.mark.slow
def test_scrapes_survive_a_sigkilled_run(tmp_path):
    """The rows go through the run directory's journal: a run killed mid-cell keeps what was
    scraped, and the run directory still reads back (RunData.server)."""
    import signal
    import time

    from harness.analysis.rundata import load_run

    scen = tmp_path / "s.yaml"
    scen.write_text(SCEN.replace("levels: [2, 32]", "levels: [8]").replace("replicas: [2]", "replicas: [1]")
                    .replace("duration_s: 2", "duration_s: 60").replace("source: emulated", "source: none"))
    with emulate_process("cpu-demo") as url:
        p = subprocess.Popen([sys.executable, "-m", "harness", "run", str(scen), "--url", url,
                              "--results", str(tmp_path / "res"), "-q"], cwd=ROOT,
                             env=harness_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.time() + 60
            while time.time() < deadline:
                runs = list((tmp_path / "res").glob("*/server_metrics.j*.arrows"))
                if runs and runs[0].stat().st_size > 20_000:
                    break
                time.sleep(0.2)
            time.sleep(1.0)
            os.kill(p.pid, signal.SIGKILL)
        finally:
            p.wait(timeout=30)
    (run,) = list((tmp_path / "res").iterdir())
    assert not (run / "server_metrics.parquet").exists()   # never closed: only the journal
    data = load_run(run)
    assert data.server is not None and len(data.server) > 0
    assert set(data.server["replica"]) == {url.rstrip("/")}
    assert "tgi_queue_size" in set(data.server["name"])
    assert data.server["ts_ns"].nunique() >= 2


def test_scraping_runs_in_its_own_process_and_rows_reach_run_dir_and_store(influxdb, tmp_path):
    """The load generator's process neither scrapes nor parses: no scraper thread in it, its
    CPU time flat while ~2,000-sample expositions are parsed 10 times a second (~0.3 s of CPU
    a second in-process), the scraper's pid another; every row in server_metrics.parquet and
    every non-bucket row in InfluxDB's server_metric; each scrape readable as soon as it is taken."""
    import time

    from harness.engine.server_metrics import ServerMetrics
    from harness.records.rundir import RunDir, recover
    from harness.scenario.loader import parse_scenario

    www = tmp_path / "www"
    www.mkdir()
    (www / "metrics").write_text(tgi_sized_exposition())
    srv = subprocess.Popen([sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1",
                            "--directory", str(www)], stdout=subprocess.PIPE, text=True)
    try:
        port = int(srv.stdout.readline().split(" port ")[1].split()[0])
        url = f"http://127.0.0.1:{port}"
        scen = parse_scenario(
            "name: offproc\nload: {levels: [1]}\n"
            "telemetry: {server_metrics: {rate_hz: 10, full_every_s: 0}}\n"
            f"store:\n  influxdb: {{url: {influxdb.url}, api: v1, database: harness}}\n")
        rd = RunDir.create(tmp_path / "res", "offproc")
        sm = ServerMetrics(scen, rd)
        sm.start([url])                          # returns after the first scrape
        cpu0 = time.process_time()
        time.sleep(2.0)
        assert not [t.name for t in threading.enumerate() if t.name == "server-metrics"]
        here = time.process_time() - cpu0
        sm.close()
        # one journal group a scrape: a reader during the run (the knee search) sees each at once
        groups = sum(1 for _ in recover(rd.path / "server_metrics.parquet"))
        rd.close()
    finally:
        srv.terminate()
        srv.wait(timeout=10)
    got = rd.manifest["server_metrics"]
    assert got["pid"] != os.getpid()
    assert got["failures"] == {url: 0} and got["scrapes"][url] >= 5
    assert here < 0.15 and got["cpu_s"] > 4 * here, (here, got["cpu_s"])
    rows = pd.read_parquet(rd.path / "server_metrics.parquet")
    assert not list(rd.path.glob("server_metrics.j*.arrows"))     # the journals compacted
    assert len(rows) == got["samples"][url] and rows["ts_ns"].nunique() == got["scrapes"][url]
    assert groups == got["scrapes"][url]
    assert {"tgi_queue_size", "tgi_h19_bucket", "tgi_h0_sum"} <= set(rows["name"])
    kept = rows[~rows["name"].str.endswith("_bucket")]
    assert got["store"]["acked"] == len(kept) and got["store"]["spool_points"] == 0
    reader = InfluxQLReader(InfluxTarget(url=influxdb.url, api="v1", database="harness"))
    try:
        assert reader.count("server_metric", "value", f"run_id = '{rd.run_id}'") == len(kept)
    finally:
        reader.close()
