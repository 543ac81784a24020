"""``slm-harness sidecar``: GPU telemetry as a long-lived service (see docs/energy.md)."""

from __future__ import annotations

import argparse
import os
import signal
import threading

from harness import cliargs
from harness.errors import InputError


def _gpus(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InputError(f"wants comma-separated GPU indices, got {text!r}",
                         field="--gpus") from None


def _config(args: argparse.Namespace):
    from pydantic import ValidationError

    from harness.scenario.models import InfluxDB
    from harness.telemetry.sidecar import SidecarConfig

    tel, influx = None, None
    if args.scenario:
        from harness.scenario.loader import load_scenario

        sc = load_scenario(args.scenario)
        tel, influx = sc.telemetry, sc.store.influxdb
        results_dir = args.results_dir or sc.store.results_dir
    else:
        results_dir = args.results_dir
    if args.influx_url:
        try:
            influx = InfluxDB(url=args.influx_url, api=args.influx_api, org=args.org,
                              bucket=args.bucket, database=args.database,
                              token_env=args.token_env, token_file=args.token_file,
                              username_env=args.username_env, password_env=args.password_env,
                              spool_dir=args.spool_dir)
        except ValidationError as e:
            err = e.errors()[0]
            raise InputError(err["msg"], field="--" + "-".join(str(x) for x in err["loc"])) from None
    rate = args.rate_hz if args.rate_hz is not None else (tel.rate_hz if tel else 20.0)
    if not 0 < rate <= 100:
        raise InputError(f"must be in (0, 100], got {rate:g}", field="--rate-hz")
    source = args.source or (tel.source if tel else "auto")
    if tel is not None and not tel.enabled and not args.source:
        source = "none"
    return SidecarConfig(
        source=source, gpus=_gpus(args.gpus) if args.gpus else (tel.gpus if tel else None),
        rate_hz=rate, emulator_urls=args.emulator_url or [], run_id=args.run_id or "",
        results_dir=None if args.no_results else results_dir, influx=influx,
        listen=cliargs.split_host_port(args.listen, "--listen") if args.listen else None,
        post_power_to=args.post_power_to)


def _run(args: argparse.Namespace) -> int:
    from harness.telemetry.sidecar import Sidecar

    cfg = _config(args)
    sc = Sidecar(cfg).start()
    if sc.url:
        print(f"sidecar: listening on {sc.url}", flush=True)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    done.wait(args.duration_s)
    summary = sc.stop()
    counts = summary.get("counts", {})
    store = summary.get("store")
    line = f"sidecar: stopped; {counts.get('samples', 0)} samples, {counts.get('gaps', 0)} gaps"
    if store:
        line += (f"; store acked {store['acked']}, replayed {store['replayed']}, "
                 f"still spooled {store['spool_points']}")
    if sc.run_dir:
        line += f"; run dir {sc.run_dir.path}"
    print(line, flush=True)
    return 0


def register(sub) -> None:
    p = sub.add_parser("sidecar", help="sample GPU power/energy (NVML or emulated) into the run "
                                       "dir and InfluxDB, as a service")
    p.add_argument("--scenario", metavar="FILE", help="take telemetry/store settings from a scenario")
    p.add_argument("--source", choices=["auto", "nvml", "emulated", "none"])
    p.add_argument("--gpus", metavar="0,1", type=cliargs.gpus_text, help="NVML indices to sample (default: all)")
    p.add_argument("--rate-hz", type=cliargs.float_range(0, 100, lo_open=True), help="samples per second, up to 100 (default 20)")
    p.add_argument("--emulator-url", action="append", metavar="URL", type=cliargs.url,
                   help="emulator replica for modeled power when there is no NVML (repeatable)")
    p.add_argument("--run-id", help="run id tagged on every sample")
    p.add_argument("--results-dir", type=cliargs.writable_dir, help="write gpu_samples.parquet etc. under DIR/RUN_ID")
    p.add_argument("--no-results", action="store_true", help="no run directory (store only)")
    p.add_argument("--listen", metavar="HOST:PORT", type=cliargs.host_port_text, help="serve /health /latest /window/* here")
    p.add_argument("--duration-s", type=cliargs.seconds, default=None, help="stop after this long")
    p.add_argument("--post-power-to", metavar="URL", type=cliargs.url,
                   help="POST the latest total power, once a second, to this URL (the Locust "
                        "web UI's /llm/power)")
    env = os.environ.get
    g = p.add_argument_group("InfluxDB (optional; defaults from INFLUXDB_URL, INFLUXDB_API, "
                             "INFLUXDB_ORG, INFLUXDB_BUCKET, INFLUXDB_DATABASE)")
    g.add_argument("--influx-url", default=env("INFLUXDB_URL") or None, type=cliargs.url)
    g.add_argument("--influx-api", choices=["v2", "v1"], default=env("INFLUXDB_API") or "v2")
    g.add_argument("--org", default=env("INFLUXDB_ORG") or None)
    g.add_argument("--bucket", default=env("INFLUXDB_BUCKET") or None)
    g.add_argument("--database", default=env("INFLUXDB_DATABASE") or None)
    g.add_argument("--token-env", default="INFLUXDB_TOKEN", help="env var holding the token")
    g.add_argument("--token-file", help="file holding the token (first line)")
    g.add_argument("--username-env")
    g.add_argument("--password-env")
    g.add_argument("--spool-dir", type=cliargs.writable_dir, help="where unwritten batches wait (default: in the run dir)")
    p.set_defaults(func=_run)
