"""Plain ``locust -f locustfiles/tgi.py --scenario FILE`` support: options, shape, wiring.

A locustfile calls :func:`install` and exposes the returned shape class. Locust then runs the
scenario's levels back to back for one replica count (headless or web UI, one process,
``--processes N`` or ``--master``/``--worker``): the shape sets users from the plan (one Locust
tick a second, so level edges in this mode are within ~1 s; ``run_cell`` is exact), workers
forward deltas, the master writes the run directory, prints the summary table, writes
``--slm-json`` and sets the exit code from the SLO (0 met, 1 violated, 2 bad input).
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from time import perf_counter_ns

from locust import LoadTestShape, events
from locust.runners import MasterRunner, WorkerRunner

from harness.errors import InputError
from harness.loadgen.collector import Collector
from harness.loadgen.context import LoadContext, PlanMessage
from harness.records.schema import CellWindow
from harness.workload.plan import build_plan

log = logging.getLogger(__name__)


class _RunState:
    """The master's (or single process's) view of one run of the plan."""

    def __init__(self, env, scenario, scenario_path: str, urls: list[str], replicas: int,
                 levels: list[float], options):
        self.env = env
        self.scenario = scenario
        self.scenario_path = scenario_path
        self.urls = urls
        self.replicas = replicas
        self.levels = levels
        self.options = options
        self.plan = build_plan(scenario.load, levels, replicas)
        self.active = False          # a run of the plan is under way (begun, not finished)
        self.rundir = None
        self.collector: Collector | None = None
        self.master = None
        self.t0_pc = 0
        self.t0_ns = 0
        self.drain_deadline = None
        self.last_tick = None

    def begin(self) -> None:
        from harness.records.rundir import RunDir

        self.active = True
        self.drain_deadline = None
        results = self.options.slm_results or self.scenario.store.results_dir
        self.rundir = RunDir.create(results, self.scenario.name)
        self.rundir.write_scenario(Path(self.scenario_path).read_text())
        self.rundir.write_manifest(scenario=self.scenario.model_dump(mode="json"), command="locust",
                                   replicas=self.replicas, levels=self.levels)
        runner = self.env.runner
        self.t0_ns = time.time_ns() + 500_000_000
        self.t0_pc = perf_counter_ns() + 500_000_000
        if isinstance(runner, MasterRunner):
            from harness.loadgen.masterside import MasterSide

            if self.collector is None:
                self.collector = Collector(record_sink=None, protocol=self.scenario.target.protocol)
                self.master = MasterSide(self.env, self.collector)
            self.collector.stats = {}
            self.collector.record_sink = self.rundir.requests.append
            self.master.reset()
            msg = PlanMessage(self.scenario.model_dump(mode="json"), self.urls, self.replicas, self.levels,
                              self.rundir.run_id, self.t0_ns, open_loop_streams=max(1, runner.worker_count))
            runner.send_message("slm_plan", msg.to_wire())
        else:
            msg = PlanMessage(self.scenario, self.urls, self.replicas, self.levels, self.rundir.run_id,
                              self.t0_ns, 1)
            self.env.slm = LoadContext.build(msg, events=self.env.events,
                                             record_sink=self.rundir.requests.append)
            self.collector = self.env.slm.collector
        if getattr(self.env, "slm_ui", None) is not None:
            self.env.slm_ui.collector = self.collector

    def drained(self) -> bool:
        runner = self.env.runner
        if self.drain_deadline is None:
            self.drain_deadline = time.monotonic() + self.scenario.target.request_timeout_s + 2
        if time.monotonic() > self.drain_deadline:
            return True
        if isinstance(runner, MasterRunner):
            return len(self.master.drained) >= runner.worker_count
        return self.collector.inflight == 0

    def finish(self, status: str = "complete") -> int:
        from harness.loadgen.driver import results_for

        self.active = False
        from harness.loadgen.summary import print_table, write_json

        runner = self.env.runner
        if isinstance(runner, MasterRunner):
            if not self.master.flush(runner.worker_count):
                log.warning("not every worker sent its final results")
        windows = []
        for s in self.plan.segments:
            if windows and windows[-1].cell == s.cell and windows[-1].phase == s.phase:
                windows[-1].end_ns = self.t0_ns + int(s.end_s * 1e9)
                continue
            windows.append(CellWindow(run_id=self.rundir.run_id, cell=s.cell, replicas=self.replicas,
                                      level=s.level, level_kind=self.plan.mode, phase=s.phase,
                                      start_ns=self.t0_ns + int(s.start_s * 1e9),
                                      end_ns=self.t0_ns + int(s.end_s * 1e9)))
        for w in windows:
            self.rundir.windows.append(w)
        workers = runner.worker_count if isinstance(runner, MasterRunner) else 1
        results = results_for(self.plan, self.collector, windows, self.scenario, self.rundir,
                              self.rundir.run_id, workers)
        self.rundir.close(status)
        self.results = results
        print_table(results)
        print(f"results: {self.rundir.path}")
        if self.options.slm_json:
            write_json(self.options.slm_json, results, str(self.rundir.path))
        code = 0 if all(r.slo.ok for r in results) else 1
        self.env.process_exit_code = code
        return code


def _fail_input(e: InputError) -> None:
    print(f"slm-harness: error: {e}", file=sys.stderr)
    sys.exit(2)


def install(default_protocol: str = "tgi"):
    """Register options and listeners on ``locust.events``; return the shape class to expose."""

    @events.init_command_line_parser.add_listener
    def _options(parser, **kw):
        g = parser.add_argument_group("slm-harness")
        g.add_argument("--scenario", default=None, help="slm-harness scenario YAML (required)")
        g.add_argument("--slm-replicas", type=int, default=None,
                       help="replica count the URLs stand for (default: number of --host URLs)")
        g.add_argument("--slm-levels", default=None, help="comma-separated levels overriding load.levels")
        g.add_argument("--slm-results", default=None, help="results directory (default: store.results_dir)")
        g.add_argument("--slm-json", default=None, help="write the machine-readable summary here")

    @events.init.add_listener
    def _init(environment, runner=None, **kw):
        runner = runner or environment.runner
        if isinstance(runner, WorkerRunner):
            from harness.loadgen.workerside import setup_worker

            setup_worker(environment)
            return
        opts = environment.parsed_options
        if opts is None or not opts.scenario:
            _fail_input(InputError("--scenario FILE is required", field="--scenario"))
        from harness.loadgen.cli import _levels, _urls
        from harness.scenario.loader import load_scenario

        try:
            scenario = load_scenario(opts.scenario)
            urls = _urls([environment.host] if environment.host else None)
            if not urls and scenario.target.launcher.kind == "endpoints":
                urls = list(scenario.target.launcher.urls)
            if not urls:
                raise InputError("no replica URLs: pass --host URL[,URL...] or use an endpoints launcher",
                                 file=opts.scenario, field="target.launcher")
            from harness.protocols.probe import resolve

            scenario = resolve(scenario, urls)   # protocol auto: asked once, before any load
            levels = _levels(opts.slm_levels) or scenario.load.levels
            if levels == "auto":
                raise InputError("levels 'auto' needs `slm-harness sweep`; pass --slm-levels",
                                 file=opts.scenario, field="load.levels")
        except InputError as e:
            _fail_input(e)
        replicas = opts.slm_replicas or len(urls)
        environment.slm_run = _RunState(environment, scenario, opts.scenario, urls, replicas,
                                        list(levels), opts)

        @environment.events.test_stop.add_listener
        def _stopped_early(environment, **kw):
            st = environment.slm_run
            if st.active:            # stopped from the web UI or by --run-time before the plan ended
                st.finish("stopped")
        if environment.web_ui is not None:
            from harness.loadgen.webui import install_llm_tab

            install_llm_tab(environment, None, scenario)

    class LLMPlanShape(LoadTestShape):
        """Users per the scenario's plan; ends after the last level has drained."""

        def tick(self):
            from harness.loadgen.users import ClosedLoopUser, OpenLoopUser

            env = self.runner.environment
            st: _RunState = env.slm_run
            if not st.active:
                st.begin()
            now = perf_counter_ns()
            seg = st.plan.at(max(0.0, (now - st.t0_pc) / 1e9))
            closed = st.plan.mode == "concurrency"
            if seg is not None:
                if not closed:
                    n = max(1, self.runner.worker_count) if isinstance(self.runner, MasterRunner) else 1
                    tick = (n, 100, [OpenLoopUser])
                elif seg.phase == "ramp":
                    span = max(seg.end_s - seg.start_s, 1e-3)
                    tick = (max(1, int(round(seg.to_value))),
                            max(abs(seg.to_value - seg.from_value) / span, 0.5), [ClosedLoopUser])
                else:
                    tick = (int(seg.level), max(100.0, seg.level * 50), [ClosedLoopUser])
                st.last_tick = tick
                return tick
            if not st.drained():
                return st.last_tick
            st.finish()
            return None

    return LLMPlanShape
