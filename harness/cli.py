"""The ``slm-harness`` command line.

Each subcommand lives beside the code it drives (``harness/<part>/cli.py``) and exposes
``register(subparsers)``; this file only assembles them and turns errors into exit codes:
0 success (SLO met), 1 SLO violated, 2 bad input, 3 the run could not be carried out.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from harness import __version__
from harness.cliargs import Parser, check_args
from harness.errors import InputError, LaunchError

# Modules that register subcommands, in help order.
COMMAND_MODULES = (
    "harness.scenario.cli",      # validate, schema
    "harness.loadgen.cli",       # run
    "harness.sweep_cli",         # sweep
    "harness.loadgen.locust_door",  # locust (Locust with the harness's options)
    "harness.report.cli",        # report, compare
    "harness.emulator.cli",      # emulate
    "harness.telemetry.cli",     # sidecar
    "harness.launch.cli",        # stack
)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="slm-harness",
        description="Token-level load testing, GPU energy telemetry and replica x load Pareto "
                    "sweeps for small language model serving.")
    parser.add_argument("--version", action="version", version=f"slm-harness {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:  # that part is not built yet
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING - 10 * min(args.verbose, 2),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        check_args(args, parser)  # files, permissions, hosts: before the command starts
        return int(args.func(args) or 0)
    except InputError as e:
        for line in str(e).splitlines():
            print(f"slm-harness: error: {line}", file=sys.stderr)
        return 2
    except LaunchError as e:
        print(f"slm-harness: replicas could not be launched: {e}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("slm-harness: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
