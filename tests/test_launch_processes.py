"""ProcessLauncher and EndpointsLauncher against real processes on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request

import psutil
import pytest

from harness.errors import InputError, LaunchError
from harness.launch.base import launcher_for
from harness.launch.health import free_port_block, is_healthy
from harness.launch.memory import staggered_fractions
from harness.launch.processes import render_args
from harness.scenario.models import Target
from tests.support.processes import harness_env

PY = sys.executable

# A tiny real HTTP server: /health answers 200 after DELAY s (or never when NEVER is set),
# /args echoes its argv; it starts a child process of its own so that group stops are exercised.
SERVER = textwrap.dedent("""
    import http.server, json, os, subprocess, sys, time
    port = int(sys.argv[1]); t0 = time.monotonic()
    delay = float(os.environ.get("DELAY", "0")); never = os.environ.get("NEVER") == "1"
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/health":
                ok = not never and time.monotonic() - t0 >= delay
                self.send_response(200 if ok else 503); self.end_headers()
                self.wfile.write(b"ok" if ok else b"starting")
            elif self.path == "/args":
                body = json.dumps({"argv": sys.argv, "child": child.pid}).encode()
                self.send_response(200); self.end_headers(); self.wfile.write(body)
            else:
                self.send_response(404); self.end_headers()
        def log_message(self, *a):
            print("request", *a, flush=True)
    print("serving on", port, flush=True)
    http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
""")


@pytest.fixture
def server_script(tmp_path):
    p = tmp_path / "server.py"
    p.write_text(SERVER)
    return p


def target(command, *, base_port, env=None, timeout=20.0, model="m"):
    return Target.model_validate({
        "model": model,
        "launcher": {"kind": "processes", "command": command, "base_port": base_port,
                     "startup_timeout_s": timeout, "env": env or {}},
    })


def get_json(url):
    import json
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def test_three_replicas_up_healthy_logged_and_stopped(tmp_path, server_script):
    base = free_port_block(3)
    t = target([PY, str(server_script), "{port}", "--replica", "{replica}", "--model", "{model}",
                "--fraction", "{fraction}"], base_port=base, env={"DELAY": "0.5"}, model="tiny")
    children = []
    with launcher_for(t, 3, tmp_path / "logs") as reps:
        assert reps.kind == "processes" and len(reps) == 3 and not reps.emulated
        assert reps.urls == [f"http://127.0.0.1:{base + i}" for i in range(3)]
        for i, r in enumerate(reps.items):
            assert is_healthy(r.url)
            info = get_json(r.url + "/args")
            # arguments arrive exactly as templated, one argv element each (no shell)
            # replica i of 3 gets 0.9 * (i + 1) / 3 of the GPU (TGI's sizing, docs/stack.md)
            assert info["argv"][1:] == [str(base + i), "--replica", str(i), "--model", "tiny",
                                        "--fraction", ["0.3", "0.6", "0.9"][i]]
            assert psutil.pid_exists(r.pid) and psutil.pid_exists(info["child"])
            children.append(info["child"])
            assert r.log_path.exists()
        pids = [r.pid for r in reps.items]
        logs = [r.log_path for r in reps.items]
        born = {pid: psutil.Process(pid).create_time() for pid in pids + children}
    # every replica and the child each one spawned are gone, ports are free again (on a busy
    # host a PID can be reused at once: a process born later is someone else)
    for pid in pids + children:
        try:
            p = psutil.Process(pid)
            assert p.status() == psutil.STATUS_ZOMBIE or p.create_time() != born[pid], pid
        except psutil.NoSuchProcess:
            pass
    for i in range(3):
        assert not is_healthy(f"http://127.0.0.1:{base + i}", timeout_s=0.5)
        text = logs[i].read_text()
        assert f"serving on {base + i}" in text and "/health" in text


def test_replica_that_exits_early_is_named_with_its_log(tmp_path, server_script):
    base = free_port_block(2)
    crash = tmp_path / "crash.py"
    crash.write_text(textwrap.dedent(f"""
        import runpy, sys
        if sys.argv[1] == "1":
            print("CUDA out of memory (pretend)", flush=True)
            sys.exit(7)
        sys.argv = ["server", sys.argv[2]]
        runpy.run_path({str(server_script)!r}, run_name="__main__")
    """))
    t = target([PY, str(crash), "{replica}", "{port}"], base_port=base)
    t0 = time.monotonic()
    with pytest.raises(LaunchError) as e:
        with launcher_for(t, 2, tmp_path / "logs"):
            pytest.fail("must not get here")
    msg = str(e.value)
    assert "replica 1 exited early with code 7" in msg
    assert "replica-1.log" in msg and "CUDA out of memory (pretend)" in msg
    assert time.monotonic() - t0 < 15  # noticed at once, not at the startup timeout
    # the healthy sibling was stopped too
    assert not is_healthy(f"http://127.0.0.1:{base}", timeout_s=0.5)


def test_replica_that_never_gets_healthy_times_out_and_is_stopped(tmp_path, server_script):
    base = free_port_block(1)
    # the timeout must outlast the server's start (a Python process, slow on a loaded machine),
    # or its log holds no 503 yet
    t = target([PY, str(server_script), "{port}"], base_port=base, env={"NEVER": "1"},
               timeout=5.0)
    with pytest.raises(LaunchError) as e:
        with launcher_for(t, 1, tmp_path / "logs"):
            pytest.fail("must not get here")
    msg = str(e.value)
    assert "replica 0 not healthy after 5 s" in msg and f":{base}/health" in msg
    assert "GET /health HTTP/1.1 503" in msg  # the log's tail is in the message
    # the server answered 503 while waiting and is gone now
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{base}/args", timeout=1)


def test_stubborn_replica_is_killed_after_grace(tmp_path):
    base = free_port_block(1)
    script = tmp_path / "stubborn.py"
    script.write_text(textwrap.dedent("""
        import http.server, signal, sys
        signal.signal(signal.SIGTERM, lambda *a: print('ignoring SIGTERM', flush=True))
        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200); self.end_headers()
        http.server.HTTPServer(('127.0.0.1', int(sys.argv[1])), H).serve_forever()
    """))
    t = target([PY, str(script), "{port}"], base_port=base)
    launcher = launcher_for(t, 1, tmp_path / "logs")
    launcher.stop_grace_s = 1.0
    with launcher as reps:
        pid = reps.items[0].pid
    assert not psutil.pid_exists(pid)
    assert "ignoring SIGTERM" in reps.items[0].log_path.read_text()


def test_port_already_taken_is_refused(tmp_path, server_script):
    base = free_port_block(1)
    t = target([PY, str(server_script), "{port}"], base_port=base)
    with launcher_for(t, 1, tmp_path / "a"):
        with pytest.raises(LaunchError, match=f"port 127.0.0.1:{base} is already in use"):
            with launcher_for(t, 1, tmp_path / "b"):
                pass


def test_missing_command_and_bad_placeholder(tmp_path):
    t = target(["no-such-server-binary-xyz", "{port}"], base_port=free_port_block(1))
    with pytest.raises(LaunchError, match="'no-such-server-binary-xyz' not found"):
        with launcher_for(t, 1, tmp_path):
            pass
    t = target([PY, "-c", "pass", "{gpu}"], base_port=free_port_block(1))
    with pytest.raises(InputError) as e:
        with launcher_for(t, 1, tmp_path):
            pass
    assert e.value.field == "target.launcher.command[3]" and "{gpu}" in str(e.value)


def test_templates_for_tgi_and_transformers_serve():
    tgi = ["text-generation-launcher", "--model-id", "{model}", "--port", "{port}",
           "--cuda-memory-fraction", "{fraction}"]
    assert render_args(tgi, port=8082, replica=1, model="HuggingFaceTB/SmolLM2-135M",
                       fraction=staggered_fractions(4)[1], host="127.0.0.1") == [
        "text-generation-launcher", "--model-id", "HuggingFaceTB/SmolLM2-135M", "--port", "8082",
        "--cuda-memory-fraction", "0.45"]
    ts = ["transformers", "serve", "{model}", "--continuous-batching", "--port", "{port}",
          "--host", "{host}"]
    assert render_args(ts, port=9000, replica=0, model="/models/x", fraction=0.9,
                       host="127.0.0.1")[2:] == ["/models/x", "--continuous-batching", "--port",
                                                 "9000", "--host", "127.0.0.1"]
    assert [staggered_fractions(n) for n in (1, 2, 3)] == [[0.9], [0.45, 0.9], [0.3, 0.6, 0.9]]


def test_endpoints_launcher_checks_health_and_takes_first_n(tmp_path, server_script):
    base = free_port_block(2)
    t = target([PY, str(server_script), "{port}"], base_port=base)
    with launcher_for(t, 2, tmp_path / "logs") as started:
        ep = Target.model_validate({"launcher": {"kind": "endpoints",
                                                 "urls": started.urls + ["http://127.0.0.1:1"]}})
        with launcher_for(ep, 2, tmp_path) as reps:
            assert reps.kind == "endpoints" and reps.urls == started.urls
        with pytest.raises(InputError, match="4 replicas asked for but only 3 URLs"):
            launcher_for(ep, 4, tmp_path)
        dead = Target.model_validate({"launcher": {"kind": "endpoints",
                                                   "urls": ["http://127.0.0.1:1"]}})
        launcher = launcher_for(dead, 1, tmp_path)
        launcher.wait_s = 1.0
        with pytest.raises(LaunchError, match=r"not healthy after 1 s: http://127.0.0.1:1/health"):
            with launcher:
                pass


def test_ctrl_c_while_waiting_stops_replicas(tmp_path, server_script):
    base = free_port_block(1)
    t = target([PY, str(server_script), "{port}"], base_port=base, env={"NEVER": "1"},
               timeout=30.0)
    launcher = launcher_for(t, 1, tmp_path / "logs")
    pid_holder = {}

    def interrupt(signum, frame):
        pid_holder["pid"] = launcher._procs[0].pid
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 1.0)
    try:
        with pytest.raises(KeyboardInterrupt):
            with launcher:
                pass
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert not psutil.pid_exists(pid_holder["pid"])
    assert os.path.exists(tmp_path / "logs" / "replica-0.log")


def test_three_emulator_replicas_from_a_template_serve_a_run_and_are_stopped(tmp_path):
    """`slm-harness run` with a processes launcher: 3 emulator processes from the template, a
    Locust run through all of them (per-replica attribution), every process gone afterwards."""
    import pyarrow.parquet as pq

    base = free_port_block(3)
    scenario = tmp_path / "procs.yaml"
    scenario.write_text(textwrap.dedent(f"""
        name: procs
        target:
          protocol: tgi
          launcher:
            kind: processes
            command: [{PY}, -m, harness, emulate, --replicas, "1", --profile, fixed-50ms-10ms,
                      --host, "{{host}}", --port, "{{port}}", --shared-gpu, "{tmp_path / 'gpu.state'}",
                      --cuda-memory-fraction, "{{fraction}}"]
            base_port: {base}
            startup_timeout_s: 60
        workload:
          output_tokens: {{dist: fixed, value: 16}}
          prompt_tokens: {{dist: fixed, value: 32}}
        load:
          levels: [6]
          replicas: [3]
          warmup_s: 0.5
          duration_s: 3
          cooldown_s: 0.2
        slo:
          ttft_s: {{p99: 2.0}}
          max_error_rate: 0.0
        store:
          results_dir: {tmp_path / "results"}
    """))
    r = subprocess.run([PY, "-m", "harness", "run", str(scenario), "-q"], capture_output=True,
                       text=True, timeout=240, env=harness_env())
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    (run,) = list((tmp_path / "results").iterdir())
    records = pq.read_table(run / "requests.parquet").to_pandas()
    # one after another on one simulated GPU, 0.3/0.6/0.9: equal KV budgets, in the manifest
    kv = json.loads((run / "manifest.json").read_text())["kv_budgets"]["3"]
    assert len(kv["budgets"]) == 3 and kv["spread"] < 0.05 and kv["warning"] is None, kv
    urls = {f"http://127.0.0.1:{base + i}" for i in range(3)}
    assert set(records.replica) == urls
    assert records.error_class.isna().all() and (records.output_tokens == 16).all()
    assert records.groupby("replica").size().min() >= 3
    for i in range(3):
        log = (run / "logs" / "r3" / f"replica-{i}.log").read_text()
        assert f"--port', '{base + i}'" in log  # the argv as launched, one element per argument
    # the replicas were stopped: nothing answers, no emulator of this run is left
    for u in urls:
        assert not is_healthy(u, timeout_s=0.5)
    left = [p for p in psutil.process_iter(["cmdline"])
            if p.info["cmdline"] and "emulate" in p.info["cmdline"]
            and any(str(base + i) in p.info["cmdline"] for i in range(3))]
    assert left == []


def test_unequal_kv_budgets_are_a_loud_warning_in_console_manifest_and_report(tmp_path):
    """Replicas given the naive 0.9/N each (not {fraction}): started one after another on one
    simulated GPU, the first takes its share and the second keeps its warm-up blocks; the run
    says so on the console, in the manifest and in report.html."""
    base = free_port_block(2)
    scenario = tmp_path / "naive.yaml"
    scenario.write_text(textwrap.dedent(f"""
        name: naive
        target:
          protocol: tgi
          launcher:
            kind: processes
            command: [{PY}, -m, harness, emulate, --profile, fixed-50ms-10ms, --host, "{{host}}",
                      --port, "{{port}}", --shared-gpu, "{tmp_path / 'gpu.state'}",
                      --cuda-memory-fraction, "0.45"]
            base_port: {base}
            startup_timeout_s: 60
        workload:
          output_tokens: {{dist: fixed, value: 8}}
          prompt_tokens: {{dist: fixed, value: 16}}
        load:
          levels: [2]
          replicas: [2]
          warmup_s: 0.2
          duration_s: 2
          cooldown_s: 0.2
        store:
          results_dir: {tmp_path / "results"}
    """))
    r = subprocess.run([PY, "-m", "harness", "run", str(scenario)], capture_output=True,
                       text=True, timeout=240, env=harness_env())
    # (the verdict of this one short cell does not matter here; a launch failure would: 3)
    assert r.returncode in (0, 1, 4), r.stdout[-2000:] + r.stderr[-3000:]
    assert "replica KV budgets differ by" in r.stdout, r.stdout[-3000:]
    (run,) = list((tmp_path / "results").iterdir())
    kv = json.loads((run / "manifest.json").read_text())["kv_budgets"]["2"]
    big, small = kv["budgets"]
    assert big > 3 * small and kv["spread"] > 0.5 and "differ by" in kv["warning"]
    assert "replica KV budgets differ by" in (run / "report.html").read_text()
