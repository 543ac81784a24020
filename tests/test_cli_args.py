"""Bad command lines: each one refused with one line naming the flag and exit code 2, before any
replica is launched or any load is sent, for every command.

The cases run in one Python process through ``harness.cli.main`` (the same function the console
script calls: parsing, the checks that need this machine, the command), so the table stays fast;
a few of them also run through the installed ``slm-harness`` console script.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

OK = "name: ok\nload: {levels: [1], duration_s: 1, warmup_s: 0, cooldown_s: 0}\n"

# (name, argv with {ok} {file} {tmp} placeholders, flag named in the message, fragment)
CASES = [
    ("run_levels_inf", "run {ok} --levels inf", "--levels", "finite"),
    ("run_levels_nan", "run {ok} --levels nan", "--levels", "finite"),
    ("run_levels_negative", "run {ok} --levels -1", "--levels", "above 0"),
    ("run_levels_zero", "run {ok} --levels 0", "--levels", "above 0"),
    ("run_levels_huge", "run {ok} --levels 1e12", "--levels", "at most 100000"),
    ("run_levels_text", "run {ok} --levels lots", "--levels", "expected a number"),
    ("run_levels_empty_item", "run {ok} --levels 1,,2", "--levels", "separated by commas"),
    ("run_replicas_zero", "run {ok} --replicas 0", "--replicas", "from 1 to 256"),
    ("run_replicas_negative", "run {ok} --replicas -1", "--replicas", "from 1 to 256"),
    ("run_replicas_fraction", "run {ok} --replicas 1.5", "--replicas", "whole number"),
    ("run_processes_negative", "run {ok} --processes -1", "--processes", "from 0 to 1024"),
    ("run_url_notaport", "run {ok} --url http://127.0.0.1:notaport", "--url", "port must be a number"),
    ("run_url_garbage", "run {ok} --url garbage", "--url", "must start with http"),
    ("run_url_no_host", "run {ok} --url http://:80", "--url", "no host"),
    ("run_url_bad_host", "run {ok} --url http://no-such-host.invalid:8080", "--url", "does not resolve"),
    ("run_url_second_bad", "run {ok} --url http://127.0.0.1:9,ftp://x", "--url", "must start with http"),
    ("run_results_file", "run {ok} --results {file}", "--results", "is a file"),
    ("run_results_under_file", "run {ok} --results {file}/sub", "--results", "cannot be a directory"),
    ("run_results_proc", "run {ok} --results /proc", "--results", "kernel file system"),
    ("run_json_missing_dir", "run {ok} --json {tmp}/missing/out.json", "--json", "does not exist"),
    ("run_json_is_dir", "run {ok} --json {tmp}", "--json", "is a directory"),
    ("run_web_ui_bad", "run {ok} --web-ui nowhere", "--web-ui", "HOST:PORT"),
    ("run_bad_scenario", "run {bad}", None, "load.levels[0]"),
    ("run_endpoint_host_unknown", "run {badhost}", None, "does not resolve"),
    ("sweep_processes_negative", "sweep {ok} --processes -1", "--processes", "from 0 to 1024"),
    ("sweep_results_proc", "sweep {ok} --results /proc/self", "--results", "kernel file system"),
    ("sweep_results_file", "sweep {ok} --results {file}", "--results", "is a file"),
    ("sweep_resume_missing", "sweep {ok} --resume {tmp}/nope", "--resume", "run directory not found"),
    ("validate_missing_file", "validate {tmp}/absent.yaml", None, "scenario file not found"),
    ("validate_directory", "validate {tmp}", None, "is a directory"),
    ("emulate_replicas_zero", "emulate --replicas 0", "--replicas", "from 1 to 256"),
    ("emulate_port_range", "emulate --port 70000", "--port", "from 0 to 65535"),
    ("emulate_tick_nan", "emulate --tick-us nan", "--tick-us", "finite"),
    ("emulate_keepalive_zero", "emulate --keep-alive-s 0", "--keep-alive-s", "above 0"),
    ("emulate_port_file_missing_dir", "emulate --port-file {tmp}/missing/p.json", "--port-file", "does not exist"),
    ("emulate_tls_cert_missing", "emulate --tls-cert {tmp}/no.pem --tls-key {tmp}/no.key", "--tls-cert",
     "file not found"),
    ("emulate_memory_fraction", "emulate --cuda-memory-fraction 1.5", "--cuda-memory-fraction", "at most 1"),
    ("emulate_load_inf", "emulate --load-s inf", "--load-s", "finite"),
    ("stack_wait_negative", "stack up --wait-s -1", "--wait-s", "at least 0"),
    ("sidecar_rate_inf", "sidecar --rate-hz inf", "--rate-hz", "finite"),
    ("sidecar_rate_zero", "sidecar --rate-hz 0", "--rate-hz", "above 0"),
    ("sidecar_influx_url", "sidecar --influx-url not-a-url", "--influx-url", "must start with http"),
    ("sidecar_gpus", "sidecar --gpus a,b", "--gpus", "GPU indices"),
    ("sidecar_duration_inf", "sidecar --duration-s inf", "--duration-s", "finite"),
    ("sidecar_results_file", "sidecar --results-dir {file}", "--results-dir", "is a file"),
    ("report_missing", "report {tmp}/nope", "RUN_DIR", "run directory not found"),
    ("report_out_file", "report {tmp} --out {file}", "--out", "is a file"),
    ("compare_missing", "compare {tmp} {tmp}/nope", "RUN_B", "run directory not found"),
    ("compare_json_missing_dir", "compare {tmp} {tmp} --json {tmp}/no/c.json", "--json", "does not exist"),
    ("stack_replicas_zero", "stack render --replicas 0", "--replicas", "from 1 to 256"),
    ("stack_project_dir_missing", "stack status --project-dir {tmp}/nope", "--project-dir", "directory not found"),
    ("stack_workers_negative", "stack up --workers -2", "--workers", "from 0 to 1024"),
    ("schema_unknown_flag", "schema --bogus", None, "unrecognized arguments: --bogus"),
    ("unknown_command", "frobnicate", "COMMAND", "invalid choice"),
    ("run_without_scenario", "run", None, "required: SCENARIO"),
]

DRIVER = r"""
import contextlib, io, json, sys
from harness.cli import main
out = []
for argv in json.loads(sys.stdin.read()):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            rc = main(argv)
        except SystemExit as e:
            rc = e.code
    out.append({"rc": rc, "err": err.getvalue()})
print(json.dumps(out))
"""


def _argv(template: str, tmp: Path) -> list[str]:
    return [a.format(ok=tmp / "ok.yaml", bad=tmp / "bad.yaml", badhost=tmp / "badhost.yaml",
                     file=tmp / "afile", tmp=tmp)
            for a in template.split()]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    (tmp / "ok.yaml").write_text(OK)
    (tmp / "bad.yaml").write_text("name: x\nload: {levels: [.inf]}\n")
    (tmp / "badhost.yaml").write_text("name: x\ntarget:\n  launcher:\n    kind: endpoints\n"
                                      "    urls: ['http://no-such-host.invalid:8080']\n")
    (tmp / "afile").write_text("not a directory\n")
    return tmp


@pytest.fixture(scope="module")
def results(workdir):
    """Every case, run in one process (no network listener, no replica, no load can start)."""
    argvs = [_argv(c[1], workdir) for c in CASES]
    proc = subprocess.run([sys.executable, "-c", DRIVER], input=json.dumps(argvs), capture_output=True,
                          text=True, cwd=workdir, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return dict(zip((c[0] for c in CASES), json.loads(proc.stdout.splitlines()[-1])))


def test_table_is_large_enough():
    assert len(CASES) >= 30 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("name,template,flag,fragment", CASES, ids=[c[0] for c in CASES])
def test_bad_command_line(results, workdir, name, template, flag, fragment):
    r = results[name]
    err = r["err"].strip()
    assert r["rc"] == 2, r
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("slm-harness: error: "), err
    if flag is not None:
        assert err.startswith(f"slm-harness: error: {flag}: "), err
    assert fragment in err, err
    # nothing was started: no run directory appeared in the working directory
    assert not (workdir / "results").exists()


def test_bad_scenario_through_run_names_file_and_line(results, workdir):
    err = results["run_bad_scenario"]["err"].strip()
    assert err == f"slm-harness: error: {workdir / 'bad.yaml'}:2: load.levels[0]: Input should be a finite number (got Infinity)"
    # an endpoint host that does not resolve: refused at once, not a 30 s health wait and exit 3
    err = results["run_endpoint_host_unknown"]["err"].strip()
    assert err.startswith(f"slm-harness: error: {workdir / 'badhost.yaml'}:5: target.launcher.urls[0]: "
                          "host 'no-such-host.invalid' does not resolve"), err


CONSOLE_CASES = ["run_levels_inf", "run_replicas_zero", "run_url_notaport", "run_results_proc",
                 "run_json_missing_dir", "sweep_processes_negative"]


def test_console_script(workdir):
    """The installed entry point gives the same answers (run side by side to stay quick)."""
    exe = shutil.which("slm-harness", path=str(Path(sys.executable).parent)) or "slm-harness"
    by_name = {c[0]: c for c in CASES}

    def one(name):
        return subprocess.run([exe, *_argv(by_name[name][1], workdir)], capture_output=True, text=True,
                              cwd=workdir, stdin=subprocess.DEVNULL, timeout=120)

    with ThreadPoolExecutor(3) as pool:
        procs = list(pool.map(one, CONSOLE_CASES))
    for name, p in zip(CONSOLE_CASES, procs):
        _, _, flag, fragment = by_name[name]
        assert p.returncode == 2, (name, p.stderr)
        assert p.stderr.startswith(f"slm-harness: error: {flag}: ") and fragment in p.stderr, p.stderr
        assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_schema_into_a_closed_pipe_is_quiet(tmp_path):
    """``slm-harness schema | head``: the reader goes away early; no BrokenPipeError traceback."""
    proc = subprocess.Popen([sys.executable, "-m", "harness", "schema"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "0"})
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err, err


def test_sigterm_during_a_sweep_prints_no_traceback(tmp_path):
    """SIGTERM mid-cell: exit 130, the resume hint, and no traceback from gevent's hub."""
    import signal
    import time

    scen = tmp_path / "sw.yaml"
    scen.write_text("name: sw\ntarget: {launcher: {kind: emulator}}\n"
                    "load: {levels: [4], replicas: [1], duration_s: 20, warmup_s: 0, cooldown_s: 0}\n")
    proc = subprocess.Popen([sys.executable, "-m", "harness", "sweep", str(scen), "--results",
                             str(tmp_path / "res"), "--plain"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        for line in proc.stdout:
            if "[r1-c4] cell 1/1 started" in line:
                time.sleep(1.5)
                proc.send_signal(signal.SIGTERM)
                break
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"the sweep did not end within 120 s of SIGTERM: {err[-2000:]}")
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, (proc.returncode, err[-2000:])
    assert "sweep stopped: terminated (SIGTERM)" in err and "--resume" in err
    assert "Traceback" not in err + out, err[-2000:]


def test_a_directory_this_user_cannot_write(tmp_path):
    """``--results`` and ``--json`` where the user may not write: refused before the run starts.
    As root, the check runs without the capability that overrides file permissions."""
    ro = tmp_path / "readonly"
    ro.mkdir()
    (tmp_path / "ok.yaml").write_text(OK)
    ro.chmod(0o555)
    cases = [["run", str(tmp_path / "ok.yaml"), "--results", str(ro)],
             ["run", str(tmp_path / "ok.yaml"), "--results", str(ro / "deeper" / "res")],
             ["run", str(tmp_path / "ok.yaml"), "--json", str(ro / "out.json")],
             ["sweep", str(tmp_path / "ok.yaml"), "--results", str(ro)]]
    prefix = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        assert setpriv, "setpriv (util-linux) is needed to drop root's permission override"
        prefix = [setpriv, "--bounding-set=-dac_override,-dac_read_search",
                  "--inh-caps=-dac_override,-dac_read_search"]
    try:
        proc = subprocess.run([*prefix, sys.executable, "-c", DRIVER], input=json.dumps(cases),
                              capture_output=True, text=True, cwd=tmp_path, timeout=120)
    finally:
        ro.chmod(0o755)
    assert proc.returncode == 0, proc.stderr
    for argv, r in zip(cases, json.loads(proc.stdout.splitlines()[-1])):
        err = r["err"].strip()
        assert r["rc"] == 2 and "Traceback" not in err and len(err.splitlines()) == 1, (argv, r)
        flag = argv[2]
        assert err.startswith(f"slm-harness: error: {flag}: cannot write in {ro} (Permission denied)"), err
    assert list(ro.iterdir()) == []


def test_a_resolver_that_never_answers_does_not_hold_the_command(monkeypatch):
    import socket
    import time

    from harness import urls

    def stuck(*a, **k):
        time.sleep(5)         # the answer comes past both the timeout and the bound below
        raise socket.gaierror(-2, "too late")

    monkeypatch.setattr(urls, "RESOLVE_TIMEOUT_S", 0.3)
    monkeypatch.setattr(socket, "getaddrinfo", stuck)
    t0 = time.monotonic()
    with pytest.raises(ValueError, match="'slow.example' did not resolve within 0.3 s"):
        urls.resolve_host("http://slow.example:80")
    assert time.monotonic() - t0 < 4       # 0.3 s, with room for a loaded machine; not the 5 s
