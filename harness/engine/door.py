"""What every command-line door does with the engine: open a session, run the plan, write the
report, print, and return the exit code (:func:`harness.engine.outcome.exit_code`)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from harness.engine.engine import Engine
from harness.engine.hooks import Hooks, ProgressHook
from harness.engine.outcome import exit_code, partial_line, write_outputs
from harness.engine.plan import RunPlan
from harness.engine.session import Session, signals_held, sigterm_raises, stop_message


@dataclass
class Request:
    """A door's parsed arguments (already validated)."""

    scenario_path: str
    command: str                              # run | sweep
    replicas: list[int] | None = None         # None: load.replicas
    levels: list[float] | None = None         # None: load.levels
    urls: list[str] | None = None             # replicas already running (skip launching)
    results: str | None = None
    resume: str | None = None
    processes: int = 0
    web_ui: tuple[str, int] | None = None
    latency: str | None = None
    quiet: bool = False
    plain: bool = False
    json_path: str | None = None
    gate: str = "every"                       # see outcome.exit_code
    launcher_factory: object = None


def execute(req: Request, scenario) -> int:
    from harness.report.console import make_console, print_analysis
    from harness.report.progress import SweepProgress

    text = Path(req.scenario_path).read_text()
    plan_done = ()
    hooks = Hooks()
    session = progress = None
    # a stop before the engine runs (its own handlers take over there) closes the run directory
    # as interrupted, like one during the run; SIGTERM behaves as Ctrl-C from here on
    with sigterm_raises():
        try:
            with signals_held():
                session = Session(scenario, text, Path(req.results or scenario.store.results_dir),
                                  command=req.command, resume=Path(req.resume) if req.resume else None,
                                  hooks=hooks, replicas=req.replicas, levels=req.levels)
            plan = RunPlan.from_scenario(scenario, replicas=req.replicas, levels=req.levels,
                                         done=session.cells_done or plan_done)
            engine = Engine(session, plan, urls=req.urls, processes=req.processes, web_ui=req.web_ui,
                            launcher_factory=req.launcher_factory)
            console = make_console()
            if not req.quiet:
                ld = scenario.load
                cell_s = sum(s.duration_s for s in ld.stages) + ld.warmup_s + ld.duration_s + \
                    ld.cooldown_s + 2.0
                progress = SweepProgress(console, list(plan.replicas),
                                         None if plan.auto else list(plan.levels), plan.mode,
                                         plan.total_cells(), cell_s, plain=True if req.plain else None)
                hooks.add(ProgressHook(progress))
                progress.__enter__()
        except KeyboardInterrupt as e:
            if progress is not None:
                progress.__exit__(None, None, None)
            if session is None:
                raise
            session.close("interrupted", stop_message(e))
            print(f"{req.command} stopped before its first cell: {stop_message(e)}", file=sys.stderr)
            print(f"results: {session.path}")
            return exit_code("interrupted")
        try:
            result = engine.run()
        finally:
            if progress is not None:
                progress.__exit__(None, None, None)
    a, paths = write_outputs(result.run_dir, latency_key=req.latency)
    if not req.quiet and a is not None:
        print_analysis(a, console)
    if not req.quiet and result.cell_results:
        from harness.loadgen.summary import print_diagnostics

        print_diagnostics(result.cell_results, console)
    if req.json_path:
        from harness.loadgen.summary import write_json

        write_json(req.json_path, result.cell_results, str(result.run_dir),
                   analysis=a, partial=result.cells_partial)
    if result.status == "bad-input":
        print(f"slm-harness: error: {result.message}", file=sys.stderr)
    line = partial_line(result)
    if line:
        how = (f"; go on with: slm-harness sweep {req.scenario_path} --resume {result.run_dir}"
               if req.command == "sweep" and result.status != "launch-failed" else "")
        print(f"{req.command} stopped: {result.message or result.status}; "
              f"{len(result.cells_done)} finished cell(s) kept"
              + (f"; partial: {', '.join(result.cells_partial)}" if result.cells_partial else "")
              + how, file=sys.stderr)
    if paths is not None:
        print(f"report: {paths.html}")
        print(a.recommendation.sentence)
    print(f"results: {result.run_dir}")
    sys.stdout.flush()
    return exit_code(result.status, a, req.gate)
