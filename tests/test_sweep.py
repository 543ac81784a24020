"""``slm-harness sweep`` end to end on emulated replicas: numbers against the raw records, the
replica effect on the frontier, interruption by SIGTERM and --resume, a launch failure."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading

import numpy as np
import pandas as pd
import pytest

from tests.support.ports import port_open
from tests.support.processes import ROOT, harness, harness_env
from tests.support.runs import only_run

pytestmark = pytest.mark.slow

E2E = """
name: e2e
target: {protocol: tgi, launcher: {kind: emulator, profile: h100-smollm2-135m}}
workload: {seed: 5, prompt_tokens: {dist: fixed, value: 32}, output_tokens: {dist: fixed, value: 32}}
load: {mode: concurrency, levels: [16, 64, 256], replicas: [1, 2], warmup_s: 3, duration_s: 3, cooldown_s: 0.5}
slo: {ttft_s: {p99: 1.0}, max_error_rate: 0.01}
telemetry: {source: emulated, rate_hz: 20}
"""

SMALL = """
name: small
target: {protocol: tgi, launcher: {kind: emulator, profile: h100-smollm2-135m}}
workload: {seed: 2, prompt_tokens: {dist: fixed, value: 16}, output_tokens: {dist: fixed, value: 16}}
load: {mode: concurrency, levels: LEVELS, replicas: [1, 2], warmup_s: 0.5, duration_s: 1.5, cooldown_s: 0.2,
       auto_max_level: 8, auto_max_cells: 3, auto_probe_s: 0}
slo: {ttft_s: {p99: 2.0}}
telemetry: {source: emulated, rate_hz: 20}
"""


def _sweep(args, timeout=300):
    return harness("sweep", *args, timeout=timeout)


def _tokens_in(req: pd.DataFrame, a: int, b: int) -> float:
    """Independent re-statement of the documented rule, one request at a time."""
    total = 0.0
    for f, e, n in zip(req.first_token_ns, req.end_ns, req.output_tokens):
        if pd.isna(f) or n < 1:
            continue
        f, e = int(f), int(e)
        total += 1.0 if a <= f < b else 0.0
        if e > f:
            total += (n - 1) * max(0, min(e, b) - max(f, a)) / (e - f)
        elif a <= f < b:
            total += n - 1
    return total


@pytest.fixture(scope="module")
def e2e(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweep")
    scen = tmp / "e2e.yaml"
    scen.write_text(E2E)
    p = _sweep([str(scen), "--results", str(tmp / "res")], timeout=400)
    return p, only_run(tmp / "res")


def test_sweep_report_matches_raw_records(e2e):
    p, run = e2e
    assert p.returncode in (0, 1), p.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert f"report: {run / 'report.html'}" in p.stdout
    assert summary["recommendation"]["sentence"] in p.stdout
    req = pd.read_parquet(run / "requests.parquet")
    win = pd.read_parquet(run / "windows.parquet")
    gpu = pd.read_parquet(run / "gpu_samples.parquet")
    cells = {c["cell"]: c for c in summary["cells"]}
    assert sorted(cells) == sorted(f"r{r}-c{c}" for r in (1, 2) for c in (16, 64, 256))
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "complete" and len(manifest["cells_done"]) == 6
    for name, c in cells.items():
        (w,) = win[(win.cell == name) & (win.phase == "measure")].itertuples()
        a, b = int(w.start_ns), int(w.end_ns)
        dur = (b - a) / 1e9
        r = req[req.cell == name]
        sent = r[(r.intended_ns >= a) & (r.intended_ns < b)]
        assert len(sent) == c["requests_started"]
        # the load generator's own phase marks agree with the window, but for a request whose
        # phase was chosen just before an edge and that went out just after it
        assert abs(len(sent) - (r.phase == "measure").sum()) <= 2
        ok = sent[sent.error_class.isna()]
        assert c["requests_ok"] == len(ok)
        assert c["ttft_p50_s"] == pytest.approx(np.percentile(ok.ttft_s, 50))
        assert c["ttft_p99_s"] == pytest.approx(np.percentile(ok.ttft_s, 99))
        assert c["e2e_p99_s"] == pytest.approx(np.percentile(ok.e2e_s, 99))
        assert c["tpot_p50_s"] == pytest.approx(np.percentile(ok.tpot_s, 50))
        done = r[(r.end_ns >= a) & (r.end_ns < b) & r.error_class.isna()]
        assert c["request_throughput_rps"] == pytest.approx(len(done) / dur)
        tokens = _tokens_in(r, a, b)
        assert c["output_tokens_per_s"] == pytest.approx(tokens / dur)
        # energy: the sampler's counter delta stored on the window, and J/token from it
        assert (
            c["energy_source"] == f"window:{w.energy_source}"
            and w.energy_source == "emulated-counter"
        )
        assert c["energy_j"] == pytest.approx(w.energy_j)
        assert c["j_per_token"] == pytest.approx(w.energy_j / tokens)
        # ...which the power samples inside the window roughly confirm: they are read at 20 Hz by
        # a greenlet of the load-generating process, late when this shared 2-core machine is busy
        s = gpu[(gpu.ts_ns >= a) & (gpu.ts_ns <= b)].sort_values("ts_ns")
        span_s = (s.ts_ns.iloc[-1] - s.ts_ns.iloc[0]) / 1e9
        integral = np.trapezoid(s.power_w, s.ts_ns / 1e9) * dur / span_s
        assert integral == pytest.approx(w.energy_j, rel=0.10)
        assert c["mean_power_w"] == pytest.approx(w.energy_j / dur)
    # cells.csv has the same numbers
    csv = pd.read_csv(run / "cells.csv").set_index("cell")
    for name, c in cells.items():
        assert csv.loc[name, "output_tokens_per_s"] == pytest.approx(c["output_tokens_per_s"])
        assert csv.loc[name, "j_per_token"] == pytest.approx(c["j_per_token"])
    html = (run / "report.html").read_text()
    assert html.count('<tr class="') == 6 and 'src="data:image/png;base64,' in html


def test_replica_effect_shows_on_the_frontier(e2e):
    _, run = e2e
    cells = {c["cell"]: c for c in json.loads((run / "summary.json").read_text())["cells"]}
    r1 = max(cells[f"r1-c{c}"]["output_tokens_per_s"] for c in (16, 64, 256))
    r2 = max(cells[f"r2-c{c}"]["output_tokens_per_s"] for c in (16, 64, 256))
    # the modeled engine's host work runs in parallel across replica processes: at 256 streams two
    # replicas deliver clearly more than one (1.5x here when the machine is quiet)
    assert r2 > 1.2 * r1
    top = max(cells.values(), key=lambda c: c["output_tokens_per_s"])
    assert top["replicas"] == 2 and top["frontier"] == "frontier"
    # two replicas halve each one's queue: the median first token comes sooner (0.16-0.32 s against
    # 0.55-0.69 s on a quiet or a loaded 2-core machine). The p99 of the ~140 requests of a 3 s window
    # is decided by the two or three that met a wave boundary, and came out level once in CI.
    assert cells["r2-c256"]["ttft_p50_s"] < cells["r1-c256"]["ttft_p50_s"]
    assert cells["r2-c256"]["e2e_p99_s"] < cells["r1-c256"]["e2e_p99_s"]
    assert cells["r2-c256"]["j_per_token"] < cells["r1-c256"]["j_per_token"]


def test_sigterm_keeps_finished_cells_and_resume_finishes(tmp_path):
    scen = tmp_path / "small.yaml"
    scen.write_text(SMALL.replace("LEVELS", "[4, 8]"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness", "sweep", str(scen), "--results", str(tmp_path / "res")],
        cwd=ROOT,
        env=harness_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    urls: list[str] = []
    killer = threading.Timer(120, proc.kill)
    killer.start()
    try:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("[r1] up in"):
                urls = [u.rstrip(";,") for u in line.split() if u.startswith("http://")]
            if line.startswith("[r1-c4] done"):
                proc.send_signal(signal.SIGTERM)
                break
        out, err = proc.communicate(timeout=60)
    finally:
        killer.cancel()
    lines.append(out)
    assert proc.returncode == 130, err[-3000:]
    assert "sweep stopped: terminated (SIGTERM)" in err and "--resume" in err
    run = only_run(tmp_path / "res")
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "interrupted"
    done_before = manifest["cells_done"]
    assert done_before[0] == "r1-c4" and "r2-c4" not in done_before
    summary = json.loads((run / "summary.json").read_text())
    assert [c["cell"] for c in summary["cells"]] == done_before
    assert f"report: {run / 'report.html'}" in "".join(lines)
    # the replicas were brought down
    assert urls and not any(port_open(u) for u in urls)
    n_before = len(pd.read_parquet(run / "requests.parquet"))
    r1c4_before = summary["cells"][0]

    p = _sweep([str(scen), "--resume", str(run)])
    assert p.returncode == 0, p.stderr[-3000:]
    for c in done_before:
        assert f"[{c}] finished in the run being resumed: skipped" in p.stdout
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "complete" and len(manifest["resumed_at"]) == 1
    assert manifest["cells_done"][: len(done_before)] == done_before
    assert sorted(manifest["cells_done"]) == ["r1-c4", "r1-c8", "r2-c4", "r2-c8"]
    summary = json.loads((run / "summary.json").read_text())
    assert [c["cell"] for c in summary["cells"]] == ["r1-c4", "r1-c8", "r2-c4", "r2-c8"]
    # the first attempt's rows are kept; the finished cell's numbers did not change
    assert len(pd.read_parquet(run / "requests.parquet")) > n_before
    assert summary["cells"][0]["output_tokens_per_s"] == pytest.approx(
        r1c4_before["output_tokens_per_s"]
    )
    assert summary["cells"][0]["ttft_p99_s"] == pytest.approx(r1c4_before["ttft_p99_s"])
    # resuming a finished sweep runs nothing and changes nothing
    p = _sweep([str(scen), "--resume", str(run), "-q"])
    assert (
        p.returncode == 0
        and json.loads((run / "summary.json").read_text())["cells"] == summary["cells"]
    )


def test_resume_refuses_another_scenario(tmp_path):
    scen = tmp_path / "small.yaml"
    scen.write_text(SMALL.replace("LEVELS", "[2]").replace("replicas: [1, 2]", "replicas: [1]"))
    p = _sweep([str(scen), "--results", str(tmp_path / "res"), "-q"])
    assert p.returncode == 0, p.stderr[-3000:]
    run = only_run(tmp_path / "res")
    other = tmp_path / "other.yaml"
    other.write_text(scen.read_text().replace("levels: [2]", "levels: [3]"))
    p = _sweep([str(other), "--resume", str(run)])
    assert p.returncode == 2 and "differs from the one the run was started with" in p.stderr
    assert json.loads((run / "manifest.json").read_text())["status"] == "complete"


def test_auto_levels_search_and_launch_failure(tmp_path):
    scen = tmp_path / "auto.yaml"
    scen.write_text(SMALL.replace("LEVELS", "auto").replace("replicas: [1, 2]", "replicas: [1]"))
    p = _sweep([str(scen), "--results", str(tmp_path / "res")])
    assert p.returncode == 0, p.stderr[-3000:]
    run = only_run(tmp_path / "res")
    manifest = json.loads((run / "manifest.json").read_text())
    # without the probe, doubling from 1 stream, at most 3 cells (throughput keeps growing at these levels)
    assert manifest["cells_done"] == ["r1-c1", "r1-c2", "r1-c4"]
    assert [x["level"] for x in manifest["auto_results"]["1"]] == [1.0, 2.0, 4.0]
    assert "auto_probe" not in manifest
    bad = tmp_path / "bad.yaml"
    # a replica whose program exits at once (a known profile name is checked before any launch)
    bad.write_text(scen.read_text().replace(
        "launcher: {kind: emulator, profile: h100-smollm2-135m}",
        "launcher: {kind: processes, command: [/bin/false, '{port}'], startup_timeout_s: 20}"))
    p = _sweep([str(bad), "--results", str(tmp_path / "bad")])
    assert p.returncode == 3
    assert "replicas could not be launched" in p.stderr and "No cell was measured" in p.stdout
    run = only_run(tmp_path / "bad")
    assert json.loads((run / "manifest.json").read_text())["status"] == "launch-failed"
    assert (run / "report.html").is_file()


def test_resume_of_a_killed_run_names_the_unreadable_file(tmp_path):
    scen = tmp_path / "s.yaml"
    scen.write_text(SMALL.replace("LEVELS", "[2]"))
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"run_id": "x", "command": "sweep"}))
    (run / "requests.parquet").write_bytes(b"PAR1" + b"\0" * 100)  # a writer that never closed
    p = _sweep([str(scen), "--resume", str(run)])
    assert p.returncode == 2
    assert f"{run / 'requests.parquet'}: cannot resume: the file is unreadable" in p.stderr
    assert (run / "requests.parquet").read_bytes().startswith(b"PAR1")  # left as it was


def test_a_sigterm_whose_exception_python_swallowed_still_stops_the_sweep():
    """The SIGTERM handler raises where the signal lands; inside a weakref callback or a
    ``__del__`` Python prints "Exception ignored in ..." and goes on (CI saw a sweep finish with
    exit 0 that way). What the handler saw stays recorded, and the sweep checks it."""
    import gc
    import os

    from harness.engine.session import Terminated, sigterm_raises as _sigterm_raises

    class Dies:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):   # bytecode for the handler to run in: inside __del__
                pass

    before = signal.getsignal(signal.SIGTERM)
    with _sigterm_raises() as seen:
        d = Dies()
        del d                       # the handler's Terminated is raised, and ignored, in __del__
        gc.collect()
        assert seen.hit
        with pytest.raises(Terminated):
            seen.check()
    assert signal.getsignal(signal.SIGTERM) is before     # the old handler is back
