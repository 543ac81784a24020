"""``slm-harness sweep SCENARIO [--resume RUN_DIR] [--results DIR]``.

Exit codes: 0 the recommended configuration meets the SLO; 1 no cell does; 2 bad input;
3 replicas could not be launched (finished cells kept, report written); 130 interrupted
(finished cells kept, report written; ``--resume RUN_DIR`` goes on).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness import cliargs
from harness.analysis.summary import LATENCY_KEYS


def _sweep(args: argparse.Namespace) -> int:
    # Locust (gevent) patches the standard library when imported: before anything else starts.
    import locust  # noqa: F401

    from harness.report.console import make_console, print_analysis
    from harness.report.progress import SweepProgress
    from harness.report.render import write_report
    from harness.scenario.loader import load_scenario
    from harness.sweep import Sweep

    scenario = load_scenario(args.scenario)
    cliargs.preflight(scenario, args.scenario)
    text = Path(args.scenario).read_text()
    if args.resume is not None and not Path(args.resume).is_dir():
        from harness.errors import InputError

        raise InputError("run directory not found", file=str(args.resume), field="--resume")
    console = make_console()
    sweep = Sweep(
        scenario,
        text,
        Path(args.results or scenario.store.results_dir),
        resume=Path(args.resume) if args.resume else None,
        processes=args.processes,
    )
    ld = scenario.load
    progress = None
    if not args.quiet:
        progress = SweepProgress(
            console,
            list(ld.replicas),
            None if ld.levels == "auto" else [float(x) for x in ld.levels],
            ld.mode,
            sweep.total_cells(),
            sweep.cell_seconds(),
            plain=True if args.plain else None,
        )
        sweep.progress = progress
        progress.__enter__()
    try:
        result = sweep.run()
    finally:
        if progress is not None:
            progress.__exit__(None, None, None)
    a, paths = write_report(result.run_dir, latency_key=args.latency)
    result.analysis, result.report_html = a, paths.html
    if not args.quiet:
        print_analysis(a, console)
    if result.message:
        print(
            f"sweep stopped: {result.message}; {len(result.cells_done)} finished cell(s) kept. "
            f"Go on with: slm-harness sweep {args.scenario} --resume {result.run_dir}",
            file=sys.stderr,
        )
    print(f"report: {paths.html}")
    print(a.recommendation.sentence)
    sys.stdout.flush()
    return result.exit_code


def register(sub) -> None:
    p = sub.add_parser(
        "sweep",
        help="run every replica count x load level of a scenario and report the "
        "Pareto frontier; exit 1 when no cell meets the SLO",
    )
    p.add_argument("scenario", metavar="SCENARIO")
    p.add_argument(
        "--resume",
        metavar="RUN_DIR",
        default=None,
        type=cliargs.run_dir,
        help="go on with an interrupted sweep: skip the cells it finished",
    )
    p.add_argument(
        "--results",
        metavar="DIR",
        default=None,
        type=cliargs.writable_dir,
        help="results directory (default: store.results_dir)",
    )
    p.add_argument(
        "--processes",
        type=cliargs.processes,
        default=0,
        help="Locust worker processes generating load (0: this process)",
    )
    p.add_argument(
        "--latency",
        choices=LATENCY_KEYS,
        default=None,
        help="latency percentile the frontier minimises (default: the SLO's first bound)",
    )
    p.add_argument("--plain", action="store_true", help="plain progress lines even on a terminal")
    p.add_argument(
        "-q", "--quiet", action="store_true", help="print only the report path and recommendation"
    )
    p.set_defaults(func=_sweep)
