"""Replay a spool left behind (a run that ended while InfluxDB was down) into the database.

    python -m harness.store.replay RUN_DIR/influx-spool --scenario RUN_DIR/scenario.yaml

Uses the scenario's ``store.influxdb`` settings (credentials from the environment or file as
always); exits 0 when the spool is empty afterwards, 1 when points are still waiting.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    from harness.errors import InputError
    from harness.scenario.loader import load_scenario
    from harness.store.writer import writer_from_config

    ap = argparse.ArgumentParser(prog="python -m harness.store.replay", description=__doc__.splitlines()[0])
    ap.add_argument("spool_dir")
    ap.add_argument("--scenario", required=True, help="the run's scenario.yaml (its store.influxdb)")
    ap.add_argument("--timeout-s", type=float, default=300.0)
    a = ap.parse_args(argv)
    try:
        cfg = load_scenario(a.scenario).store.influxdb
        if cfg is None:
            raise InputError("the scenario names no store.influxdb", file=a.scenario,
                             field="store.influxdb")
        w = writer_from_config(cfg.model_copy(update={"spool_dir": a.spool_dir}),
                               replay_interval_s=0.5, create_db=cfg.api == "v1")
    except InputError as e:
        print(f"replay: error: {e}", file=sys.stderr)
        return 2
    st = w.close(timeout_s=a.timeout_s)
    print(f"replay: {st['replayed']} points replayed, {st['spool_points']} still spooled"
          + (f" (last error: {st['last_error']})" if st["spool_points"] else ""))
    return 0 if st["spool_points"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
