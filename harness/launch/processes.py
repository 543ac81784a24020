"""Replicas started as local processes from an argument template, without Docker.

``target.launcher.command`` is a list of arguments such as
``["text-generation-launcher", "--model-id", "{model}", "--port", "{port}",
"--cuda-memory-fraction", "{fraction}"]`` or
``["transformers", "serve", "{model}", "--continuous-batching", "--port", "{port}"]``.
It is started once per replica with ``{port}``, ``{replica}``, ``{model}``, ``{fraction}``
and ``{host}`` substituted in each argument, never through a shell. Replicas start one after
another, each once the previous one is healthy, and replica i of N gets ``{fraction}`` =
0.9 * (i+1) / N: TGI sizes its KV cache from the GPU's free memory at warm-up, and these
fractions give every replica the same budget (harness/launch/memory.py, docs/stack.md).
Each replica gets its own log file and its own process group, so stopping it (SIGTERM, then
SIGKILL after a grace period) reaches the children it spawned (TGI's shards) and nothing else.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from harness.errors import InputError, LaunchError
from harness.launch.base import Replica, Replicas
from harness.launch.health import is_emulated, is_healthy, port_in_use
from harness.launch.memory import check_budgets, staggered_fractions

log = logging.getLogger(__name__)

PLACEHOLDERS = ("port", "replica", "model", "fraction", "host")


def render_args(template: list[str], *, port: int, replica: int, model: str, fraction: float,
                host: str) -> list[str]:
    """The argument list of one replica; an unknown ``{name}`` is an input error naming it."""
    values = {"port": port, "replica": replica, "model": model, "fraction": f"{fraction:g}",
              "host": host}
    out = []
    for i, arg in enumerate(template):
        try:
            out.append(arg.format_map(values))
        except KeyError as e:
            raise InputError(f"unknown placeholder {{{e.args[0]}}} in {arg!r}; known: "
                             + ", ".join("{" + p + "}" for p in PLACEHOLDERS),
                             field=f"target.launcher.command[{i}]") from None
        except (ValueError, IndexError) as e:
            raise InputError(f"bad template {arg!r}: {e} (write {{{{ and }}}} for braces)",
                             field=f"target.launcher.command[{i}]") from None
    return out


def tail(path: Path | None, lines: int = 8) -> str:
    """The last lines of a log, for error messages."""
    if not path or not path.exists():
        return ""
    text = path.read_text(errors="replace").splitlines()[-lines:]
    return "\n".join("    " + t for t in text)


def stop_process_group(proc: subprocess.Popen, grace_s: float = 10.0) -> int | None:
    """SIGTERM the process group ``proc`` leads, SIGKILL it after ``grace_s``; returns its code."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
    # whatever the leader left behind in its group goes too (the leader may have exited already)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        return proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        return None


class ProcessLauncher:
    """Context manager: N replica processes up and healthy inside, all stopped on exit."""

    def __init__(self, target, replicas: int, log_dir: Path, *, poll_s: float = 0.2,
                 stop_grace_s: float = 10.0):
        if replicas < 1:
            raise InputError("replicas must be >= 1", field="load.replicas")
        self.cfg = target.launcher
        self.model = target.model
        self.n = replicas
        self.log_dir = Path(log_dir)
        self.poll_s = poll_s
        self.stop_grace_s = stop_grace_s
        self._procs: list[subprocess.Popen] = []
        self._logs: list = []
        self.replicas: Replicas | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    def __enter__(self) -> Replicas:
        try:
            items = self._start_all()
        except BaseException:
            self.stop()
            raise
        emulated = all(is_emulated(r.url) for r in items)
        extra = {"command": list(self.cfg.command),
                 **check_budgets([r.url for r in items],
                                 logs=lambda i: items[i].log_path.read_text(errors="replace"))}
        self.replicas = Replicas(items=items, kind="processes", emulated=emulated, extra=extra)
        return self.replicas

    def __exit__(self, exc_type, exc, tb) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop every replica this launcher started, by its process group; idempotent."""
        for i, proc in enumerate(self._procs):
            code = stop_process_group(proc, self.stop_grace_s)
            log.info("replica %d (pid %d) stopped, exit code %s", i, proc.pid, code)
        for f in self._logs:
            f.close()
        self._procs.clear()
        self._logs.clear()

    # -- steps ----------------------------------------------------------------------------------
    def _start_all(self) -> list[Replica]:
        """Each replica started once the previous one is healthy (see the module docstring)."""
        cfg = self.cfg
        exe = cfg.command[0]
        if shutil.which(exe, path=cfg.env.get("PATH", os.environ.get("PATH"))) is None:
            raise LaunchError(f"replica command {exe!r} not found on PATH "
                              "(target.launcher.command[0])")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        fractions = staggered_fractions(self.n)
        env = {**os.environ, **cfg.env}
        items: list[Replica] = []
        deadline = time.monotonic() + cfg.startup_timeout_s
        for i in range(self.n):
            port = cfg.base_port + i
            if port_in_use(cfg.host, port):
                raise LaunchError(f"replica {i}: port {cfg.host}:{port} is already in use "
                                  "(target.launcher.base_port)")
            args = render_args(list(cfg.command), port=port, replica=i, model=self.model,
                               fraction=fractions[i], host=cfg.host)
            log_path = self.log_dir / f"replica-{i}.log"
            f = open(log_path, "ab")
            self._logs.append(f)
            f.write(f"# replica {i}: {args!r}\n".encode())
            f.flush()
            proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=f,
                                    stderr=subprocess.STDOUT, env=env, start_new_session=True)
            self._procs.append(proc)
            log.info("replica %d: pid %d on port %d, log %s", i, proc.pid, port, log_path)
            items.append(Replica(index=i, url=f"http://{cfg.host}:{port}", pid=proc.pid,
                                 log_path=log_path))
            self._wait_healthy(items[i], proc, deadline)
        return items

    def _wait_healthy(self, item: Replica, proc: subprocess.Popen, deadline: float) -> None:
        i = item.index
        while True:
            code = proc.poll()
            if code is not None:
                raise LaunchError(
                    f"replica {i} exited early with code {code} before it was healthy; "
                    f"log {item.log_path}:\n{tail(item.log_path)}")
            if is_healthy(item.url, self.cfg.health_path, timeout_s=1.0):
                return
            if time.monotonic() > deadline:
                raise LaunchError(
                    f"replica {i} not healthy after {self.cfg.startup_timeout_s:g} s "
                    f"(GET {item.url}{self.cfg.health_path}); log {item.log_path}:\n"
                    f"{tail(item.log_path)}")
            time.sleep(self.poll_s)
