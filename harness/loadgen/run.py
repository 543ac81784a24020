"""``run_cell``: one (replicas, level) cell through ramp, warm-up, measure and cool-down.

In-process by default (a Locust ``Environment`` with a ``LocalRunner``; the calling process must
tolerate gevent's monkey patching, which importing Locust applies), or with ``processes=N``
Locust worker processes under an in-process master (see :mod:`harness.loadgen.distributed`).
Records and windows stream into the :class:`RunDir`; the measured window's merged histograms are
written to ``histograms/CELL.json`` and returned in a :class:`CellResult`.
"""

from __future__ import annotations

from typing import Callable

from harness.loadgen.result import CellResult
from harness.records.rundir import RunDir
from harness.scenario.models import Scenario

#: ``window_hook(cell, phase, edge, ts_ns)`` with ``edge`` "begin" or "end": where telemetry
#: opens and closes its energy windows (``begin_window``/``end_window``).
WindowHook = Callable[[str, str, str, int], None]


def run_cell(scenario: Scenario, urls: list[str], replicas: int, level: float, rundir: RunDir, *,
             run_id: str | None = None, processes: int = 0, window_hook: WindowHook | None = None,
             web_ui: "tuple[str, int] | None" = None) -> CellResult:
    """Run one cell against ``urls`` and return its merged result; never raises for server faults.

    ``processes`` > 0 runs that many Locust worker processes on this machine under an in-process
    master (histograms merged through Locust's messages); 0 generates load in this process.
    ``web_ui`` = (host, port) serves Locust's web UI with the LLM tab while the cell runs.
    """
    from harness.loadgen.driver import run_plan

    results = run_plan(scenario, urls, replicas, [level], rundir, run_id=run_id or rundir.run_id,
                       processes=processes, window_hook=window_hook, web_ui=web_ui)
    return results[0]


def run_levels(scenario: Scenario, urls: list[str], replicas: int, rundir: RunDir, *,
               levels: list[float] | None = None, processes: int = 0,
               window_hook: WindowHook | None = None, on_cell: Callable[[CellResult], None] | None = None,
               web_ui=None) -> list[CellResult]:
    """Every level of the scenario back to back at one replica count (``slm-harness run``)."""
    lv = levels if levels is not None else list(scenario.load.levels)
    out = []
    for level in lv:
        res = run_cell(scenario, urls, replicas, level, rundir, processes=processes,
                       window_hook=window_hook, web_ui=web_ui)
        out.append(res)
        if on_cell:
            on_cell(res)
    return out
