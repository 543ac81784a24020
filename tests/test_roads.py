"""Every road into the one run engine, on the same scenario against a real emulator:
``slm-harness run`` (launched or ``--url``), ``locust -f`` headless and with its web UI; what each
writes, how a stop mid-cell is marked, and the exit codes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from tests.support.ports import free_port
from tests.support.processes import LOCUSTFILE, ROOT, harness_env, stop, wait_for
from tests.support.runs import measuring, only_run

SCENARIO = """
name: roads
target: {protocol: tgi, launcher: {kind: emulator, profile: fixed-50ms-10ms}}
workload: {seed: 4, prompt_tokens: {dist: fixed, value: 16}, output_tokens: {dist: fixed, value: 24}}
load: {mode: concurrency, levels: [4, 8], warmup_s: 1.5, duration_s: DURATION, cooldown_s: 0.3}
slo: {ttft_s: {p99: 1.0}, max_error_rate: 0.0}
telemetry: {source: emulated, rate_hz: 20}
"""
RUN_DIR_FILES = {"requests.parquet", "windows.parquet", "gpu_samples.parquet", "manifest.json",
                 "scenario.yaml", "summary.json", "cells.csv", "report.html", "histograms",
                 "server_metrics.parquet"}


def _scenario(tmp_path: Path, duration: float = 2.0) -> str:
    f = tmp_path / "roads.yaml"
    f.write_text(SCENARIO.replace("DURATION", str(duration)))
    return str(f)


def _llm_tab_measuring(base: str, cell: str) -> bool:
    """Whether the LLM tab at ``base`` shows ``cell`` in its measured window."""
    try:
        with urllib.request.urlopen(base + "/llm/stats", timeout=2) as r:
            rows = {x["metric"]: x for x in json.loads(r.read())["rows"]}
    except OSError:
        return False
    return rows.get("Cell", {}).get("value", "").startswith(f"{cell} (measured")


def _interrupted(argv: list[str], cwd: Path, results: Path, sig: int) -> tuple[int, str]:
    """Start ``argv``; once its first cell is measuring (:func:`measuring`), send ``sig``. Its
    exit code and output."""
    proc = subprocess.Popen(argv, cwd=cwd, env=harness_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(measuring(results), 60, "the first cell's measured rows")
        proc.send_signal(sig)
        try:
            out, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            stop(proc)
            out = proc.communicate()[0]
            lines = [ln for ln in out.splitlines() if "|" not in ln and not ln.startswith("---")]
            raise AssertionError(f"still running 60 s after signal {sig} (lost?):\n"
                                 + "\n".join(lines[-60:])) from None
    finally:
        stop(proc)
    return proc.returncode, out


def test_run_launched_with_emulated_telemetry_writes_gpu_samples_energy_and_report(tmp_path):
    p = subprocess.run([sys.executable, "-m", "harness", "run", _scenario(tmp_path), "--results",
                        str(tmp_path / "res"), "--levels", "8"], cwd=ROOT, env=harness_env(),
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    d = only_run(tmp_path / "res")
    assert RUN_DIR_FILES <= {x.name for x in d.iterdir()}
    gpu = pd.read_parquet(d / "gpu_samples.parquet")
    assert len(gpu) > 20 and (gpu.source == "emulated").all() and (gpu.power_w > 0).all()
    summary = json.loads((d / "summary.json").read_text())
    (cell,) = summary["cells"]
    assert cell["cell"] == "r1-c8" and cell["energy_j"] > 0 and cell["j_per_token"] > 0
    assert summary["status"] == "complete" and summary["cells_partial"] == []
    assert "r1-c8" in (d / "report.html").read_text()
    assert "report: " in p.stdout


def test_locust_headless_writes_the_same_run_directory_as_run(emu, tmp_path):
    scen = _scenario(tmp_path)
    run = subprocess.run([sys.executable, "-m", "harness", "run", scen, "--url", emu, "--results",
                          str(tmp_path / "run")], cwd=ROOT, env=harness_env(), capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    loc = subprocess.run([sys.executable, "-m", "locust", "-f", LOCUSTFILE, "--headless",
                          "--scenario", scen, "--host", emu, "--slm-results", str(tmp_path / "loc"),
                          "--csv", str(tmp_path / "locust")], cwd=tmp_path, env=harness_env(),
                         capture_output=True, text=True, timeout=120)
    assert loc.returncode == 0, loc.stderr[-3000:]
    a, b = only_run(tmp_path / "run"), only_run(tmp_path / "loc")
    assert RUN_DIR_FILES <= {x.name for x in b.iterdir()}
    assert {x.name for x in a.iterdir()} - {"logs"} == {x.name for x in b.iterdir()} - {"logs"}
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    ca = {c["cell"]: c for c in sa["cells"]}
    cb = {c["cell"]: c for c in sb["cells"]}
    assert set(ca) == set(cb) == {"r1-c4", "r1-c8"}
    for name in ca:   # within noise: the emulator's fixed timing, level edges ~1 s apart in Locust
        assert cb[name]["output_tokens_per_s"] == pytest.approx(ca[name]["output_tokens_per_s"],
                                                                rel=0.25)
        assert cb[name]["ttft_p50_s"] == pytest.approx(ca[name]["ttft_p50_s"], abs=0.02)
        assert cb[name]["energy_j"] and ca[name]["energy_j"]
    ma, mb = (json.loads((d / "manifest.json").read_text()) for d in (a, b))
    assert ma["status"] == mb["status"] == "complete"
    assert ma["cells_done"] == mb["cells_done"] == ["r1-c4", "r1-c8"]
    # Locust's own statistics count each HTTP request once (no TTFT pseudo-requests)
    stats = pd.read_csv(tmp_path / "locust_stats.csv")
    agg = stats[stats.Name == "Aggregated"].iloc[0]
    assert int(agg["Request Count"]) == len(pd.read_parquet(b / "requests.parquet"))
    assert set(stats.Type.dropna()) <= {"POST", ""} | {float("nan")}


def test_web_ui_stop_mid_cell_marks_it_partial_and_exits_nonzero(emu, tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "locust", "-f", LOCUSTFILE, "--scenario",
                             _scenario(tmp_path, duration=60), "--host", emu, "--web-host",
                             "127.0.0.1", "--web-port", str(port), "--autostart",
                             "--slm-results", str(tmp_path / "res")], cwd=tmp_path, env=harness_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: _llm_tab_measuring(base, "r1-c4"), 60,
                 "the first cell's measured window")
        urllib.request.urlopen(urllib.request.Request(base + "/stop", method="POST"), timeout=5).read()
        mf = lambda: json.loads(next((tmp_path / "res").glob("*/manifest.json")).read_text())  # noqa: E731
        wait_for(lambda: mf().get("status") == "stopped", 30, "the run to close")
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        stop(proc)
    assert proc.returncode == 130, out[-3000:]
    d = only_run(tmp_path / "res")
    man = json.loads((d / "manifest.json").read_text())
    assert man["cells_partial"] == ["r1-c4"] and man["cells_done"] == []
    summary = json.loads((d / "summary.json").read_text())
    assert summary["cells_partial"] == ["r1-c4"] and summary["cells"] == []
    assert not summary["recommendation"]["meets_slo"]
    assert "partial" in (d / "report.html").read_text()
    assert "partial: r1-c4" in out and " met" not in out.replace("meets", "")
    win = pd.read_parquet(d / "windows.parquet")
    mw = win[win.phase == "measure"].iloc[0]
    assert mw.note.startswith("partial") and (mw.end_ns - mw.start_ns) < 60e9


def test_sigterm_on_run_closes_the_records_and_marks_the_cell_partial(emu, tmp_path):
    rc, out = _interrupted([sys.executable, "-m", "harness", "run", _scenario(tmp_path, 60), "--url", emu,
                            "--results", str(tmp_path / "res")], ROOT, tmp_path / "res", signal.SIGTERM)
    assert rc == 130, out[-3000:]
    d = only_run(tmp_path / "res")
    man = json.loads((d / "manifest.json").read_text())
    assert man["status"] == "interrupted" and man["cells_partial"] == ["r1-c4"]
    assert pq.ParquetFile(d / "requests.parquet").metadata.num_rows > 0
    assert "run stopped: terminated (SIGTERM)" in out and "partial: r1-c4" in out


def test_dead_url_exits_3_with_the_reason(tmp_path):
    scen = _scenario(tmp_path)
    t = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "harness", "run", scen, "--url",
                        "http://127.0.0.1:9", "--results", str(tmp_path / "res")], cwd=ROOT,
                       env=harness_env(), capture_output=True, text=True, timeout=60)
    assert p.returncode == 3, p.stdout + p.stderr
    assert "no replica answers: http://127.0.0.1:9: Connection refused" in p.stderr
    assert time.monotonic() - t < 30
    loc = subprocess.run([sys.executable, "-m", "locust", "-f", LOCUSTFILE, "--headless",
                          "--scenario", scen, "--host", "http://127.0.0.1:9"], cwd=tmp_path,
                         env=harness_env(), capture_output=True, text=True, timeout=60)
    assert loc.returncode == 3 and "no replica answers" in loc.stderr


def test_locust_refuses_users_and_stops_at_run_time(emu, tmp_path):
    scen = _scenario(tmp_path, duration=60)
    p = subprocess.run([sys.executable, "-m", "locust", "-f", LOCUSTFILE, "--headless", "-u", "5",
                        "--scenario", scen, "--host", emu], cwd=tmp_path, env=harness_env(),
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    (line,) = [x for x in p.stderr.splitlines() if "slm-harness" in x or "-u" in x]
    assert "-u/--users: the scenario's plan sets the users" in line
    assert "will be ignored" not in p.stderr
    t = subprocess.run([sys.executable, "-m", "locust", "-f", LOCUSTFILE, "--headless", "-t", "3",
                        "--scenario", scen, "--host", emu, "--slm-results", str(tmp_path / "res")],
                       cwd=tmp_path, env=harness_env(), capture_output=True, text=True, timeout=90)
    assert t.returncode == 130, t.stderr[-3000:]
    assert "Run time limit set" not in t.stderr and "will be ignored" not in t.stderr
    d = only_run(tmp_path / "res")
    man = json.loads((d / "manifest.json").read_text())
    assert man["status"] == "stopped" and man["cells_partial"] == ["r1-c4"]
    assert "-t 3s reached" in t.stderr


BAD_DATASET = '{"prompt": "a"}\n{"prompt": "b"}\n{"text": "no prompt here"}\n'


def test_a_malformed_dataset_record_is_refused_before_any_load(tmp_path):
    (tmp_path / "ds.jsonl").write_text(BAD_DATASET)
    scen = tmp_path / "s.yaml"
    scen.write_text(SCENARIO.replace("DURATION", "2").replace(
        "workload: {seed: 4,", "workload: {dataset: {path: ds.jsonl}, seed: 4,"))
    where = f"{tmp_path / 'ds.jsonl'}:3: prompt: missing or empty prompt"
    v = subprocess.run([sys.executable, "-m", "harness", "validate", str(scen)], cwd=ROOT,
                       env=harness_env(), capture_output=True, text=True, timeout=60)
    assert v.returncode == 2 and where in v.stderr, v.stderr
    r = subprocess.run([sys.executable, "-m", "harness", "run", str(scen), "--url",
                        "http://127.0.0.1:9", "--results", str(tmp_path / "res")], cwd=ROOT,
                       env=harness_env(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and where in r.stderr and r.stderr.count("missing or empty") == 1
    assert not (tmp_path / "res").exists()


def test_bad_input_met_mid_run_stops_it_once_with_exit_2(emu, tmp_path):
    """A dataset that turns bad after validation (replaced under the run): the users stop at the
    first bad record, the run ends with exit 2 and one error, no retry loop."""
    ds = tmp_path / "ds.jsonl"
    ds.write_text('{"prompt": "fine"}\n')
    scen = tmp_path / "s.yaml"
    scen.write_text(SCENARIO.replace("DURATION", "2").replace(
        "workload: {seed: 4,", "workload: {dataset: {path: ds.jsonl}, seed: 4,"))
    script = f"""
import locust, sys
from pathlib import Path
from harness.engine.door import Request, execute
from harness.scenario.loader import load_scenario
sc = load_scenario({str(scen)!r})
Path({str(ds)!r}).write_text({BAD_DATASET!r})
sys.exit(execute(Request({str(scen)!r}, "run", replicas=[1], levels=[4], urls=[{emu!r}],
                         results={str(tmp_path / 'res')!r}, quiet=True), sc))
"""
    t = time.monotonic()
    p = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=harness_env(), capture_output=True,
                       text=True, timeout=90)
    out = p.stdout + p.stderr
    assert p.returncode == 2, out[-3000:]
    assert out.count("missing or empty prompt") <= 3 and "ds.jsonl:3: prompt" in out
    assert time.monotonic() - t < 45
    man = json.loads(next((tmp_path / "res").glob("*/manifest.json")).read_text())
    assert man["status"] == "bad-input" and man["cells_partial"] == ["r1-c4"]


def test_the_harness_options_are_listed_in_locusts_help():
    p = subprocess.run([sys.executable, "-m", "harness", "locust", "-f", LOCUSTFILE, "--help"],
                       cwd=ROOT, env=harness_env(), capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    for opt in ("--scenario", "--slm-levels", "--slm-replicas", "--slm-results", "--slm-json",
                "-t/--run-time stops the plan early"):
        assert opt in p.stdout, opt
    assert "--run-time" in p.stdout and "--web-port" in p.stdout     # Locust's own, unchanged


def test_ctrl_c_on_headless_locust_marks_the_cell_partial(emu, tmp_path):
    rc, out = _interrupted([sys.executable, "-m", "locust", "-f", LOCUSTFILE, "--headless", "--scenario",
                            _scenario(tmp_path, 60), "--host", emu, "--slm-results", str(tmp_path / "res")],
                           tmp_path, tmp_path / "res", signal.SIGINT)
    assert rc == 130, out[-3000:]
    man = json.loads(next((tmp_path / "res").glob("*/manifest.json")).read_text())
    assert man["status"] == "interrupted" and man["cells_partial"] == ["r1-c4"]
    assert "partial: r1-c4" in out


def test_the_web_ui_stop_during_run_ends_it_with_the_cell_partial(emu, tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "harness", "run", _scenario(tmp_path, 60),
                             "--url", emu, "--results", str(tmp_path / "res"), "--web-ui",
                             f"127.0.0.1:{port}"], cwd=ROOT, env=harness_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: _llm_tab_measuring(base, "r1-c4"), 60,
                 "the first cell's measured window")
        urllib.request.urlopen(urllib.request.Request(base + "/stop", method="POST"),
                               timeout=5).read()
        out, _ = proc.communicate(timeout=60)       # the run ends by itself
    finally:
        stop(proc)
    assert proc.returncode == 130, out[-3000:]
    man = json.loads(next((tmp_path / "res").glob("*/manifest.json")).read_text())
    assert man["status"] == "stopped" and man["cells_partial"] == ["r1-c4"]
    assert "run stopped: stopped from the web UI" in out and "partial: r1-c4" in out
