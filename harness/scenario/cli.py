"""``slm-harness validate`` and ``slm-harness schema``."""

from __future__ import annotations

import argparse
import json
import sys

from harness.errors import InputError
from harness.scenario.loader import load_scenario, scenario_json_schema
from harness.scenario.preflight import check_environment, defaults_note


def _validate(args: argparse.Namespace) -> int:
    """Every file is checked and every problem in each is shown; exit 2 when any has one."""
    bad = 0
    for path in args.files:
        try:
            s = load_scenario(path)
        except InputError as e:
            bad += 1
            for line in str(e).splitlines():
                print(f"slm-harness: error: {line}", file=sys.stderr)
            continue
        try:
            check_environment(s, path)
        except InputError as e:  # this machine, not the file: run and sweep refuse, validate warns
            for line in str(e).splitlines():
                print(f"slm-harness: warning: {line}; run and sweep refuse to start without it",
                      file=sys.stderr)
        levels = s.load.levels if s.load.levels == "auto" else ", ".join(f"{x:g}" for x in s.load.levels)
        note = defaults_note(s)
        print(f"{path}: ok ({s.name}: {s.target.protocol} via {s.target.launcher.kind}, "
              f"replicas {s.load.replicas}, {s.load.mode} levels [{levels}])"
              + (f"; {note}" if note else ""))
    if bad and len(args.files) > 1:
        print(f"slm-harness: {bad} of {len(args.files)} scenario files have problems", file=sys.stderr)
    return 2 if bad else 0


def _schema(args: argparse.Namespace) -> int:
    text = json.dumps(scenario_json_schema(), indent=2) + "\n"
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        # the reader stopped early (``schema | head``): not an error; keep Python's exit quiet
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def register(sub) -> None:
    p = sub.add_parser("validate", help="check scenario files; exit 2 with file:line: field on error")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.set_defaults(func=_validate)
    p = sub.add_parser("schema", help="print the scenario JSON Schema (for editors)")
    p.set_defaults(func=_schema)
