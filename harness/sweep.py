"""The replicas x load sweep: for each replica count bring replicas up, run every level as a cell
(warm-up, measured window, cool-down) with GPU telemetry running, bring them down, go on; then
analyse the run directory and write the report.

Interruptions (Ctrl-C, SIGTERM, replicas that never become healthy) keep every finished cell:
the run directory is closed with its status, the report covers what ran, and
``--resume RUN_DIR`` runs only the cells not yet finished (``manifest.json: cells_done``).
Importing Locust monkey-patches the standard library; the caller imports it before this runs.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import signal
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from harness.analysis.knee import KneeSearch, LevelResult
from harness.analysis.metrics import CellMetrics, compute_cell
from harness.analysis.rundata import RunData
from harness.analysis.summary import RunAnalysis
from harness.errors import InputError, LaunchError
from harness.records.rundir import RunDir, UnreadableFile
from harness.store.runstore import ObservedAppender, RunStore
from harness.records.schema import (
    GPU_SCHEMA,
    REQUEST_SCHEMA,
    CellWindow,
)
from harness.scenario.models import Scenario

log = logging.getLogger(__name__)

LaunchFactory = Callable[[Any, int, Path], Any]


def cell_name(mode: str, replicas: int, level: float) -> str:
    """``r2-c64`` (closed loop) or ``r1-q7.5`` (open loop, req/s), as in docs/architecture.md."""
    return f"r{replicas}-c{int(level)}" if mode == "concurrency" else f"r{replicas}-q{level:g}"


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C (gevent hands KeyboardInterrupt subclasses to the main greenlet)."""


@dataclass
class SweepResult:
    run_dir: Path
    status: str  # complete | interrupted | launch-failed
    cells_done: list[str]
    analysis: RunAnalysis | None = None
    report_html: Path | None = None
    message: str = ""  # why it stopped early

    @property
    def exit_code(self) -> int:
        """0: recommended config meets the SLO; 1: no cell does; 3: launch failed; 130: interrupted."""
        if self.status == "interrupted":
            return 130
        if self.status == "launch-failed":
            return 3
        return self.analysis.exit_code() if self.analysis is not None else 1


# ---------------------------------------------------------------------------------------------
# Telemetry, used defensively: a missing or failing sampler never stops the sweep
# ---------------------------------------------------------------------------------------------
class _Telemetry:
    """One sampler per replica group, energy per phase window (stored on the CellWindow)."""

    def __init__(self, scenario: Scenario, rundir: RunDir, extra_sinks: list | None = None):
        self.scenario = scenario
        self.rundir = rundir
        self.extra_sinks = [x for x in (extra_sinks or []) if x is not None]
        self.sampler = None
        self.note = "telemetry: off"
        self.energies: dict[tuple[str, str], Any] = {}
        self.summaries: dict[str, Any] = {}

    def start(self, replicas) -> str:
        tel = self.scenario.telemetry
        if not tel.enabled or tel.source == "none":
            self.note = "telemetry: off (scenario)"
            return self.note
        try:
            from harness.telemetry import RunDirSink, Sampler, open_source
        except ImportError as e:
            self.note = f"telemetry: not available in this build ({e.name})"
            return self.note
        try:
            emulated = bool(getattr(replicas, "emulated", False))
            sel = open_source(
                tel.source,
                gpus=tel.gpus,
                emulator_urls=list(replicas.urls) if emulated else None,
                warn=False,
            )
            self.note = sel.note
            if sel.source is None:
                return self.note
            sinks = [RunDirSink(self.rundir)] + self.extra_sinks
            self.sampler = Sampler(
                sel.source, sinks, rate_hz=tel.rate_hz, run_id=self.rundir.run_id
            )
            self.sampler.start()
        except Exception as e:  # noqa: BLE001 - the load test goes on without GPU data
            log.warning("telemetry could not start: %s", e)
            self.sampler = None
            self.note = f"telemetry: could not start ({type(e).__name__}: {e})"
        return self.note

    def hook(self, cell: str, phase: str, edge: str, ts_ns: int) -> None:
        if self.sampler is None:
            return
        name = f"{cell}:{phase}"
        try:
            if edge == "begin":
                self.sampler.begin_window(name, ts_ns)
            else:
                self.energies[(cell, phase)] = self.sampler.end_window(name, ts_ns)
        except Exception as e:  # noqa: BLE001 - energy then comes from the samples in analysis
            log.warning("telemetry window %s %s failed: %s", name, edge, e)

    def fill(self, w: CellWindow) -> None:
        """Write the window's measured energy into the CellWindow before it is stored."""
        we = self.energies.pop((w.cell, w.phase), None)
        if we is not None and getattr(we, "energy_j", None) is not None:
            w.energy_j = float(we.energy_j)
            w.energy_source = getattr(we, "source", None)

    def stop(self, group: str) -> None:
        if self.sampler is None:
            return
        try:
            self.summaries[group] = self.sampler.stop()
        except Exception as e:  # noqa: BLE001
            log.warning("telemetry stop failed: %s", e)
        self.sampler = None



# ---------------------------------------------------------------------------------------------
# Reopening a run directory for --resume
# ---------------------------------------------------------------------------------------------
def reopen_rundir(path: Path) -> tuple[RunDir, dict]:
    """A RunDir writing to ``path`` again with every row of its finished cells (also what a killed
    writer left in its journals); an unfinished cell's rows are dropped (``RunDir.reopen``)."""
    mf = path / "manifest.json"
    if not mf.is_file():
        raise InputError("not a run directory (no manifest.json)", file=str(path), field="--resume")
    try:
        old = json.loads(mf.read_text())
    except json.JSONDecodeError as e:
        raise InputError(f"invalid JSON: {e.msg}", file=str(mf), line=e.lineno) from None
    if old.get("command") != "sweep":
        raise InputError(
            "only a sweep's run directory can be resumed", file=str(mf), field="command"
        )
    try:
        rd = RunDir.reopen(path, finished=old.get("cells_done", []))
    except UnreadableFile as e:
        raise InputError(
            "cannot resume: the file is unreadable (a writer of an older version was killed "
            "before it could close it)",
            file=str(e.path),
        ) from None
    return rd, old


# ---------------------------------------------------------------------------------------------
# The sweep
# ---------------------------------------------------------------------------------------------
@dataclass
class Sweep:
    scenario: Scenario
    scenario_text: str
    results_dir: Path
    resume: Path | None = None
    processes: int = 0
    launcher_factory: LaunchFactory | None = None
    progress: Any = None  # a harness.report.progress.SweepProgress, or None
    cells_done: list[str] = field(default_factory=list)
    _cell_rows: list = field(default_factory=list)
    _cell_windows: list = field(default_factory=list)
    _sigterm: Any = field(default_factory=lambda: _SigtermSeen())   # set by run()

    # -- the plan ---------------------------------------------------------------------------
    @property
    def mode(self) -> str:
        return self.scenario.load.mode

    def cell_seconds(self) -> float:
        ld = self.scenario.load
        # + ~2 s per cell: the start-up lead, the drain of requests in flight, bookkeeping
        phases = sum(s.duration_s for s in ld.stages) + ld.warmup_s + ld.duration_s + ld.cooldown_s
        return phases + 2.0

    def total_cells(self) -> int:
        ld = self.scenario.load
        per = ld.auto_max_cells if ld.levels == "auto" else len(ld.levels)
        return per * len(ld.replicas)

    def _knee(self) -> KneeSearch:
        ld = self.scenario.load
        return KneeSearch(
            start=1.0,
            max_level=ld.auto_max_level,
            max_cells=ld.auto_max_cells,
            integer=self.mode == "concurrency",
        )

    # -- running ----------------------------------------------------------------------------
    def open_rundir(self) -> RunDir:
        if self.resume is not None:
            rd, old = reopen_rundir(Path(self.resume))
            stored = old.get("scenario")
            if stored is not None and stored != self.scenario.model_dump(mode="json"):
                rd.close(old.get("status", "interrupted"))
                raise InputError(
                    "the scenario differs from the one the run was started with "
                    "(resume with the same file, or start a new sweep)",
                    file=str(Path(self.resume) / "manifest.json"),
                    field="scenario",
                )
            self.cells_done = list(old.get("cells_done", []))
            return rd
        rd = RunDir.create(self.results_dir, self.scenario.name)
        rd.write_scenario(self.scenario_text)
        rd.write_manifest(
            command="sweep",
            scenario=self.scenario.model_dump(mode="json"),
            cells_done=[],
            auto_results={},
        )
        return rd

    def run(self) -> SweepResult:
        rd = self.open_rundir()
        rd.requests = ObservedAppender(rd.requests, self._on_record)
        rd.windows = ObservedAppender(rd.windows, self._on_window)
        self._store = RunStore(self.scenario, rd)
        self._telemetry = _Telemetry(self.scenario, rd, [self._store.sink()])
        status, message = "interrupted", ""
        try:
            with _sigterm_raises() as self._sigterm:
                self._run_groups(rd)
                self._sigterm.check()
            status = "complete"
        except LaunchError as e:
            status, message = "launch-failed", f"replicas could not be launched: {e}"
        except KeyboardInterrupt as e:
            message = (
                "terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted (Ctrl-C)"
            )
        finally:
            self._telemetry.stop("last")
            store = self._store.close()
            if store is not None:
                rd.write_manifest(store={"note": self._store.note, **store})
            rd.write_manifest(cells_done=self.cells_done, stop_reason=message or None)
            rd.close(status)
        return SweepResult(Path(rd.path), status, list(self.cells_done), message=message)

    def _run_groups(self, rd: RunDir) -> None:
        ld = self.scenario.load
        factory = self.launcher_factory
        if factory is None:
            from harness.launch.base import launcher_for as factory  # noqa: N813
        for r in ld.replicas:
            levels = None if ld.levels == "auto" else [float(x) for x in ld.levels]
            if levels is not None:
                todo = [lv for lv in levels if cell_name(self.mode, r, lv) not in self.cells_done]
                for lv in levels:
                    if lv not in todo and self.progress:
                        self.progress.skipped(r, lv, cell_name(self.mode, r, lv))
                if not todo:
                    if self.progress:
                        self.progress.group_done(r)
                    continue
            else:
                auto = [
                    LevelResult(*x) for x in rd.manifest.get("auto_results", {}).get(str(r), [])
                ]
                for x in auto:
                    if self.progress:
                        self.progress.skipped(r, x.level, cell_name(self.mode, r, x.level))
                if self._knee().next_level(auto) is None:
                    continue
            since = self.progress.launching(r) if self.progress else 0.0
            try:
                launcher = factory(self.scenario.target, r, rd.path / "logs" / f"r{r}")
            except ModuleNotFoundError as e:
                raise LaunchError(
                    f"the {self.scenario.target.launcher.kind!r} launcher is not "
                    f"available in this build ({e.name})"
                ) from None
            with launcher as reps:
                note = self._telemetry.start(reps)
                rd.write_manifest(
                    telemetry_note=note, emulated=bool(getattr(reps, "emulated", False))
                )
                if self.progress:
                    self.progress.launched(r, since, list(reps.urls), note)
                self._idle_baseline(rd, r)
                try:
                    if levels is not None:
                        for lv in todo:
                            self._run_cell(rd, reps, r, lv)
                    else:
                        self._run_auto(rd, reps, r, auto)
                        if self.progress:  # the search ended before its cell budget
                            self.progress.set_total(
                                self.progress.total_cells - (ld.auto_max_cells - len(auto))
                            )
                finally:
                    self._telemetry.stop(f"r{r}")
            if self.progress:
                self.progress.group_done(r)

    def _idle_baseline(self, rd: RunDir, r: int) -> None:
        """GPU power with the replicas up and no load, before the group's first cell: the
        baseline that per-request energy is attributed above (a window of phase ``idle``)."""
        idle_s = self.scenario.validity.idle_baseline_s
        if self._telemetry.sampler is None or idle_s <= 0:
            return
        import time

        cell = f"r{r}-idle"
        a = time.time_ns()
        self._hook(cell, "idle", "begin", a)
        time.sleep(idle_s)
        b = time.time_ns()
        self._hook(cell, "idle", "end", b)
        rd.windows.append(
            CellWindow(
                run_id=rd.run_id, cell=cell, replicas=r, level=0.0,
                level_kind=self.mode, phase="idle", start_ns=a, end_ns=b,
                note="idle baseline: replicas up, no load",
            )
        )

    def _run_auto(self, rd: RunDir, reps, r: int, results: list[LevelResult]) -> None:
        search = self._knee()
        while (lv := search.next_level(results)) is not None:
            m = self._run_cell(rd, reps, r, lv)
            results.append(
                LevelResult(lv, m.output_tokens_per_s if m else 0.0, m.slo_ok if m else False)
            )
            auto = dict(rd.manifest.get("auto_results", {}))
            auto[str(r)] = [[x.level, x.throughput, x.slo_ok] for x in results]
            rd.write_manifest(auto_results=auto)

    def _run_cell(self, rd: RunDir, reps, r: int, lv: float) -> CellMetrics | None:
        self._sigterm.check()   # a SIGTERM whose exception was swallowed stops before the next cell
        from harness.loadgen.run import run_cell

        cell = cell_name(self.mode, r, lv)
        self._cell_rows, self._cell_windows = [], []
        if self.progress:
            self.progress.cell_started(r, lv, cell)
        rd.begin_cell(cell)
        self._store.marker(cell, "start")
        res = run_cell(
            self.scenario,
            list(reps.urls),
            r,
            lv,
            rd,
            processes=self.processes,
            window_hook=self._hook,
        )
        self._store.marker(cell, "end")
        rd.flush()
        m = self._cell_metrics(rd, cell, res)
        self.cells_done.append(cell)
        rd.write_manifest(cells_done=self.cells_done)
        if self.progress:
            line = _cell_line(m) if m else "no measured window"
            self.progress.cell_finished(r, lv, cell, line, m.slo_ok if m else None)
        return m

    def _hook(self, cell: str, phase: str, edge: str, ts_ns: int) -> None:
        self._telemetry.hook(cell, phase, edge, ts_ns)
        if self.progress and edge == "begin":
            self.progress.on_phase(cell, phase)

    def _on_record(self, rec) -> None:
        d = rec if isinstance(rec, dict) else rec.to_dict()
        self._cell_rows.append(d)
        self._store.record(rec)
        if self.progress:
            self.progress.on_record(d["end_ns"], d.get("output_tokens") or 0)

    def _on_window(self, w: CellWindow) -> None:
        self._telemetry.fill(w)
        self._cell_windows.append(w)
        self._store.window(w)

    def _cell_metrics(self, rd: RunDir, cell: str, res) -> CellMetrics | None:
        """The finished cell's metrics by the report's own rules (for the knee and the display)."""
        wins = [w for w in self._cell_windows if w.cell == cell and w.phase == "measure"]
        if not wins:
            return None
        req = pd.DataFrame(self._cell_rows, columns=REQUEST_SCHEMA.names)
        run = RunData(
            path=rd.path,
            manifest={},
            scenario=self.scenario,
            requests=req,
            gpu=GPU_SCHEMA.empty_table().to_pandas(),
            windows=pd.DataFrame(),
            histograms={cell: res.histograms.encode()} if res is not None else {},
        )
        w = wins[-1]
        return compute_cell(run, {k: getattr(w, k) for k in w.__slots__}, self.scenario.slo)


def _cell_line(m: CellMetrics) -> str:
    ttft = f"{m.ttft_p99_s * 1000:.0f} ms" if m.ttft_p99_s is not None else "n/a"
    err = f", errors {m.error_rate:.1%}" if m.error_rate else ""
    return f"{m.output_tokens_per_s:,.0f} tok/s, TTFT p99 {ttft}{err}"


class _SigtermSeen:
    """Whether SIGTERM came. The handler's exception can land where Python ignores exceptions (a
    weakref callback, a ``__del__``: "Exception ignored in ..."), so the sweep also checks this
    between cells and at its end."""

    hit = False

    def check(self) -> None:
        if self.hit:
            raise Terminated()


@contextmanager
def _sigterm_raises():
    """SIGTERM behaves like Ctrl-C while the sweep runs (main thread only); yields a _SigtermSeen."""
    seen = _SigtermSeen()

    def handler(signum, frame):
        seen.hit = True
        raise Terminated()

    try:
        old = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield seen
        return
    try:
        yield seen
    finally:
        signal.signal(signal.SIGTERM, old)
