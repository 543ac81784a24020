"""Drives Locust through a plan: users per segment, phase windows, drain, merged results."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import gevent

from harness.loadgen.collector import Collector
from harness.loadgen.context import LoadContext, PlanMessage
from harness.loadgen.result import CellResult
from harness.loadgen.slo import evaluate
from harness.records.schema import CellWindow
from harness.workload.plan import Plan, build_plan, users_at

log = logging.getLogger(__name__)

_START_LEAD_S = 0.3     # users are spawned this long before the plan's first instant


class _NoSpawnRateWarning(logging.Filter):
    """All users of a level start together on purpose; Locust's advice against it is noise here."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "spawn rate is very high" not in record.getMessage()


logging.getLogger("locust.runners").addFilter(_NoSpawnRateWarning())


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _sleep_until(pc_target_ns: int) -> None:
    d = (pc_target_ns - time.perf_counter_ns()) / 1e9
    if d > 0:
        gevent.sleep(d)


class _Workers:
    """Worker processes of one cell, stopped by PID whatever happens."""

    def __init__(self, n: int, port: int, log_dir: Path):
        self.procs: list[subprocess.Popen] = []
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        log_dir.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            fh = open(log_dir / f"loadgen-worker-{i}.log", "ab")
            self.procs.append(subprocess.Popen(
                [sys.executable, "-m", "harness.loadgen.worker", "--master-port", str(port)],
                stdout=fh, stderr=subprocess.STDOUT, env=env))
            fh.close()

    def stop(self, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.terminate()
                try:
                    p.wait(3)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


def run_plan(scenario, urls: list[str], replicas: int, levels: list[float], rundir, *, run_id: str,
             processes: int = 0, window_hook=None, web_ui=None, repeat: int = 0,
             llm_tab=None) -> list[CellResult]:
    """Drive ``levels`` at ``replicas`` as one timeline; windows and records go to ``rundir``.

    ``llm_tab`` (a :class:`harness.loadgen.webui.LlmTab`) keeps the web UI's history across the
    cells of a run; a stop (KeyboardInterrupt) closes the open window as ``partial`` and re-raises.
    """
    from locust.env import Environment
    from locust.event import Events

    from harness.protocols.probe import resolve

    scenario = resolve(scenario, list(urls))   # protocol auto: asked once, before any load

    from harness.loadgen.users import ClosedLoopUser, OpenLoopUser

    closed = scenario.load.mode == "concurrency"
    user_cls = ClosedLoopUser if closed else OpenLoopUser
    events = Events()
    env = Environment(user_classes=[user_cls], events=events)
    plan = build_plan(scenario.load, list(levels), replicas, repeat=repeat)
    saved_argv = sys.argv
    workers = None
    master = None
    try:
        if processes > 0:
            from harness.loadgen.masterside import MasterSide

            port = _free_port()
            runner = env.create_master_runner("127.0.0.1", port)
            collector = Collector(record_sink=rundir.requests.append, events=None,
                                  protocol=scenario.target.protocol)
            master = MasterSide(env, collector)
            workers = _Workers(processes, port, rundir.path / "logs")
            deadline = time.monotonic() + 60
            while runner.worker_count < processes:
                if time.monotonic() > deadline or any(p.poll() is not None for p in workers.procs):
                    raise RuntimeError(f"only {runner.worker_count} of {processes} load generator "
                                       f"workers connected (logs in {rundir.path / 'logs'})")
                gevent.sleep(0.05)
            t0_ns = time.time_ns() + int(1.0 * 1e9)
            msg = PlanMessage(scenario.model_dump(mode="json"), list(urls), replicas, list(levels),
                              run_id, t0_ns, open_loop_streams=processes, repeat=repeat)
            runner.send_message("slm_plan", msg.to_wire())
            gevent.sleep(0.2)
        else:
            runner = env.create_local_runner()
            t0_ns = time.time_ns() + int(_START_LEAD_S * 1e9)
            msg = PlanMessage(scenario, list(urls), replicas, list(levels), run_id, t0_ns, 1,
                              repeat=repeat)
            ctx = LoadContext.build(msg, events=events, record_sink=rundir.requests.append)
            env.slm = ctx
            collector = ctx.collector
        if web_ui:
            from harness.loadgen.webui import install_llm_tab

            # Locust's web UI re-parses sys.argv as Locust options on every page; ours are not.
            saved_argv, sys.argv = sys.argv, sys.argv[:1]
            env.create_web_ui(web_ui[0], web_ui[1])
            install_llm_tab(env, collector, scenario, tab=llm_tab)
        t0_pc = time.perf_counter_ns() + (t0_ns - time.time_ns())
        if processes > 0:
            finished = lambda: len(master.drained) >= processes  # noqa: E731
        else:
            finished = lambda: env.slm.ended() and env.slm.collector.inflight == 0  # noqa: E731
        bad = lambda: getattr(getattr(env, "slm", None), "input_error", None)  # noqa: E731
        done = finished if scenario.load.max_requests else (lambda: False)
        ui_stop = {"driving": True, "hit": False}
        if web_ui:   # the web UI's stop button: the run ends here, this cell partial

            def _on_stop(**kw):
                ui_stop["hit"] = ui_stop["driving"]

            env.events.test_stop.add_listener(_on_stop)

        def over() -> bool:
            if ui_stop["hit"]:
                from harness.engine.session import Stopped

                raise Stopped()
            return bad() is not None or done()

        windows = _drive(env, runner, plan, closed, processes, t0_ns, t0_pc, window_hook, rundir,
                         over)
        ui_stop["driving"] = False
        if bad() is not None:
            raise bad()
        _drain(env, runner, collector, master, processes, scenario.target.request_timeout_s)
    finally:
        try:
            runner.quit()
        except Exception:  # noqa: BLE001 - shutting down; the workers are stopped below anyway
            log.exception("stopping the Locust runner")
        if workers is not None:
            workers.stop()
        ctx = getattr(env, "slm", None)
        if ctx is not None:
            ctx.client.close()
        if env.web_ui is not None:
            if getattr(env.web_ui, "server", None) is not None:
                env.web_ui.stop()
            sys.argv = saved_argv
    rundir.requests.flush()
    return results_for(plan, collector, windows, scenario, rundir, run_id, max(processes, 1))


def _wait_until(pc_target_ns: int, finished) -> bool:
    """Sleep until the target instant; True if ``finished()`` turned true first (checked every 50 ms)."""
    while True:
        d = (pc_target_ns - time.perf_counter_ns()) / 1e9
        if d <= 0:
            return False
        if finished():
            return True
        gevent.sleep(min(d, 0.05))


def _drive(env, runner, plan: Plan, closed: bool, processes: int, t0_ns: int, t0_pc: int,
           window_hook, rundir, finished=lambda: False) -> list[CellWindow]:
    """Set the user count per segment on time; write each phase window when it closes.

    ``finished()`` true (every request of a ``max_requests`` cell sent and answered) ends the
    plan early; the open window then closes at that moment.
    """
    current = None
    early_ns = None
    if not closed:
        runner.start(max(processes, 1), spawn_rate=1000)
    windows = []
    state = {"open": None}
    try:
        return _drive_segments(runner, plan, closed, t0_ns, t0_pc, window_hook, rundir, finished,
                               current, early_ns, windows, state)
    except KeyboardInterrupt:
        if state["open"] is not None:      # the stop cut this window: keep it, marked partial
            windows.append(_close(state["open"], t0_ns, plan, rundir, window_hook, time.time_ns(),
                                  note="partial: the run was stopped"))
        raise


def _drive_segments(runner, plan, closed, t0_ns, t0_pc, window_hook, rundir, finished, current,
                    early_ns, windows, state) -> list[CellWindow]:
    wins = plan.windows()
    pending = list(wins)
    open_win = None
    for seg in plan.segments:
        if _wait_until(t0_pc + int(seg.start_s * 1e9), finished):
            early_ns = time.time_ns()
            break
        if closed:
            target, rate = users_at(seg)
            if target != current:
                runner.start(target, spawn_rate=rate)
                current = target
        # window edges
        w = pending[0] if pending else None
        if w and w[0] == seg.cell and w[1] == seg.phase and abs(w[2] - seg.start_s) < 1e-9:
            if open_win is not None:
                state["open"] = None
                windows.append(_close(open_win, t0_ns, plan, rundir, window_hook))
            open_win = state["open"] = pending.pop(0)
            if window_hook:
                window_hook(open_win[0], open_win[1], "begin", t0_ns + int(open_win[2] * 1e9))
    if early_ns is None and _wait_until(t0_pc + int(plan.total_s * 1e9), finished):
        early_ns = time.time_ns()
    if open_win is not None:
        state["open"] = None
        windows.append(_close(open_win, t0_ns, plan, rundir, window_hook, early_ns))
    return windows


def _close(w, t0_ns: int, plan: Plan, rundir, window_hook, end_ns: int | None = None,
           note: str = "ended early: max_requests reached") -> CellWindow:
    cell, phase, start_s, end_s, level = w
    start_ns = t0_ns + int(start_s * 1e9)
    cw = CellWindow(run_id=rundir.run_id, cell=cell, replicas=plan.replicas, level=level,
                    level_kind=plan.mode, phase=phase, start_ns=start_ns,
                    end_ns=max(start_ns, end_ns) if end_ns is not None else t0_ns + int(end_s * 1e9),
                    note=note if end_ns is not None else "")
    if window_hook:
        window_hook(cell, phase, "end", cw.end_ns)
    rundir.windows.append(cw)
    return cw


def _drain(env, runner, collector, master, processes: int, timeout_s: float) -> None:
    """Wait for requests still in flight after the plan's end (bounded by the request timeout)."""
    deadline = time.monotonic() + timeout_s + 2.0
    if processes > 0:
        while len(master.drained) < processes and time.monotonic() < deadline:
            gevent.sleep(0.05)
        if not master.flush(processes):
            log.warning("only %d of %d workers sent their final results", len(master.finals), processes)
        runner.stop()
    else:
        while collector.inflight > 0 and time.monotonic() < deadline:
            gevent.sleep(0.02)
        runner.stop()


def results_for(plan: Plan, collector: Collector, windows: list[CellWindow], scenario, rundir, run_id: str,
             workers: int) -> list[CellResult]:
    out = []
    for cell, level in plan.cells():
        measure = collector.cell_stats(cell, ("measure",))
        phases = {p: collector.cell_stats(cell, (p,)) for p in ("ramp", "warmup", "measure", "cooldown")}
        phases = {p: s for p, s in phases.items() if s.requests}
        mw = [w for w in windows if w.cell == cell and w.phase == "measure"]
        measure_s = (mw[0].end_ns - mw[0].start_ns) / 1e9 if mw else 0.0
        early = bool(mw) and mw[0].note.startswith("ended early")
        res = CellResult(run_id, cell, plan.replicas, level, plan.mode, measure, phases,
                         [w for w in windows if w.cell == cell], measure_s,
                         evaluate(scenario.slo, measure, measure_s, early), workers, early)
        rundir.write_histograms(cell, {**measure.hist.encode(), "generator": measure.generator(),
                                       "replicas": measure.replica_summary()})
        out.append(res)
    return out
