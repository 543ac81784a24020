"""``slm-harness emulate``: N TGI-compatible replicas sharing one simulated GPU."""

from __future__ import annotations

import argparse
import os

from harness import cliargs
from harness.emulator.personality import SERVERS
from harness.emulator.profile import available_profiles, load_profile
from harness.errors import InputError


def _emulate(args: argparse.Namespace) -> int:
    if args.replicas < 1:
        raise InputError("must be at least 1", field="--replicas")
    if not 1 <= args.tick_us <= 10_000:
        raise InputError("must be 1..10000 microseconds", field="--tick-us")
    if args.keep_alive_s <= 0:
        raise InputError("must be > 0", field="--keep-alive-s")
    if not 0 <= args.port <= 65535:
        raise InputError("must be 0..65535", field="--port")
    if args.cuda_memory_fraction is not None and not 0 < args.cuda_memory_fraction <= 1:
        raise InputError("must be in (0, 1]", field="--cuda-memory-fraction")
    if not 0 <= args.load_s <= 600:
        raise InputError("must be 0..600 seconds", field="--load-s")
    profile = load_profile(args.profile)
    if args.calibrate:
        return _calibrate(args, profile)
    ctx = None
    if args.tls_cert or args.tls_key:
        import ssl

        if not (args.tls_cert and args.tls_key):
            raise InputError("--tls-cert and --tls-key go together", field="--tls-cert")
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            ctx.load_cert_chain(args.tls_cert, args.tls_key)
        except (OSError, ssl.SSLError) as e:
            raise InputError(f"cannot load the certificate: {e}", field="--tls-cert") from None
    token = None
    if args.require_token_env:
        token = os.environ.get(args.require_token_env)
        if not token:
            raise InputError(f"environment variable {args.require_token_env} is not set", field="--require-token-env")
    from harness.emulator.server import serve
    gpu = None
    if args.shared_gpu or args.cuda_memory_fraction is not None:
        from harness.emulator.sharedgpu import start_shared_gpu
        gpu = start_shared_gpu(profile, args.replicas, args.shared_gpu, args.cuda_memory_fraction,
                               args.load_s)
    serve(profile, args.replicas, args.host, args.port, args.port_file, args.tick_us, args.keep_alive_s,
          ctx, token, args.sse_space, gpu=gpu, server=args.server, sse_compact=args.sse_compact)
    return 0


def _calibrate(args: argparse.Namespace, base) -> int:
    """Fit ``base`` (its model and GPU stay) to a real run directory; print the error table."""
    from pathlib import Path

    from harness.emulator import calibrate as cal
    if args.check:       # out of sample: the profile as it is against a run it was not fitted to
        cells = _cells(cal, args)
        table, worst = cal.error_table(cells, cal.predict_run(base, cells))
        print(table)
        print("worst per-cell error: " + ", ".join(f"{cal.LABELS[k]} {worst[k]:.0%}" for k in cal.METRICS))
        return 0
    if not args.output:
        raise InputError("--calibrate needs -o PROFILE.yaml (where the fitted profile goes)", field="-o")
    if args.iterations < 1:
        raise InputError("must be at least 1", field="--iterations")
    for flag, names in (("--keep", args.keep), ("--fit", args.fit)):
        for k in names or ():
            if k not in cal.TIMING and k not in cal.LIMITS:
                raise InputError(f"{k!r} is not a fitted parameter (one of: "
                                 f"{', '.join([*cal.TIMING, *cal.LIMITS])})", field=flag)
    if args.keep and args.fit:
        raise InputError("give --fit (the parameters to fit) or --keep (those to leave), not both", field="--fit")
    cells = _cells(cal, args)
    out = Path(args.output)
    idle = None if args.fit else cal.load_idle_w(args.calibrate)   # --fit leaves power as it is
    if idle is not None:      # the GPU's draw with the replicas up and no load, measured by the run itself
        print(f"idle power from the run's idle window: {idle:.1f} W")
        base = cal.with_params(base, {"idle_w": round(idle, 2)})
    before = cal.predict_run(base, cells)
    _, worst0 = cal.error_table(cells, before)
    print(f"calibrating {base.name} to {len(cells)} cells of {args.calibrate} ...", flush=True)
    fitted, preds = cal.fit(base, cells, iters=args.iterations, log=lambda m: print(m, flush=True),
                            starts=args.starts, keep=tuple(args.keep or ()),
                            names=tuple(dict.fromkeys(args.fit)) if args.fit else None, power=not args.fit)
    fitted = fitted.model_copy(update={"name": out.stem, "description": f"{base.description} (calibrated)"})
    table, worst = cal.error_table(cells, preds)
    print(table)
    print("worst per-cell error: " + ", ".join(f"{cal.LABELS[k]} {worst[k]:.0%} (before {worst0[k]:.0%})"
                                               for k in cal.METRICS))
    out.write_text(cal.profile_yaml(fitted, args.calibrate, worst))
    print(f"wrote {out} (serve it: slm-harness emulate --profile {out})")
    return 0


def _cells(cal, args) -> list:
    """The run's cells, or those named by --cells (fit on one cell, check on the others)."""
    cells = cal.load_run(args.calibrate)
    if not args.cells:
        return cells
    names = [c.name for c in cells]
    unknown = [n for n in args.cells if n not in names]
    if unknown:
        raise InputError(f"{', '.join(unknown)}: no such cell in {args.calibrate} (its cells: {', '.join(names)})",
                         field="--cells")
    return [c for c in cells if c.name in args.cells]


def register(sub) -> None:
    p = sub.add_parser("emulate", help="serve N emulated TGI replicas sharing one simulated GPU",
                       description="TGI 3.x- and OpenAI-compatible replicas of a modeled small LLM on one "
                                   "modeled GPU. Built-in profiles: " + ", ".join(available_profiles()))
    p.add_argument("--replicas", "-n", type=cliargs.replicas, default=1)
    p.add_argument("--profile", "-p", default="cpu-demo", help="profile name or path to a profile YAML")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=cliargs.port_or_zero, default=8080, help="first replica's port (replica i: PORT+i); 0 picks free ports")
    p.add_argument("--port-file", type=cliargs.output_file, help="write {pid, host, ports, urls} as JSON here once listening")
    p.add_argument("--tick-us", type=cliargs.float_range(1, 10_000), default=100.0,
                   help="timer grid: tokens are written at most this late, in batches (default 100)")
    p.add_argument("--keep-alive-s", type=cliargs.float_range(0, 3600, lo_open=True), default=15.0,
                   help="SSE keep-alive comment after this much silence on a stream (TGI: 15)")
    p.add_argument("--server", choices=SERVERS, default=None,
                   help="which server to stand in for: its stream framing, metric names, routes and error "
                        "shapes (default: the profile's, tgi)")
    p.add_argument("--tls-cert", metavar="PEM", type=cliargs.existing_file, help="serve https with this certificate (with --tls-key)")
    p.add_argument("--tls-key", metavar="PEM", type=cliargs.existing_file, help="the certificate's private key")
    p.add_argument("--require-token-env", metavar="VAR",
                   help="answer 401 unless requests carry 'Authorization: Bearer $VAR' (not /emulator/ routes)")
    p.add_argument("--sse-space", action="store_true",
                   help="frame events as 'data: {' (TGI 3.x, vLLM, SGLang, OpenAI): the default of every --server")
    p.add_argument("--sse-compact", action="store_true",
                   help="frame events as 'data:{' instead, as TGI 2.0 and older did")
    p.add_argument("--shared-gpu", metavar="PATH", type=cliargs.output_file,
                   help="share one simulated GPU (memory, contention, power) with every emulator "
                        "process that names the same state file (docs/stack.md)")
    p.add_argument("--cuda-memory-fraction", type=cliargs.float_range(0, 1, lo_open=True), default=None, metavar="F",
                   help="size each replica's KV budget from the simulated GPU's free memory at "
                        "warm-up, as TGI does with this --cuda-memory-fraction")
    p.add_argument("--load-s", type=cliargs.float_range(0, 600), default=0.0,
                   help="modeled weight loading time before the warm-up measures free memory")
    p.add_argument("--calibrate", metavar="RUN_DIR",
                   help="instead of serving: fit --profile's step-time, prefill, contention and power "
                        "parameters to a real run directory (cells.csv, scenario.yaml) and write -o")
    p.add_argument("-o", "--output", metavar="PROFILE.yaml", help="where --calibrate writes the fitted profile")
    p.add_argument("--check", action="store_true",
                   help="with --calibrate: fit nothing, print --profile's per-cell error against RUN_DIR "
                        "(out-of-sample checks)")
    p.add_argument("--iterations", type=int, default=300, help="--calibrate: Nelder-Mead iterations (default 300)")
    p.add_argument("--keep", action="append", metavar="PARAM",
                   help="--calibrate: leave this timing or limits parameter as --profile has it (repeatable)")
    p.add_argument("--fit", action="append", metavar="PARAM",
                   help="--calibrate: fit only this parameter, everything else (power included) as --profile "
                        "has it (repeatable); --fit host_speed carries a profile to another host's CPU")
    p.add_argument("--cells", action="append", metavar="CELL",
                   help="--calibrate: use only this cell of RUN_DIR, e.g. r1-c32 (repeatable)")
    p.add_argument("--starts", type=int, default=0,
                   help="--calibrate: random starting points tried before the simplex (default 0)")
    p.set_defaults(func=_emulate)
