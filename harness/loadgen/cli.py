"""``slm-harness run SCENARIO``: the sweep at one replica count, every level, one run directory.

A thin door into :mod:`harness.engine`; exit codes as in :mod:`harness.engine.outcome`
(0 every cell met the SLO, 1 one did not, 2 bad input, 3 target unreachable, 130 stopped early).
"""

from __future__ import annotations

import argparse

from harness import cliargs
from harness.errors import InputError


def _urls(values: list[str] | None) -> list[str]:
    out: list[str] = []
    for v in values or []:
        out.extend(u.strip() for u in v.split(",") if u.strip())
    from harness.protocols.access import parse_url

    for u in out:
        try:
            parse_url(u)
        except ValueError as e:
            raise InputError(str(e), field="--url") from None
    return out


def _levels(text: str | None) -> list[float] | None:
    if not text:
        return None
    try:
        lv = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InputError(f"levels must be numbers separated by commas (got {text!r})",
                         field="--levels") from None
    if not lv or any(x <= 0 for x in lv):
        raise InputError("levels must be positive", field="--levels")
    return lv


def _run(args: argparse.Namespace) -> int:
    # Locust (gevent) patches the standard library when imported: do it before anything else.
    import locust  # noqa: F401

    from harness.engine.door import Request, execute
    from harness.protocols.access import Access

    scenario = cliargs.scenario_to_run(args.scenario, args.repeats)
    if args.protocol:
        target = scenario.target.model_copy(update={"protocol": args.protocol})
        scenario = scenario.model_copy(update={"target": target})
    Access.from_target(scenario.target)   # a header's environment variable unset: exit 2 first
    urls = _urls(args.url)
    levels = _levels(args.levels)
    if levels is None:
        if scenario.load.levels == "auto":
            raise InputError("levels 'auto' is for `slm-harness sweep`; give --levels",
                             file=args.scenario, field="load.levels")
        levels = list(scenario.load.levels)
    if scenario.load.mode == "concurrency" and any(x != int(x) for x in levels):
        raise InputError("concurrency levels must be whole numbers", field="--levels")
    replicas = args.replicas or (len(urls) if urls else scenario.load.replicas[0])
    web_ui = cliargs.split_host_port(args.web_ui, "--web-ui") if args.web_ui else None
    req = Request(args.scenario, "run", replicas=[replicas], levels=levels, urls=urls or None,
                  results=args.results, processes=args.processes, web_ui=web_ui,
                  quiet=args.quiet, plain=True, json_path=args.json, gate="every")
    return execute(req, scenario)


def register(sub) -> None:
    p = sub.add_parser("run", help="run every level of a scenario at one replica count; "
                                   "exit 1 if an SLO is violated")
    p.add_argument("scenario", metavar="SCENARIO")
    p.add_argument("--url", action="append", metavar="URL[,URL...]", type=cliargs.urls_text,
                   help="replica base URLs (skip launching); repeat or separate with commas")
    p.add_argument("--protocol", choices=["tgi", "openai-completions", "openai-chat", "auto"],
                   default=None, help="the servers' API, overriding target.protocol; auto asks "
                                      "/info and /v1/models")
    p.add_argument("--replicas", type=cliargs.replicas, default=None,
                   help="replica count (default: first in load.replicas)")
    p.add_argument("--levels", default=None, type=cliargs.levels_text, help="comma-separated levels overriding load.levels")
    p.add_argument("--processes", type=cliargs.processes, default=0,
                   help="Locust worker processes generating load (0: this process)")
    p.add_argument("--results", default=None, type=cliargs.writable_dir, help="results directory (default: store.results_dir)")
    p.add_argument("--json", default=None, metavar="PATH", type=cliargs.output_file, help="write a machine-readable summary")
    p.add_argument("--web-ui", default=None, metavar="HOST:PORT", type=cliargs.host_port_text,
                   help="serve Locust's web UI with the LLM tab")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("--repeats", type=cliargs.int_range(1, 1000), default=None, metavar="N",
                   help="measure each cell N times, interleaved (default: load.repeats)")
    p.set_defaults(func=_run)
