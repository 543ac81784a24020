"""Child processes for end-to-end tests: ``slm-harness`` and Locust started with the repository
on ``PYTHONPATH``, waited for with a deadline, and stopped by PID."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
LOCUSTFILE = str(ROOT / "locustfiles" / "tgi.py")


class Host(Protocol):
    """Somewhere else to run a command (tests/netns.py's network hosts)."""

    def argv(self, *cmd: str) -> list[str]: ...


def harness_env(**changes: str | None) -> dict[str, str]:
    """This environment with the repository importable and output unbuffered; a change set to
    None removes that variable."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    for k, v in changes.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return env


def bare_env() -> dict[str, str]:
    """PATH (/usr/bin:/bin) and the repository on PYTHONPATH, nothing else: the command must not
    depend on anything more in the environment."""
    return {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}


def harness(*args: str, timeout: float = 120, env: dict | None = None,
            cwd: Path | str = ROOT) -> subprocess.CompletedProcess:
    """``python -m harness ARGS`` to the end, its output captured as text."""
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=cwd, env=env or harness_env(),
                          capture_output=True, text=True, timeout=timeout)


def locust_argv(*args: str, locustfile: str = LOCUSTFILE) -> list[str]:
    """The command line of Locust on the harness's locustfile."""
    return [sys.executable, "-m", "locust", "-f", locustfile, *args]


def stop(*procs: subprocess.Popen, timeout: float = 10) -> None:
    """SIGTERM each process still running, SIGKILL it if it does not end in ``timeout`` seconds."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def start_port_printer(*argv: str, env: dict | None = None) -> tuple[subprocess.Popen, str]:
    """A helper server that prints ``PORT <n>`` once it listens on 127.0.0.1 (the fake streaming
    server, the path-prefix gateway); its process and base URL."""
    p = subprocess.Popen(list(argv), stdout=subprocess.PIPE, text=True, env=env or harness_env())
    line = p.stdout.readline()
    if not line.startswith("PORT "):
        stop(p)
        raise AssertionError(f"{argv[1] if len(argv) > 1 else argv[0]} did not start: {line!r}")
    return p, f"http://127.0.0.1:{int(line.split()[1])}"


def prefix_proxy(upstream: str, prefix: str, *flags: str) -> tuple[subprocess.Popen, str]:
    """tests/prefix_proxy.py: ``upstream`` served under ``prefix``; its process and base URL."""
    return start_port_printer(sys.executable, str(ROOT / "tests" / "prefix_proxy.py"), upstream, prefix, *flags)


def wait_for(pred: Callable[[], object], timeout: float, what: str, interval: float = 0.2):
    """Poll ``pred`` until it returns something true (returned) or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def wait_for_file(path: Path, proc: subprocess.Popen, timeout: float, log: Path | None = None) -> None:
    """Wait until ``proc`` has written ``path``; fail at once, with its log, if it exits first."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        detail = log.read_text()[-3000:] if log is not None and log.exists() else ""
        assert proc.poll() is None, f"process exited with {proc.returncode} before writing {path}\n{detail}"
        assert time.monotonic() < deadline, f"{path} not written within {timeout} s\n{detail}"
        time.sleep(0.05)


@dataclass
class LocustCluster:
    """A Locust master (output piped) and its worker processes."""

    master: subprocess.Popen
    workers: list[subprocess.Popen]

    def finish(self, timeout: float = 120) -> str:
        """The master's output once it ends; each worker must end within 30 s after it."""
        out, _ = self.master.communicate(timeout=timeout)
        for w in self.workers:
            w.wait(30)
        return out


@contextlib.contextmanager
def locust_cluster(scenario: Path, urls: list[str], tmp: Path, *, workers: int = 2,
                   master_host: str = "127.0.0.1", port: int | None = None, env: dict | None = None,
                   hosts: Mapping[str, Host] | None = None):
    """A headless Locust master expecting ``workers`` workers (results in ``tmp/res``, summary in
    ``tmp/sum.json``) and the workers ``w1``, ``w2``... (output in ``tmp/w1.log``...). ``hosts``
    runs the master and each worker on the host of its name. Every process is stopped on exit."""
    def on_host(name: str, argv: list[str]) -> list[str]:
        return hosts[name].argv(*argv) if hosts else argv

    port = port or free_port()
    env = env or harness_env()
    master = subprocess.Popen(on_host("master", locust_argv(
        "--scenario", str(scenario), "--host", ",".join(urls), "--headless", "--master",
        "--master-bind-host", master_host, "--master-bind-port", str(port), "--expect-workers", str(workers),
        "--slm-results", str(tmp / "res"), "--slm-json", str(tmp / "sum.json"), "--only-summary")),
        env=env, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    procs = [master]
    try:
        for i in range(1, workers + 1):
            with open(tmp / f"w{i}.log", "wb") as log:
                procs.append(subprocess.Popen(on_host(f"w{i}", locust_argv(
                    "--worker", "--master-host", master_host, "--master-port", str(port))),
                    env=env, cwd=tmp, stdout=log, stderr=subprocess.STDOUT))
        yield LocustCluster(master, procs[1:])
    finally:
        stop(*procs, timeout=5)


def start_emulator(tmp: Path, *args: str, profile: str = "fixed-50ms-10ms", env: dict | None = None,
                   host: Host | None = None, timeout: float = 30) -> tuple[subprocess.Popen, list[str]]:
    """``slm-harness emulate`` as its own process on ports it picks; the process and every
    replica's URL once it has written them. Its stderr goes to ``tmp/emulator.log``."""
    pf = tmp / f"ports-{time.monotonic_ns()}.json"
    log = tmp / "emulator.log"
    argv = [sys.executable, "-m", "harness", "emulate", "--profile", profile, "--port", "0",
            "--port-file", str(pf), *args]
    with open(log, "ab") as err:
        p = subprocess.Popen(host.argv(*argv) if host else argv, env=env or harness_env(),
                             stdout=subprocess.DEVNULL, stderr=err)
    try:
        wait_for_file(pf, p, timeout, log)
    except BaseException:
        stop(p)
        raise
    return p, json.loads(pf.read_text())["urls"]


@contextlib.contextmanager
def emulator_process(*args: str, profile: str = "fixed-50ms-10ms", env: dict | None = None):
    """``start_emulator`` in a temporary directory; yields every replica's URL, stops it on exit."""
    with tempfile.TemporaryDirectory() as d:
        p, urls = start_emulator(Path(d), *args, profile=profile, env=env)
        try:
            yield urls
        finally:
            stop(p)
