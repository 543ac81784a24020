"""``slm-harness stack up|down|status|render``: the compose stack from the command line."""

from __future__ import annotations

import time
from pathlib import Path

from harness import cliargs
from harness.errors import InputError
from harness.launch.compose import (REPLICA_TEMPLATES, SECRET_KEYS, ensure_env_file,
                                    fractions_for, replica_services, run_compose, share_setting,
                                    stack_settings, write_override)
from harness.launch.health import is_healthy
from harness.launch.memory import check_budgets

PROFILES = tuple(REPLICA_TEMPLATES)


def _no_secrets_needed(settings: dict) -> dict:
    """`down` and `ps` read no secret, but compose interpolates the whole file: fill the gaps."""
    return {k: "unused" for k in SECRET_KEYS if not settings.get(k)}


def _int_setting(settings: dict, key: str, default: int) -> int:
    raw = settings.get(key) or str(default)
    try:
        return int(raw)
    except ValueError:
        raise InputError(f"expected an integer, got {raw!r}", file=".env", field=key) from None


def _replicas(args, settings) -> int:
    n = args.replicas if args.replicas is not None else _int_setting(settings, "REPLICAS", 2)
    if n < 1:
        raise InputError("replicas must be >= 1", field="--replicas")
    return n


def _render(args) -> int:
    d = Path(args.project_dir).resolve()
    settings = stack_settings(d)
    n = _replicas(args, settings)
    base_port = _int_setting(settings, "REPLICA_BASE_PORT", 8081)
    path = write_override(d, n, base_port, Path(args.output) if args.output else None,
                          settings=settings, all_at_once=args.all_at_once)
    print(f"wrote {path}: {n} replica(s) per profile, ports "
          f"127.0.0.1:{base_port}-{base_port + n - 1}, started "
          + ("all at once (even fractions: KV budgets will differ)" if args.all_at_once
             else "one after another, each after the previous is healthy"))
    for profile in PROFILES:
        fr = fractions_for(profile, n, share_setting(settings, profile), args.all_at_once)
        print(f"  {profile}: " + ", ".join(f"{s} {f:g}" for s, f in
                                           zip(replica_services(profile, n), fr)))
    return 0


def _load_for_profile(profile: str, settings: dict) -> dict:
    """vLLM speaks the OpenAI API: its run and locustfile, unless .env chose others than TGI's."""
    if profile != "vllm":
        return {}
    out = {}
    if settings.get("SCENARIO", "stack.yaml") == "stack.yaml":
        out["SCENARIO"] = "stack-vllm.yaml"
    if settings.get("LOCUSTFILE", "tgi.py") == "tgi.py":
        out["LOCUSTFILE"] = "openai.py"
    if out:
        print("profile vllm: " + ", ".join(f"{k}={v}" for k, v in out.items()))
    return out


def _up(args) -> int:
    d = Path(args.project_dir).resolve()
    if ensure_env_file(d):
        print(f"wrote {d / '.env'} from .env.example with fresh random secrets (mode 600)")
    settings = stack_settings(d)
    n = _replicas(args, settings)
    base_port = _int_setting(settings, "REPLICA_BASE_PORT", 8081)
    write_override(d, n, base_port, settings=settings)
    workers = args.workers if args.workers is not None else _int_setting(settings, "LOCUST_WORKERS", 2)
    cmd = ["--profile", args.profile, "up", "-d", "--scale", f"locust-worker={workers}"]
    if args.build:
        cmd.append("--build")
    cmd += args.services
    env = {"LOCUST_WORKERS": str(workers), **_load_for_profile(args.profile, settings)}
    run_compose(d, cmd, env=env)
    print(f"stack up: profile {args.profile}, {n} replica(s), {workers} Locust worker(s); "
          f"balancer 127.0.0.1:{settings.get('BALANCER_PORT') or 8080}, Locust UI "
          f"127.0.0.1:{settings.get('LOCUST_WEB_PORT') or 8089}, Grafana "
          f"127.0.0.1:{settings.get('GRAFANA_PORT') or 3000}")
    if args.wait_s <= 0:
        return 0
    names = replica_services(args.profile, n)
    urls = [f"http://127.0.0.1:{base_port + i}" for i, s in enumerate(names)
            if not args.services or s in args.services]
    deadline = time.monotonic() + args.wait_s
    while not all(is_healthy(u) for u in urls):
        if time.monotonic() > deadline:
            print(f"replicas not all healthy after {args.wait_s:g} s; KV budgets not checked "
                  "(`slm-harness stack status` checks again)")
            return 3
        time.sleep(2)
    _print_budgets(urls)
    return 0


def _print_budgets(urls: list[str]) -> dict:
    out = check_budgets(urls)
    for i, (u, b) in enumerate(zip(urls, out["kv_budgets"]), start=1):
        print(f"replica {i}: {u} KV budget {b if b is not None else 'unknown'} tokens")
    return out


def _down(args) -> int:
    d = Path(args.project_dir).resolve()
    cmd = [a for p in PROFILES for a in ("--profile", p)] + ["down", "--remove-orphans"]
    if args.volumes:
        cmd.append("-v")
    run_compose(d, cmd, env=_no_secrets_needed(stack_settings(d)))
    return 0


def _status(args) -> int:
    d = Path(args.project_dir).resolve()
    settings = stack_settings(d)
    n = _replicas(args, settings)
    base_port = _int_setting(settings, "REPLICA_BASE_PORT", 8081)
    run_compose(d, [a for p in PROFILES for a in ("--profile", p)] + ["ps"], check=False,
                env=_no_secrets_needed(settings))
    healthy = 0
    for i in range(n):
        url = f"http://127.0.0.1:{base_port + i}"
        ok = is_healthy(url)
        healthy += ok
        print(f"replica {i + 1}: {url} {'healthy' if ok else 'not answering'}")
    if healthy == n and n > 1:
        _print_budgets([f"http://127.0.0.1:{base_port + i}" for i in range(n)])
    return 0 if healthy == n else 3


def register(sub) -> None:
    p = sub.add_parser("stack", help="the docker compose stack: up, down, status, render")
    ssub = p.add_subparsers(dest="stack_command", metavar="ACTION", required=True)

    def common(q):
        q.add_argument("--project-dir", default=".", type=cliargs.existing_dir, help="where docker-compose.yml is")
        q.add_argument("--replicas", type=cliargs.replicas, default=None,
                       help="replica count (default: REPLICAS from .env, else 2)")

    q = ssub.add_parser("render", help="write docker-compose.override.yml for N replicas")
    common(q)
    q.add_argument("-o", "--output", type=cliargs.output_file, help="write here instead of docker-compose.override.yml")
    q.add_argument("--all-at-once", action="store_true",
                   help="no start order, even memory fractions: only to show that TGI replicas "
                        "then get different KV budgets (docs/stack.md)")
    q.set_defaults(func=_render)

    q = ssub.add_parser("up", help="render, then `compose --profile P up -d`")
    common(q)
    q.add_argument("--profile", choices=PROFILES, default="emulator")
    q.add_argument("--workers", type=cliargs.processes, default=None,
                   help="Locust workers (default: LOCUST_WORKERS from .env, else 2)")
    q.add_argument("--build", action="store_true", help="build the harness image first")
    q.add_argument("--wait-s", type=cliargs.float_range(0, 86_400), default=900.0,
                   help="wait this long for every replica to be healthy, then read and compare "
                        "their KV budgets (0: return at once)")
    q.add_argument("services", nargs="*", help="only these services (and their dependencies)")
    q.set_defaults(func=_up)

    q = ssub.add_parser("down", help="stop and remove the stack's containers and networks")
    q.add_argument("--project-dir", default=".", type=cliargs.existing_dir)
    q.add_argument("-v", "--volumes", action="store_true", help="remove its volumes too")
    q.set_defaults(func=_down)

    q = ssub.add_parser("status", help="containers, and each replica's health on its port")
    common(q)
    q.set_defaults(func=_status)

