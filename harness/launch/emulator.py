"""Bring up emulated replicas: ``slm-harness emulate`` as a child process (or in-process thread).

The child writes a port file once every replica listens; the launcher then waits for each
``/health`` and stops the child by PID (SIGTERM, then SIGKILL) on exit, whatever happened.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from harness.errors import LaunchError
from harness.launch.base import Replica, Replicas

STARTUP_TIMEOUT_S = 60.0


def wait_healthy(url: str, deadline: float, proc: subprocess.Popen | None = None, log: Path | None = None) -> None:
    last = "no answer"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise LaunchError(f"emulator exited with code {proc.returncode} before {url} was healthy; log: {log}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200:
                    return
                last = f"HTTP {r.status}"
        except (urllib.error.URLError, OSError) as e:
            last = str(getattr(e, "reason", e))
        time.sleep(0.05)
    raise LaunchError(f"replica {url} not healthy after {STARTUP_TIMEOUT_S:.0f} s ({last}); log: {log}")


class EmulatorLauncher:
    """Context manager yielding :class:`Replicas` served by the emulator."""

    def __init__(self, target, replicas: int, log_dir: Path, startup_timeout_s: float = STARTUP_TIMEOUT_S):
        self.cfg = target.launcher
        self.n = replicas
        self.log_dir = Path(log_dir)
        self.timeout = startup_timeout_s
        self.proc: subprocess.Popen | None = None
        self._log = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    # -- child process --------------------------------------------------------------------------
    def __enter__(self) -> Replicas:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if self.cfg.in_process:
            return self._start_in_process()
        log_path = self.log_dir / f"emulator-r{self.n}.log"
        port_file = Path(tempfile.mkdtemp(prefix="slm-emu-")) / "ports.json"
        cmd = [sys.executable, "-m", "harness", "emulate", "--replicas", str(self.n),
               "--profile", self.cfg.profile, "--host", self.cfg.host, "--port", str(self.cfg.base_port),
               "--port-file", str(port_file)]
        self._log = open(log_path, "ab")
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=env)
        try:
            deadline = time.monotonic() + self.timeout
            while not port_file.exists():
                if self.proc.poll() is not None:
                    raise LaunchError(f"emulator exited with code {self.proc.returncode} while starting; "
                                      f"log: {log_path}")
                if time.monotonic() > deadline:
                    raise LaunchError(f"emulator did not start listening within {self.timeout:.0f} s; log: {log_path}")
                time.sleep(0.02)
            info = json.loads(port_file.read_text())
            port_file.unlink(missing_ok=True)
            port_file.parent.rmdir()
            items = [Replica(index=i, url=u, pid=self.proc.pid, log_path=log_path) for i, u in enumerate(info["urls"])]
            for r in items:
                wait_healthy(r.url, deadline, self.proc, log_path)
        except BaseException:
            self._stop_child()
            raise
        return Replicas(items=items, kind="emulator", emulated=True,
                        extra={"profile": self.cfg.profile, "pid": self.proc.pid, "log": str(log_path)})

    def _stop_child(self) -> None:
        p, self.proc = self.proc, None
        if p is not None and p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None

    # -- in-process (a thread with its own event loop) -------------------------------------------
    def _start_in_process(self) -> Replicas:
        from harness.emulator.profile import load_profile
        from harness.emulator.server import Emulator

        profile = load_profile(self.cfg.profile)
        ready = threading.Event()
        box: dict = {}

        def run():
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            self._stop = asyncio.Event()
            try:
                em = Emulator(profile, self.n, loop)
                loop.run_until_complete(em.start(self.cfg.host, self.cfg.base_port))
                box["urls"] = em.urls(self.cfg.host)
            except BaseException as e:  # reported to the caller below
                box["error"] = e
                ready.set()
                return
            ready.set()
            loop.run_until_complete(self._stop.wait())
            loop.run_until_complete(em.stop())
            loop.close()

        self._thread = threading.Thread(target=run, name="slm-emulator", daemon=True)
        self._thread.start()
        ready.wait(self.timeout)
        if "error" in box or "urls" not in box:
            raise LaunchError(f"in-process emulator failed to start: {box.get('error', 'timeout')}")
        deadline = time.monotonic() + self.timeout
        items = [Replica(index=i, url=u, pid=os.getpid()) for i, u in enumerate(box["urls"])]
        for r in items:
            wait_healthy(r.url, deadline)
        return Replicas(items=items, kind="emulator", emulated=True,
                        extra={"profile": self.cfg.profile, "pid": os.getpid(), "in_process": True})

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._thread is not None:
            if self._loop is not None and self._stop is not None:
                self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout=10)
            self._thread = None
        self._stop_child()
