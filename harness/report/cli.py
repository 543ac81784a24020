"""``slm-harness report RUN_DIR`` and ``slm-harness compare RUN_A RUN_B``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from harness import cliargs
from harness.analysis.compare import compare
from harness.analysis.summary import LATENCY_KEYS, analyze
from harness.report.console import make_console, print_analysis, print_comparison
from harness.report.render import write_report


def _report(args: argparse.Namespace) -> int:
    from harness.report.sources import load_run_with_telemetry

    run = load_run_with_telemetry(args.run_dir, influx=args.influx)
    a, paths = write_report(analyze(run, latency_key=args.latency), out_dir=args.out)
    con = make_console()
    if not args.quiet:
        print_analysis(a, con)
    print(f"report: {paths.html}")
    print(a.recommendation.sentence)
    return a.exit_code()


def _compare(args: argparse.Namespace) -> int:
    a = analyze(args.run_a, latency_key=args.latency)
    b = analyze(args.run_b, latency_key=args.latency)
    cmp = compare(a, b)
    print_comparison(cmp)
    if args.json:
        Path(args.json).write_text(json.dumps(cmp.to_dict(), indent=2, default=str))
    if args.html:
        from harness.report.compare_html import render_compare_html

        Path(args.html).write_text(render_compare_html(cmp, a, b), encoding="utf-8")
        print(f"comparison: {args.html}")
    if not args.strict:
        return 0
    from harness.engine.outcome import strict_compare_code

    code, why = strict_compare_code(cmp)
    print(f"strict: exit {code}: {why}")
    return code


def register(sub) -> None:
    p = sub.add_parser(
        "report", help="re-render report.html, summary.json and cells.csv from a run directory"
    )
    p.add_argument("run_dir", metavar="RUN_DIR", type=cliargs.run_dir)
    p.add_argument(
        "--latency",
        choices=LATENCY_KEYS,
        default=None,
        help="latency percentile the frontier minimises (default: the SLO's first bound, else ttft_p99_s)",
    )
    p.add_argument(
        "--out", type=cliargs.writable_dir, default=None, help="write the outputs here instead of RUN_DIR"
    )
    p.add_argument(
        "--influx",
        choices=("auto", "always", "never"),
        default="auto",
        help="read GPU samples from the scenario's InfluxDB when the run dir has none (auto), "
        "always, or never",
    )
    p.add_argument(
        "-q", "--quiet", action="store_true", help="print only the report path and recommendation"
    )
    p.set_defaults(func=_report)
    p = sub.add_parser("compare", help="compare two runs cell by cell (B relative to A)")
    p.add_argument("run_a", metavar="RUN_A", type=cliargs.run_dir)
    p.add_argument("run_b", metavar="RUN_B", type=cliargs.run_dir)
    p.add_argument("--latency", choices=LATENCY_KEYS, default=None)
    p.add_argument("--json", metavar="FILE", type=cliargs.output_file, help="also write the comparison as JSON")
    p.add_argument(
        "--html",
        metavar="FILE",
        type=cliargs.output_file,
        help="also write the comparison as one self-contained HTML page (tables and an overlay figure)",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="exit 2 when the runs are not like for like, 4 when a common cell is invalid in "
        "either, 1 when B is worse than A on a figure beyond the intervals (for CI)",
    )
    p.set_defaults(func=_compare)
