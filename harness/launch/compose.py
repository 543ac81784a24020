"""The compose stack: the override for N replicas, the compose command, and ComposeLauncher.

``docker-compose.yml`` holds replica 1 of each profile (``tgi-1`` for ``gpu``, ``vllm-1`` for
``vllm``, ``emulator-1`` for ``emulator``). :func:`render_override` copies that replica into
replicas 2..N with their own published port, DNS alias ``replica-<i>`` and memory fraction, makes
each replica wait for the previous one to be healthy (``depends_on: condition:
service_healthy``), and points the Locust master at every replica; the result is
``docker-compose.override.yml``, which compose reads on its own. The base file stays the single
source of each replica's definition.

Memory fractions (harness/launch/memory.py, docs/stack.md): TGI and the emulator size their KV
cache from the GPU's free memory at warm-up, so replica i of N gets ``share * i / N`` and starts
after replica i-1 is healthy; vLLM's ``--gpu-memory-utilization`` is a per-instance limit, so
each vLLM replica gets ``share / N``.
"""

from __future__ import annotations

import copy
import logging
import os
import secrets
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import yaml

from harness.errors import InputError, LaunchError
from harness.launch.base import Replica, Replicas
from harness.launch.health import is_emulated, is_healthy
from harness.launch.memory import GPU_MEMORY_SHARE, even_fractions, staggered_fractions

log = logging.getLogger(__name__)

COMPOSE_FILE = "docker-compose.yml"
OVERRIDE_FILE = "docker-compose.override.yml"
# profile -> the base file's replica 1, whose name ends in "-1"
REPLICA_TEMPLATES = {"gpu": "tgi-1", "vllm": "vllm-1", "emulator": "emulator-1"}
REPLICA_PORT = 8000                     # inside the network
# profile -> the flag that carries each replica's memory fraction, and how fractions are split
FRACTION_FLAGS = {"gpu": "--cuda-memory-fraction=", "emulator": "--cuda-memory-fraction=",
                  "vllm": "--gpu-memory-utilization="}
SHARE_VARIABLES = {"gpu": "CUDA_MEMORY_FRACTION", "emulator": "CUDA_MEMORY_FRACTION",
                   "vllm": "VLLM_GPU_MEMORY_UTILIZATION"}
PER_INSTANCE_LIMIT = {"vllm"}            # fractions independent of start order
URLS_VARIABLE = "${REPLICA_URLS"        # the base file's placeholder for the replica URL list
EMULATOR_URLS_VARIABLE = "${EMULATOR_URLS"  # one `--emulator-url X` repeated for every replica
# .env keys that hold secrets: generated when .env is first written, never printed
SECRET_KEYS = ("INFLUXDB_ADMIN_PASSWORD", "INFLUXDB_TOKEN", "GRAFANA_ADMIN_PASSWORD")


# ------------------------------------------------------------------------------------------------
# settings (.env + environment, as compose reads them)
# ------------------------------------------------------------------------------------------------
def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a compose ``.env`` file (comments and blank lines skipped)."""
    out: dict[str, str] = {}
    if not path.is_file():
        return out
    for n, line in enumerate(path.read_text().splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if "=" not in s:
            raise InputError("expected KEY=VALUE", file=str(path), line=n)
        k, v = s.split("=", 1)
        v = v.strip()
        if len(v) >= 2 and v[0] == v[-1] and v[0] in "'\"":
            v = v[1:-1]
        out[k.strip()] = v
    return out


def stack_settings(project_dir: Path, environ: dict[str, str] | None = None) -> dict[str, str]:
    """``.env`` overlaid by the process environment (the environment wins, as in compose)."""
    env = read_env_file(project_dir / ".env")
    env.update(os.environ if environ is None else environ)
    return env


def ensure_env_file(project_dir: Path) -> bool:
    """Write ``.env`` from ``.env.example`` with fresh random secrets when it is missing.

    Returns True when it wrote the file. The secrets are never printed or logged.
    """
    dst = project_dir / ".env"
    if dst.exists():
        return False
    src = project_dir / ".env.example"
    if not src.is_file():
        raise InputError("neither .env nor .env.example found", file=str(project_dir))
    lines = []
    for line in src.read_text().splitlines():
        key = line.split("=", 1)[0].strip()
        if key in SECRET_KEYS and line.strip().endswith("="):
            line = f"{key}={secrets.token_hex(24)}"
        lines.append(line)
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines) + "\n")
    return True


# ------------------------------------------------------------------------------------------------
# rendering
# ------------------------------------------------------------------------------------------------
def load_base(project_dir: Path) -> dict:
    path = project_dir / COMPOSE_FILE
    if not path.is_file():
        raise InputError(f"no {COMPOSE_FILE} here", file=str(path))
    return yaml.safe_load(path.read_text())


def replica_services(profile: str, replicas: int) -> list[str]:
    prefix = REPLICA_TEMPLATES[profile][:-2]
    return [f"{prefix}-{i}" for i in range(1, replicas + 1)]


def replica_urls(replicas: int) -> list[str]:
    """The replicas' addresses inside the compose network (client-side balancing, attribution)."""
    return [f"http://replica-{i}:{REPLICA_PORT}" for i in range(1, replicas + 1)]


def _with_fraction(command: list, flag: str, fraction: float) -> list:
    return [f"{flag}{fraction:g}" if isinstance(a, str) and a.startswith(flag) else a
            for a in command]


def fractions_for(profile: str, replicas: int, share: float = GPU_MEMORY_SHARE,
                  all_at_once: bool = False) -> list[float]:
    """Each replica's memory fraction (see the module docstring)."""
    if profile in PER_INSTANCE_LIMIT or all_at_once:
        return even_fractions(replicas, share)
    return staggered_fractions(replicas, share)


def share_setting(settings: dict | None, profile: str) -> float:
    raw = (settings or {}).get(SHARE_VARIABLES[profile]) or str(GPU_MEMORY_SHARE)
    try:
        share = float(raw)
    except ValueError:
        raise InputError(f"expected a number, got {raw!r}", file=".env",
                         field=SHARE_VARIABLES[profile]) from None
    if not 0 < share <= 1:
        raise InputError(f"must be in (0, 1], got {raw!r}", file=".env",
                         field=SHARE_VARIABLES[profile])
    return share


def render_override(project_dir: Path, replicas: int, base_port: int, *,
                    settings: dict | None = None, all_at_once: bool = False) -> dict:
    """The override document for ``replicas`` replicas of each profile (see module docstring).

    ``all_at_once``: the naive layout (even fractions, no start order), kept only to show what
    goes wrong with it: TGI replicas then get very different KV budgets.
    """
    if replicas < 1:
        raise InputError("replicas must be >= 1", field="--replicas")
    base = load_base(project_dir)
    services = base["services"]
    out: dict[str, dict] = {}
    for profile, first in REPLICA_TEMPLATES.items():
        if first not in services:
            continue
        tmpl = services[first]
        flag = FRACTION_FLAGS[profile]
        fractions = fractions_for(profile, replicas, share_setting(settings, profile), all_at_once)
        names = replica_services(profile, replicas)
        for i, name in enumerate(names, start=1):
            if i == 1:
                svc = {}
            else:
                svc = copy.deepcopy(tmpl)
                svc["ports"] = [f"127.0.0.1:{base_port + i - 1}:{REPLICA_PORT}"]
                svc["networks"] = {"default": {"aliases": ["replica", f"replica-{i}"]}}
                svc["labels"] = {**svc.get("labels", {}), "org.slm-harness.replica": str(i)}
                if not all_at_once:
                    svc["depends_on"] = {**(tmpl.get("depends_on") or {}),
                                         names[i - 2]: {"condition": "service_healthy"}}
            if isinstance(tmpl.get("command"), list):
                svc["command"] = _with_fraction(svc.get("command", tmpl["command"]), flag,
                                                fractions[i - 1])
            if svc:
                out[name] = svc
    for name, svc in services.items():
        cmd = svc.get("command")
        if isinstance(cmd, list):
            new = _with_urls(out.get(name, {}).get("command", cmd), replica_urls(replicas))
            if new != cmd:
                out.setdefault(name, {})["command"] = new
    return {"services": out}


def _with_urls(cmd: list, urls: list[str]) -> list:
    """The replica list in place of the base file's placeholders (see the constants above)."""
    out: list = []
    for a in cmd:
        if isinstance(a, str) and URLS_VARIABLE in a:
            out.append(",".join(urls))
        elif isinstance(a, str) and EMULATOR_URLS_VARIABLE in a:
            flag = out.pop() if out and isinstance(out[-1], str) and out[-1].startswith("--") else None
            for u in urls:
                out += [flag, u] if flag else [u]
        else:
            out.append(a)
    return out


def write_override(project_dir: Path, replicas: int, base_port: int,
                   output: Path | None = None, *, settings: dict | None = None,
                   all_at_once: bool = False) -> Path:
    doc = render_override(project_dir, replicas, base_port, settings=settings,
                          all_at_once=all_at_once)
    path = output or project_dir / OVERRIDE_FILE
    order = ("all at once, even memory fractions (budgets will differ)" if all_at_once else
             "one after another, each after the previous is healthy")
    header = (f"# Generated by `slm-harness stack render --replicas {replicas}`: replicas 2..N, "
              f"started {order};\n# each replica's memory fraction, published ports from "
              f"127.0.0.1:{base_port}, and the Locust master's replica list. Re-render, "
              "do not edit.\n")
    path.write_text(header + yaml.safe_dump(doc, sort_keys=False, width=100))
    return path


# ------------------------------------------------------------------------------------------------
# running compose
# ------------------------------------------------------------------------------------------------
def compose_command() -> list[str]:
    """``$SLM_COMPOSE`` if set, else ``docker compose`` (v2) when present, else ``docker-compose``."""
    if os.environ.get("SLM_COMPOSE"):
        return shlex.split(os.environ["SLM_COMPOSE"])
    if shutil.which("docker"):
        r = subprocess.run(["docker", "compose", "version"], capture_output=True)
        if r.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise LaunchError("neither `docker compose` nor `docker-compose` found")


def run_compose(project_dir: Path, args: list[str], *, env: dict | None = None,
                check: bool = True, capture: bool = False,
                timeout_s: float | None = None) -> subprocess.CompletedProcess:
    cmd = compose_command() + args
    log.info("compose: %s", " ".join(cmd))
    r = subprocess.run(cmd, cwd=project_dir, env={**os.environ, **(env or {})}, text=True,
                       capture_output=capture, timeout=timeout_s)
    if check and r.returncode != 0:
        detail = (r.stderr or "")[-2000:] if capture else ""
        raise LaunchError(f"`{' '.join(cmd)}` failed with code {r.returncode}\n{detail}")
    return r


def container_ids(project_dir: Path, service: str, env: dict | None = None) -> list[str]:
    r = run_compose(project_dir, ["ps", "-q", service], env=env, capture=True, check=False)
    return [x for x in r.stdout.split() if x]


def container_state(cid: str) -> tuple[str, int]:
    r = subprocess.run(["docker", "inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", cid],
                       capture_output=True, text=True)
    if r.returncode != 0:
        return "missing", -1
    status, code = r.stdout.split()
    return status, int(code)


class ComposeLauncher:
    """Context manager: N replica containers of one profile up and healthy, removed on exit.

    Only the replica services are started (``--no-deps``), one after another, each once the
    previous one answers its health path: the order the rendered override's ``depends_on`` chain
    gives ``compose up``, and the order TGI's memory sizing needs. Then every replica's KV budget
    is read and a spread above 10% is a loud warning (``Replicas.extra``: the manifest's record).
    The harness process itself is the load generator, reaching each replica on its published
    port 127.0.0.1:base_port+i.
    """

    def __init__(self, target, replicas: int, log_dir: Path, *, poll_s: float = 1.0):
        cfg = target.launcher
        self.project_dir = Path(cfg.project_dir).resolve()
        self.profile = cfg.profile
        self.base_port = cfg.base_port
        self.health_path = cfg.health_path
        self.timeout_s = cfg.startup_timeout_s
        self.n = replicas
        self.log_dir = Path(log_dir)
        self.poll_s = poll_s
        self.services = replica_services(self.profile, replicas)
        self.env = {"REPLICA_BASE_PORT": str(self.base_port)}
        self._started = False

    def _args(self, *rest: str) -> list[str]:
        return ["--profile", self.profile, *rest]

    def __enter__(self) -> Replicas:
        settings = stack_settings(self.project_dir)
        write_override(self.project_dir, self.n, self.base_port, settings=settings)
        items = [Replica(index=i, url=f"http://127.0.0.1:{self.base_port + i}",
                         log_path=self.log_dir / f"replica-{i}.log") for i in range(self.n)]
        try:
            self._started = True
            deadline = time.monotonic() + self.timeout_s
            for i, svc in enumerate(self.services):
                run_compose(self.project_dir, self._args("up", "-d", "--no-deps", svc),
                            env=self.env, capture=True)
                self._wait_healthy(items, i, deadline)
        except BaseException:
            self.stop()
            raise
        from harness.launch.memory import check_budgets

        budgets = check_budgets([r.url for r in items], logs=self._log_text)
        return Replicas(items=items, kind="compose", emulated=all(is_emulated(r.url) for r in items),
                        extra={"services": list(self.services), "profile": self.profile,
                               **budgets})

    def __exit__(self, exc_type, exc, tb) -> None:
        self.stop()

    def _wait_healthy(self, items: list[Replica], i: int, deadline: float) -> None:
        svc = self.services[i]
        while True:
            cids = container_ids(self.project_dir, svc, self.env)
            state = container_state(cids[0]) if cids else ("missing", -1)
            if state[0] in ("exited", "dead", "missing"):
                self._save_logs()
                raise LaunchError(f"replica {i} ({svc}) {state[0]} with code {state[1]} "
                                  f"before it was healthy; log {items[i].log_path}")
            if is_healthy(items[i].url, self.health_path, timeout_s=1.0):
                log.info("replica %d (%s) healthy at %s", i, svc, items[i].url)
                return
            if time.monotonic() > deadline:
                self._save_logs()
                raise LaunchError(f"replica {i} ({svc}) not healthy after "
                                  f"{self.timeout_s:g} s at {items[i].url}{self.health_path}; "
                                  f"log {items[i].log_path}")
            time.sleep(self.poll_s)

    def _log_text(self, i: int) -> str:
        r = run_compose(self.project_dir, self._args("logs", "--no-color", self.services[i]),
                        env=self.env, capture=True, check=False)
        return r.stdout + r.stderr

    def _save_logs(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for i, svc in enumerate(self.services):
            r = run_compose(self.project_dir, self._args("logs", "--no-color", svc), env=self.env,
                            capture=True, check=False)
            (self.log_dir / f"replica-{i}.log").write_text(r.stdout + r.stderr)

    def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        self._save_logs()
        run_compose(self.project_dir, self._args("rm", "-f", "-s", "-v", *self.services),
                    env=self.env, capture=True, check=False)
        # the project's network goes too, unless other services of the stack still run there
        everyone = [a for p in REPLICA_TEMPLATES for a in ("--profile", p)]
        left = run_compose(self.project_dir, everyone + ["ps", "-q"], env=self.env,
                           capture=True, check=False)
        if left.returncode == 0 and not left.stdout.split():
            run_compose(self.project_dir, everyone + ["down", "--remove-orphans"], env=self.env,
                        capture=True, check=False)
