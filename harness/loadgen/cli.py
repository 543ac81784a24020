"""``slm-harness run SCENARIO``: one replica count, every level, results in a run directory.

Exit code 0 when every cell met the scenario's SLO, 1 when one violated it, 2 for bad input,
3 when the replicas could not be launched, 4 when a cell's measurement is invalid (its verdict).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from harness import cliargs
from harness.errors import InputError, LaunchError


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
        raise InputError(f"levels must be numbers separated by commas (got {text!r})", field="--levels") from None
    if not lv or any(x <= 0 for x in lv):
        raise InputError("levels must be positive", field="--levels")
    return lv


def _host_port(text: str | None):
    if not text:
        return None
    host, _, port = text.rpartition(":")
    try:
        return (host or "127.0.0.1", int(port))
    except ValueError:
        raise InputError(f"expected HOST:PORT (got {text!r})", field="--web-ui") from None


def _run(args: argparse.Namespace) -> int:
    # Locust (gevent) patches the standard library when imported: do it before anything else.
    import locust  # noqa: F401

    from harness.launch.base import launcher_for
    from harness.loadgen.run import run_levels
    from harness.loadgen.summary import print_table, write_json
    from harness.records.rundir import RunDir
    from harness.scenario.loader import load_scenario
    from harness.store.runstore import ObservedAppender, RunStore

    from harness.protocols.access import Access

    scenario = load_scenario(args.scenario)
    cliargs.preflight(scenario, args.scenario)
    if args.protocol:
        scenario = scenario.model_copy(update={"target": scenario.target.model_copy(update={"protocol": args.protocol})})
    Access.from_target(scenario.target)   # a header's environment variable unset: exit 2 before anything
    urls = _urls(args.url)
    levels = _levels(args.levels)
    if levels is None:
        if scenario.load.levels == "auto":
            raise InputError("levels 'auto' is for `slm-harness sweep`; give --levels", file=args.scenario,
                             field="load.levels")
        levels = list(scenario.load.levels)
    if scenario.load.mode == "concurrency" and any(x != int(x) for x in levels):
        raise InputError("concurrency levels must be whole numbers", field="--levels")
    replicas = args.replicas or (len(urls) if urls else scenario.load.replicas[0])
    web_ui = _host_port(args.web_ui)
    results_dir = args.results or scenario.store.results_dir
    rundir = RunDir.create(results_dir, scenario.name)
    rundir.write_scenario(Path(args.scenario).read_text())
    rundir.write_manifest(scenario=scenario.model_dump(mode="json"), command="run", replicas=replicas,
                          levels=levels)
    # Records and windows also go to the scenario's InfluxDB as they are written (when it has one).
    store = RunStore(scenario, rundir)
    rundir.requests = ObservedAppender(rundir.requests, store.record)
    rundir.windows = ObservedAppender(rundir.windows, store.window)
    status = "interrupted"
    try:
        if urls:
            results = run_levels(scenario, urls, replicas, rundir, levels=levels,
                                 processes=args.processes, web_ui=web_ui)
        else:
            try:
                launcher = launcher_for(scenario.target, replicas, rundir.path / "logs")
            except ModuleNotFoundError as e:
                raise LaunchError(f"the {scenario.target.launcher.kind!r} launcher is not available "
                                  f"({e.name}); pass --url") from None
            with launcher as reps:
                results = run_levels(scenario, reps.urls, replicas, rundir, levels=levels,
                                     processes=args.processes, web_ui=web_ui)
        status = "complete"
    finally:
        stored = store.close()
        if stored is not None:
            rundir.write_manifest(store={"note": store.note, **stored})
        rundir.close(status)
    if not args.quiet:
        print_table(results)
        print(f"results: {rundir.path}")
    if args.json:
        write_json(args.json, results, str(rundir.path))
    from harness.analysis.summary import analyze

    analysis = analyze(rundir.path)   # each cell's verdict: can its numbers be trusted?
    analysis.write()
    for c in analysis.cells:
        for reason in c.verdict_reasons:
            if not reason.startswith("note:") and not args.quiet:
                print(f"{c.cell}: {reason}")
    if analysis.invalid_cells:
        print(f"invalid measurement in {', '.join(analysis.invalid_cells)} (exit 4)")
        return 4
    return 0 if all(r.slo.ok for r in results) else 1


def register(sub) -> None:
    p = sub.add_parser("run", help="run every level of a scenario at one replica count; exit 1 if an SLO is violated")
    p.add_argument("scenario", metavar="SCENARIO")
    p.add_argument("--url", action="append", metavar="URL[,URL...]", type=cliargs.urls_text,
                   help="replica base URLs (skip launching); repeat or separate with commas")
    p.add_argument("--protocol", choices=["tgi", "openai-completions", "openai-chat", "auto"], default=None,
                   help="the servers' API, overriding target.protocol; auto asks /info and /v1/models")
    p.add_argument("--replicas", type=cliargs.replicas, default=None, help="replica count (default: first in load.replicas)")
    p.add_argument("--levels", default=None, type=cliargs.levels_text, help="comma-separated levels overriding load.levels")
    p.add_argument("--processes", type=cliargs.processes, default=0,
                   help="Locust worker processes generating load (0: this process)")
    p.add_argument("--results", default=None, type=cliargs.writable_dir, help="results directory (default: store.results_dir)")
    p.add_argument("--json", default=None, metavar="PATH", type=cliargs.output_file, help="write a machine-readable summary")
    p.add_argument("--web-ui", default=None, metavar="HOST:PORT", type=cliargs.host_port_text, help="serve Locust's web UI with the LLM tab")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=_run)
