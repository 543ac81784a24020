"""``slm-harness validate`` and ``slm-harness schema``."""

from __future__ import annotations

import argparse
import json
import sys

from harness.scenario.loader import load_scenario, scenario_json_schema


def _validate(args: argparse.Namespace) -> int:
    for path in args.files:
        s = load_scenario(path)
        levels = s.load.levels if s.load.levels == "auto" else ", ".join(f"{x:g}" for x in s.load.levels)
        print(f"{path}: ok ({s.name}: {s.target.protocol} via {s.target.launcher.kind}, "
              f"replicas {s.load.replicas}, {s.load.mode} levels [{levels}])")
    return 0


def _schema(args: argparse.Namespace) -> int:
    json.dump(scenario_json_schema(), sys.stdout, indent=2)
    print()
    return 0


def register(sub) -> None:
    p = sub.add_parser("validate", help="check scenario files; exit 2 with file:line: field on error")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.set_defaults(func=_validate)
    p = sub.add_parser("schema", help="print the scenario JSON Schema (for editors)")
    p.set_defaults(func=_schema)
