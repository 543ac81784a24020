"""``slm-harness sweep SCENARIO [--resume RUN_DIR] [--results DIR]``: a thin door into
:mod:`harness.engine`.

Exit codes (:mod:`harness.engine.outcome`): 0 the recommended configuration meets the SLO; 1 no
cell does; 2 bad input; 3 replicas could not be launched (finished cells kept, report written);
130 stopped early (finished cells kept, the cell under way partial, report written;
``--resume RUN_DIR`` goes on).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from harness import cliargs
from harness.analysis.summary import LATENCY_KEYS
from harness.errors import InputError


def _sweep(args: argparse.Namespace) -> int:
    # Locust (gevent) patches the standard library when imported: before anything else starts.
    import locust  # noqa: F401

    from harness.engine.door import Request, execute

    scenario = cliargs.scenario_to_run(args.scenario, args.repeats)
    if args.resume is not None and not Path(args.resume).is_dir():
        raise InputError("run directory not found", file=str(args.resume), field="--resume")
    req = Request(args.scenario, "sweep", results=args.results, resume=args.resume,
                  processes=args.processes, latency=args.latency, quiet=args.quiet,
                  plain=args.plain, gate="recommended")
    return execute(req, scenario)


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
    p.add_argument("--repeats", type=cliargs.int_range(1, 1000), default=None, metavar="N",
                   help="measure each cell N times, interleaved (default: load.repeats)")
    p.add_argument(
        "-q", "--quiet", action="store_true", help="print only the report path and recommendation"
    )
    p.set_defaults(func=_sweep)
