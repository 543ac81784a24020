"""Plain ``locust -f locustfiles/tgi.py --scenario FILE``: a door into :mod:`harness.engine`.

A locustfile calls :func:`install` and exposes the returned shape class. Locust then runs the
scenario's levels back to back for one replica count (headless or web UI, one process,
``--processes N`` or ``--master``/``--worker``): the shape sets users from the plan (one Locust
tick a second, so level edges in this mode are within ~1 s; ``slm-harness run`` is exact),
workers forward deltas, and the master writes the same run directory as ``slm-harness run``
(records, windows, GPU samples, histograms, report.html, summary.json, cells.csv) and sets the
same exit code (:func:`harness.engine.outcome.exit_code`).

Locust's own options: ``-t/--run-time`` stops the plan there (the cell under way is partial,
exit 130); ``-u/--users`` and ``-r/--spawn-rate`` are refused, because the scenario's levels set
the users (use ``--slm-levels``). A stop from the web UI, Ctrl-C or SIGTERM ends the run the
same way: the cell under way is partial.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from time import perf_counter_ns

import gevent
from locust import LoadTestShape, events
from locust.runners import MasterRunner, WorkerRunner

from harness import cliargs
from harness.errors import InputError, LaunchError
from harness.loadgen.collector import Collector
from harness.loadgen.context import LoadContext, PlanMessage
from harness.records.schema import CellWindow
from harness.workload.plan import build_plan, users_at

log = logging.getLogger(__name__)

_START_LEAD_NS = 1_500_000_000
_COMMON = {"-t": "--run-time", "-u": "--users", "-r": "--spawn-rate"}
_COMMON_ENV = ("LOCUST_RUN_TIME", "LOCUST_USERS", "LOCUST_SPAWN_RATE")


class _RunState:
    """The master's (or single process's) run of the plan, through an engine session."""

    def __init__(self, env, scenario, scenario_path: str, urls: list[str], replicas: int,
                 levels: list[float], options, reps, run_time_s: float | None):
        self.env = env
        self.scenario = scenario
        self.scenario_path = scenario_path
        self.urls = urls
        self.replicas = replicas
        self.levels = levels
        self.options = options
        self.reps = reps
        self.run_time_s = run_time_s
        self.plan = build_plan(scenario.load, levels, replicas)
        self.active = False          # a run of the plan is under way (begun, not finished)
        # begin()'s greenlet: it yields while it opens the session and starts telemetry, and a
        # Ctrl-C then finishes the run from another greenlet, which waits for it first
        self.beginning: gevent.Greenlet | None = None
        # finish() yields (the store's flush, the scraper process's close): the shape's next tick
        # must not begin a new run meanwhile, nor at all once Locust is quitting
        self.closing = False
        self.quitting = False
        self.session = None
        self.collector: Collector | None = None
        self.master = None
        self.t0_pc = 0
        self.t0_ns = 0
        self.drain_deadline = None
        self.last_tick = None
        self.cells = self.plan.cells()        # [(name, level)] in order
        self.cells_over: set[str] = set()
        self.current: str | None = None
        self.results: list = []
        self.exit_code: int | None = None
        self.tab = None

    # -- begin ---------------------------------------------------------------------------------
    def begin(self) -> None:
        """Open the session, start telemetry and hand the plan to the users (or the workers)."""
        self.active = True
        # in a greenlet of its own: Ctrl-C makes Locust kill the shape's greenlet (this caller)
        # before it fires test_stop, and a session killed half-open would stay "running"
        self.beginning = g = gevent.spawn(self._begin)
        g.join()
        if not g.successful():
            raise g.exception

    def _begin(self) -> None:
        from harness.engine.hooks import Hooks
        from harness.engine.session import Session

        self.drain_deadline = None
        self.cells_over = set()
        self.current = None
        results = self.options.slm_results or self.scenario.store.results_dir
        hooks = Hooks([self.tab])
        self.session = Session(self.scenario, Path(self.scenario_path).read_text(), results,
                               command="locust", hooks=hooks, replicas=[self.replicas],
                               levels=self.levels)
        note = self.session.telemetry.start(self.reps)
        self.session.server_metrics.start(list(self.urls))   # stopped when the session closes
        self.session.rundir.write_manifest(telemetry_note=note, urls=list(self.urls),
                                           emulated=bool(self.reps.emulated))
        print(f"slm-harness: {note}", file=sys.stderr)
        rundir = self.session.rundir
        runner = self.env.runner
        # users start at once; the plan's clock a little later, once the run directory's writers
        # and the sampler have done their first (slow) work
        self.t0_ns = time.time_ns() + _START_LEAD_NS
        self.t0_pc = perf_counter_ns() + _START_LEAD_NS
        if isinstance(runner, MasterRunner):
            from harness.loadgen.masterside import MasterSide

            if self.collector is None:
                self.collector = Collector(record_sink=None, protocol=self.scenario.target.protocol)
                self.master = MasterSide(self.env, self.collector)
            self.collector.stats = {}
            self.collector.record_sink = rundir.requests.append
            self.master.reset()
            msg = PlanMessage(self.scenario.model_dump(mode="json"), self.urls, self.replicas,
                              self.levels, rundir.run_id, self.t0_ns,
                              open_loop_streams=max(1, runner.worker_count))
            runner.send_message("slm_plan", msg.to_wire())
        else:
            msg = PlanMessage(self.scenario, self.urls, self.replicas, self.levels, rundir.run_id,
                              self.t0_ns, 1)
            self.env.slm = LoadContext.build(msg, events=self.env.events,
                                             record_sink=rundir.requests.append)
            self.collector = self.env.slm.collector
        if self.tab is not None:
            self.tab.collector = self.collector
            self.tab.power = self.session.telemetry

    def elapsed_s(self) -> float:
        return max(0.0, (perf_counter_ns() - self.t0_pc) / 1e9)

    # -- cells ---------------------------------------------------------------------------------
    def at(self, t_s: float):
        """The plan's segment at ``t_s``; cells the clock has left are finished on the way."""
        seg = self.plan.at(t_s)
        name = seg.cell if seg is not None else None
        if name != self.current:
            if self.current is not None and seg is not None:
                self._cell_over(self.current, partial=False)
            self.current = name
            if name is not None:
                from harness.engine.plan import Cell

                self.session.cell_started(name)
                self.session.hooks.on_cell_start(Cell(self.replicas, seg.level, self.plan.mode))
        return seg

    def _cell_over(self, name: str, partial: bool, end_ns: int | None = None) -> None:
        """Write the cell's windows (the open one cut at ``end_ns``, marked partial) and close it."""
        from harness.engine.engine import cell_metrics
        from harness.engine.plan import Cell

        if name in self.cells_over:
            return
        self.cells_over.add(name)
        rundir = self.session.rundir
        level = dict(self.cells)[name]
        for w in _windows(self.plan, name, self.t0_ns, rundir.run_id):
            if end_ns is not None:
                if w.start_ns >= end_ns:
                    continue
                if w.end_ns > end_ns:
                    w.end_ns, w.note = end_ns, "partial: the run was stopped"
            rundir.windows.append(w)
        self.session.cell_ended(name, partial=partial)
        m = None if partial else cell_metrics(self.session, name, None)
        self.session.hooks.on_cell_done(Cell(self.replicas, level, self.plan.mode), m, partial)

    def drained(self) -> bool:
        runner = self.env.runner
        if self.drain_deadline is None:
            self.drain_deadline = time.monotonic() + self.scenario.target.request_timeout_s + 2
        if time.monotonic() > self.drain_deadline:
            return True
        if isinstance(runner, MasterRunner):
            return len(self.master.drained) >= runner.worker_count
        return self.collector.inflight == 0

    # -- finish --------------------------------------------------------------------------------
    def finish(self, status: str = "complete", reason: str = "") -> int:
        """Close the run: the cell under way is partial unless the plan ended; report; exit code."""
        self.active = False
        self.closing = True
        try:
            g = self.beginning
            if g is not None:
                g.join(timeout=30)          # stopped while begin() runs
            if g is None or not g.successful():
                return self._finish_unbegun(status, reason)
            return self._finish(status, reason)
        finally:
            self.closing = False

    def _finish_unbegun(self, status: str, reason: str) -> int:
        """begin() failed or did not end in time: close what it opened; no cell ran."""
        from harness.engine.outcome import exit_code

        if self.session is not None:
            self.session.close(status, reason)
            print(f"results: {self.session.path}")
        print(f"locust stopped before the first cell: {reason or status}", file=sys.stderr)
        code = exit_code(status, None, "every")
        self.env.process_exit_code = self.exit_code = code
        return code

    def _finish(self, status: str, reason: str) -> int:
        from harness.engine.outcome import exit_code, write_outputs
        from harness.loadgen.driver import results_for
        from harness.loadgen.summary import print_diagnostics, write_json

        runner = self.env.runner
        if isinstance(runner, MasterRunner):
            if not self.master.flush(runner.worker_count):
                log.warning("not every worker sent its final results")
        now_ns = time.time_ns()
        if status == "complete":
            for name, _ in self.cells:
                self._cell_over(name, partial=False)
        else:
            for name, _ in self.cells:
                win = self.plan.window(name, "cooldown") or self.plan.window(name, "measure")
                started = any(s.cell == name and self.t0_ns + s.start_s * 1e9 < now_ns
                              for s in self.plan.segments)
                ended = win is not None and self.t0_ns + win[1] * 1e9 <= now_ns
                if ended:
                    self._cell_over(name, partial=False)
                elif started:
                    self._cell_over(name, partial=True, end_ns=now_ns)
        s = self.session
        done = [(n, lv) for n, lv in self.cells if n in s.cells_done]
        workers = runner.worker_count if isinstance(runner, MasterRunner) else 1
        windows = [w for w in s.windows if w.cell in dict(done)]
        results = results_for(_SubPlan(self.plan, done), self.collector, windows, self.scenario,
                              s.rundir, s.run_id, workers)
        s.close(status, reason)
        self.results = results
        a, paths = write_outputs(s.path)
        if a is not None and self.tab is not None:   # the report's own figures replace the live ones
            from harness.engine.plan import Cell

            for m in a.cells:
                self.tab.on_cell_done(Cell(m.replicas, m.level, m.level_kind), m, False)
        if a is not None:
            from harness.report.console import print_analysis

            print_analysis(a)
        print_diagnostics(results)
        if s.cells_partial:
            print(f"locust stopped: {reason or status}; partial: {', '.join(s.cells_partial)}; "
                  f"{len(s.cells_done)} finished cell(s) kept", file=sys.stderr)
        if paths is not None:
            print(f"report: {paths.html}")
        print(f"results: {s.path}")
        if self.options.slm_json:
            write_json(self.options.slm_json, results, str(s.path), analysis=a,
                       partial=s.cells_partial)
        code = exit_code(status, a, "every")
        self.env.process_exit_code = self.exit_code = code
        return code


class _SubPlan:
    """The plan restricted to the cells that finished (for the merged histograms)."""

    def __init__(self, plan, cells):
        self.replicas, self.mode, self._cells = plan.replicas, plan.mode, cells

    def cells(self):
        return list(self._cells)


def _windows(plan, cell: str, t0_ns: int, run_id: str) -> list[CellWindow]:
    return [CellWindow(run_id=run_id, cell=c, replicas=plan.replicas, level=level,
                       level_kind=plan.mode, phase=phase, start_ns=t0_ns + int(a * 1e9),
                       end_ns=t0_ns + int(b * 1e9))
            for c, phase, a, b, level in plan.windows() if c == cell]


def _fail(e: Exception, code: int) -> None:
    what = "error" if code == 2 else "target unreachable"
    print(f"slm-harness: {what}: {e}", file=sys.stderr)
    sys.exit(code)


def _common_options_given(argv: list[str]) -> list[str]:
    """Locust's -t/-u/-r as typed (``-t 10``, ``-t10``, ``--run-time=10``) or from LOCUST_*."""
    given = []
    for a in argv:
        for short, long in _COMMON.items():
            if a == long or a.startswith(long + "=") or a == short or (
                    a.startswith(short) and not a.startswith("--") and len(a) > 2):
                given.append(long)
    given += [f"--{v[7:].lower().replace('_', '-')}" for v in _COMMON_ENV if os.environ.get(v)]
    return sorted(set(given))


def _options(parser, **kw):
    g = parser.add_argument_group(
        "slm-harness", "The scenario governs the load: its levels set the users, its phases the "
                       "timing. -t/--run-time stops the plan early (the cell under way is "
                       "partial); -u and -r are refused.")
    g.add_argument("--scenario", default=None, help="slm-harness scenario YAML (required)")
    g.add_argument("--slm-replicas", type=cliargs.replicas, default=None,
                   help="replica count the URLs stand for (default: number of --host URLs)")
    g.add_argument("--slm-levels", default=None, type=cliargs.levels_text,
                   help="comma-separated levels overriding load.levels")
    g.add_argument("--slm-results", default=None,
                   help="results directory (default: store.results_dir)")
    g.add_argument("--slm-json", default=None, help="write the machine-readable summary here")


def register_options() -> None:
    """Add the harness's options to Locust's parser (once, however often it is called)."""
    hook = events.init_command_line_parser
    if not getattr(hook, "slm_registered", False):
        hook.add_listener(_options)
        hook.slm_registered = True


def install(default_protocol: str = "tgi"):
    """Register options and listeners on ``locust.events``; return the shape class to expose."""

    register_options()

    @events.init.add_listener
    def _init(environment, runner=None, **kw):
        runner = runner or environment.runner
        if isinstance(runner, WorkerRunner):
            from harness.loadgen.workerside import setup_worker

            setup_worker(environment)
            return
        opts = environment.parsed_options
        if opts is None or not opts.scenario:
            _fail(InputError("--scenario FILE is required", field="--scenario"), 2)
        if getattr(opts, "num_users", None) or getattr(opts, "spawn_rate", None):
            flag = "-u/--users" if opts.num_users else "-r/--spawn-rate"
            _fail(InputError("the scenario's plan sets the users (load.levels, one cell after "
                             "another); pass --slm-levels instead", field=flag), 2)
        run_time_s = getattr(opts, "run_time", None)
        opts.run_time = None          # the shape stops at -t itself (Locust would only log it)
        from harness.engine.targets import GivenUrls
        from harness.loadgen.cli import _levels, _urls
        from harness.scenario.loader import load_scenario

        try:
            scenario = load_scenario(opts.scenario)
            urls = _urls([environment.host] if environment.host else None)
            if not urls and scenario.target.launcher.kind == "endpoints":
                urls = list(scenario.target.launcher.urls)
            if not urls:
                raise InputError("no replica URLs: pass --host URL[,URL...] or use an endpoints "
                                 "launcher", file=opts.scenario, field="target.launcher")
            levels = _levels(opts.slm_levels) or scenario.load.levels
            if levels == "auto":
                raise InputError("levels 'auto' needs `slm-harness sweep`; pass --slm-levels",
                                 file=opts.scenario, field="load.levels")
        except InputError as e:
            _fail(e, 2)
        try:
            reps = GivenUrls(urls).__enter__()
            from harness.protocols.probe import resolve

            scenario = resolve(scenario, urls)   # protocol auto: asked once, before any load
        except LaunchError as e:
            _fail(e, 3)
        except InputError as e:
            _fail(e, 2)
        from harness.engine.session import ctrl_c_reaches_main

        ctrl_c_reaches_main()         # not into the GPU sampler's greenlet, where it would be lost
        replicas = opts.slm_replicas or len(urls)
        st = environment.slm_run = _RunState(environment, scenario, opts.scenario, urls, replicas,
                                             list(levels), opts, reps, run_time_s)
        if run_time_s:
            log.info("-t %ss: the plan (%.0f s) stops there; the cell under way is then partial",
                     run_time_s, st.plan.total_s)

        @environment.events.test_stop.add_listener
        def _stopped_early(environment, **kw):
            if not st.active:        # the plan ended on its own
                return
            if getattr(opts, "headless", False):   # Locust's own Ctrl-C handling stops the runner
                st.finish("interrupted", "interrupted (Ctrl-C)")
            else:
                st.finish("stopped", "stopped from the web UI")

        @environment.events.quitting.add_listener
        def _quitting(environment, **kw):
            st.quitting = True
            if st.active:            # Ctrl-C or SIGTERM
                st.finish("interrupted", "interrupted (Ctrl-C or SIGTERM)")

        if environment.web_ui is not None:
            from harness.loadgen.webui import LlmTab, install_llm_tab

            st.tab = LlmTab(None, scenario)
            install_llm_tab(environment, None, scenario, tab=st.tab)

    class LLMPlanShape(LoadTestShape):
        """Users per the scenario's plan; ends after the last level has drained."""

        # Locust's -t/-u/-r reach the door (it uses -t and refuses -u/-r) instead of being
        # ignored with a warning.
        use_common_options = bool(_common_options_given(sys.argv[1:]))

        def tick(self):
            from harness.loadgen.users import ClosedLoopUser, OpenLoopUser

            env = self.runner.environment
            st: _RunState = env.slm_run
            if not st.active:
                # the run is closing (finish() yields): hold the users as they are until it is
                # done; None here would end the shape and let Locust exit before the outcome
                if st.closing or st.quitting:
                    return st.last_tick
                st.begin()
            t = st.elapsed_s()
            bad = getattr(getattr(env, "slm", None), "input_error", None)
            if bad is not None:             # a user met bad input (a dataset record): stop once
                print(f"slm-harness: error: {bad}", file=sys.stderr)
                st.finish("bad-input", str(bad))
                return None
            if st.run_time_s and t >= st.run_time_s:
                st.finish("stopped", f"-t {st.run_time_s:g}s reached")
                return None
            seg = st.at(t)
            closed = st.plan.mode == "concurrency"
            if seg is not None:
                if not closed:
                    n = max(1, self.runner.worker_count) if isinstance(self.runner, MasterRunner) else 1
                    tick = (n, 100, [OpenLoopUser])
                else:
                    tick = (*users_at(seg), [ClosedLoopUser])
                st.last_tick = tick
                return tick
            if not st.drained():
                return st.last_tick
            st.finish()
            return None

    return LLMPlanShape
