"""The engine: a plan's cells through begin, drive, drain and finish, group by group.

For each replica count it brings replicas up (a launcher, or :class:`GivenUrls`), starts GPU
telemetry, drives every cell of the group through the load generator (the cell's phases and
windows: :func:`harness.loadgen.driver.run_plan`), and brings the replicas down. A stop
(Ctrl-C, SIGTERM) ends the cell under way as ``partial``: its windows so far are written with a
``partial`` note, it is listed in ``manifest.json: cells_partial`` and never counted as met.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from harness.analysis.knee import KneeSearch, LevelResult, ProbeEstimate
from harness.analysis.metrics import CellMetrics, compute_cell
from harness.analysis.rundata import RunData
from harness.analysis.saturation import oversaturation, queue_depth
from harness.analysis.saturation import thresholds as saturation_thresholds
from harness.engine.hooks import Hooks
from harness.engine.plan import Cell, RunPlan
from harness.engine.session import Session, Stopped, sigterm_raises, stop_message
from harness.errors import InputError, LaunchError
from harness.launch.memory import kv_budget_fields
from harness.records.schema import GPU_SCHEMA

log = logging.getLogger(__name__)

#: ``factory(target, replicas, log_dir)`` -> a launcher (context manager yielding Replicas)
LaunchFactory = Callable[[Any, int, Path], Any]


@dataclass
class RunResult:
    run_dir: Path
    status: str                       # complete | interrupted | stopped | launch-failed
    cells_done: list[str]
    cells_partial: list[str] = field(default_factory=list)
    message: str = ""                 # why it stopped early
    cell_results: list = field(default_factory=list)   # the load generator's CellResults


class Engine:
    """Runs ``plan`` in ``session``; replicas from ``launcher_factory`` (default: the scenario's
    launcher) or, when ``urls`` are given, the replicas already running there."""

    def __init__(self, session: Session, plan: RunPlan, *, urls: list[str] | None = None,
                 launcher_factory: LaunchFactory | None = None, processes: int = 0,
                 web_ui: tuple[str, int] | None = None):
        self.session = session
        self.scenario = session.scenario
        self.plan = plan
        self.urls = urls
        self.launcher_factory = launcher_factory
        self.processes = processes
        self.web_ui = web_ui
        self.hooks: Hooks = session.hooks
        self.llm_tab = None
        if web_ui:   # one tab for the whole run: it keeps every finished cell
            from harness.loadgen.webui import LlmTab

            self.llm_tab = LlmTab(None, self.scenario, power=session.telemetry)
            self.hooks.add(self.llm_tab)
        self.cell_results: list = []
        self._sigterm = None

    # -- the run ---------------------------------------------------------------------------
    def run(self) -> RunResult:
        s = self.session
        status, message = "interrupted", ""
        try:
            with sigterm_raises() as self._sigterm:
                self._run_groups()
                self._sigterm.check()
            status = "complete"
        except LaunchError as e:
            status, message = "launch-failed", f"replicas could not be launched: {e}"
        except InputError as e:       # met mid-run (a dataset record): stop, never spin on it
            status, message = "bad-input", str(e)
        except Stopped:
            status, message = "stopped", "stopped from the web UI"
        except KeyboardInterrupt as e:
            message = stop_message(e)
        finally:
            s.close(status, message)
        return RunResult(s.path, status, list(s.cells_done), list(s.cells_partial), message,
                         self.cell_results)

    def _launcher(self, replicas: int):
        if self.urls:
            from harness.engine.targets import GivenUrls

            return GivenUrls(self.urls, replicas)
        factory = self.launcher_factory
        if factory is None:
            from harness.launch.base import launcher_for as factory  # noqa: N813
        try:
            return factory(self.scenario.target, replicas,
                           self.session.path / "logs" / f"r{replicas}")
        except ModuleNotFoundError as e:
            raise LaunchError(f"the {self.scenario.target.launcher.kind!r} launcher is not "
                              f"available in this build ({e.name})") from None

    def _run_groups(self) -> None:
        s = self.session
        for group in self.plan.groups():
            r = group.replicas
            if not self.plan.auto:
                todo = [c for c in group.cells if c.name not in s.cells_done]
                for c in group.cells:
                    if c.name in s.cells_done:
                        self.hooks.on_cell_skipped(c)
                if not todo:
                    self.hooks.on_group_done(r)
                    continue
            else:
                auto = [LevelResult.from_json(x)
                        for x in s.rundir.manifest.get("auto_results", {}).get(str(r), [])]
                for x in auto:
                    self.hooks.on_cell_skipped(Cell(r, x.level, self.plan.mode))
                if self._knee().next_level(auto) is None:
                    continue
            self.hooks.on_group_launching(r)
            with self._launcher(r) as reps:
                note = s.telemetry.start(reps)
                from harness.protocols.probe import resolve

                used = resolve(self.scenario, list(reps.urls)).target   # protocol auto: what it found
                s.rundir.write_manifest(telemetry_note=note,
                                        emulated=bool(getattr(reps, "emulated", False)),
                                        urls=list(reps.urls), protocol=used.protocol, model=used.model,
                                        **kv_budget_fields(s.rundir.manifest, r,
                                                           getattr(reps, "extra", {}) or {}))
                from harness.hostinfo import server_info

                servers = dict(s.rundir.manifest.get("servers") or {})
                from harness.protocols.access import Access

                servers.update(server_info(list(reps.urls), access=Access.from_target(self.scenario.target)))
                if servers:   # each replica's /info (version) where the server has one
                    s.rundir.write_manifest(servers=servers)
                self.hooks.on_group_start(r, list(reps.urls), note)
                first = todo[0].name if not self.plan.auto else f"r{r}-auto"
                s.telemetry.idle_baseline(first, r, self.plan.mode,
                                          self.scenario.validity.idle_baseline_s)
                try:
                    if not self.plan.auto:
                        for cell in todo:
                            self.run_cell(reps, cell)
                    else:
                        self._run_auto(reps, r, auto)
                finally:
                    s.telemetry.stop(f"r{r}")
                    s.server_metrics.stop()   # before the replicas go down
            self.hooks.on_group_done(r)

    def _knee(self, start: float = 1.0) -> KneeSearch:
        return KneeSearch.for_load(self.scenario.load, start=start)

    def _probe(self, reps, r: int) -> ProbeEstimate | None:
        """The short probe that picks the explore's start (kept in the manifest: a resumed run
        starts where the first attempt did, without probing again)."""
        s = self.session
        kept = (s.rundir.manifest.get("auto_probe") or {}).get(str(r))
        if kept:
            return ProbeEstimate.from_json(kept)
        if not self.scenario.load.auto_probe_s:
            return None
        from harness.engine.probe import PROBE_STREAMS, run_probe

        self._sigterm.check()
        self.hooks.on_note(r, f"levels: auto, {r} replica(s): probing at "
                              f"{' and '.join(map(str, PROBE_STREAMS))} streams "
                              f"({self.scenario.load.auto_probe_s:g} s each) to pick the start")
        est = run_probe(self.scenario, list(reps.urls), r, run_id=s.run_id,
                        run_dir=s.path, processes=self.processes)
        if est is not None:
            probes = dict(s.rundir.manifest.get("auto_probe") or {})
            probes[str(r)] = est.to_json()
            s.rundir.write_manifest(auto_probe=probes)
            self.hooks.on_note(r, f"levels: auto, {r} replica(s): {est.describe()}")
        return est

    def _run_auto(self, reps, r: int, results: list[LevelResult]) -> None:
        est = self._probe(reps, r) if not results else None   # resumed: the start is behind us
        search = self._knee(est.start if est else 1.0)
        while (lv := search.next_level(results)) is not None:
            cell = Cell(r, lv, self.plan.mode)
            self.run_cell(reps, cell, measured=lambda m, c=cell: self._keep_level(c, m, results))
        self.hooks.on_note(r, f"levels: auto, {r} replica(s): {search.why_stopped(results)}")

    def _keep_level(self, cell: Cell, m: CellMetrics | None, results: list[LevelResult]) -> None:
        """The finished cell's result for the search, in the manifest before the cell counts as
        done: a run stopped in between resumes with every done cell known to the search."""
        wins = [w for w in self.session.windows if w.cell == cell.name and w.phase == "measure"]
        sat = oversaturation(self.session.cell_requests(cell.name),
                             closed_loop=self.plan.mode == "concurrency",
                             queue=self._queue(cell.name),
                             window_s=(wins[-1].end_ns - wins[-1].start_ns) / 1e9 if wins else None,
                             **saturation_thresholds(self.scenario.load))
        results.append(LevelResult(
            cell.level, m.output_tokens_per_s if m else 0.0, m.slo_ok if m else False,
            m.ttft_p50_s if m else None, m.tpot_p50_s if m else None,
            sat.fired if sat.ttft is not None else None, sat.describe()))
        auto = dict(self.session.rundir.manifest.get("auto_results", {}))
        auto[str(cell.replicas)] = [x.to_json() for x in results]
        self.session.rundir.write_manifest(auto_results=auto)

    def _queue(self, name: str):
        """The servers' queue depth over the cell's measured window (scraped ``/metrics``), or
        None when there is none to read."""
        wins = [w for w in self.session.windows if w.cell == name and w.phase == "measure"]
        if not wins:
            return None
        try:
            from harness.records.rundir import read_table

            rows = read_table(self.session.path, "server_metrics")
            return queue_depth(rows, wins[-1].start_ns, wins[-1].end_ns)
        except Exception as e:  # noqa: BLE001 - the search goes on with the requests alone
            log.warning("server queue depth unreadable for %s: %s", name, e)
            return None

    # -- one cell: begin, drive, drain, finish ---------------------------------------------
    def run_cell(self, reps, cell: Cell, measured: Callable | None = None) -> CellMetrics | None:
        """``measured(metrics)``: called once the cell is measured, before it counts as done."""
        from harness.loadgen.driver import run_plan

        self._sigterm.check()   # a SIGTERM whose exception was swallowed stops before the next cell
        s = self.session
        s.cell_started(cell.name)
        self.hooks.on_cell_start(cell)
        try:
            (res,) = run_plan(self.scenario, list(reps.urls), cell.replicas, [cell.level],
                              s.rundir, run_id=s.run_id, processes=self.processes,
                              window_hook=self.hooks.on_phase, web_ui=self.web_ui,
                              repeat=cell.repeat, llm_tab=self.llm_tab)
        except BaseException:         # a stop, or bad input met mid-cell: the cell is partial
            s.cell_ended(cell.name, partial=True)
            self.hooks.on_cell_done(cell, None, True)
            raise
        self.cell_results.append(res)
        m = self.cell_metrics(cell.name, res)
        if measured is not None:
            measured(m)
        s.cell_ended(cell.name, partial=False)
        self.hooks.on_cell_done(cell, m, False)
        return m

    def cell_metrics(self, name: str, res) -> CellMetrics | None:
        """The finished cell's metrics by the report's own rules (for the knee and the display)."""
        return cell_metrics(self.session, name, res.histograms.encode() if res else None)


def cell_metrics(session: Session, name: str, histograms: dict | None) -> CellMetrics | None:
    wins = [w for w in session.windows if w.cell == name and w.phase == "measure"]
    if not wins:
        return None
    req = session.cell_requests(name)
    run = RunData(path=session.path, manifest={}, scenario=session.scenario, requests=req,
                  gpu=GPU_SCHEMA.empty_table().to_pandas(), windows=pd.DataFrame(),
                  histograms={name: histograms} if histograms else {})
    w = wins[-1]
    return compute_cell(run, {k: getattr(w, k) for k in w.__slots__}, session.scenario.slo)
