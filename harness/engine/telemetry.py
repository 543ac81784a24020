"""GPU telemetry for a run, used defensively: a missing or failing sampler never stops the run.

One sampler per replica group; the energy of each phase window is measured at its edges and
stored on the window's row (``CellWindow.energy_j``)."""

from __future__ import annotations

import logging
from typing import Any

from harness.engine.hooks import Hook
from harness.records.schema import CellWindow

log = logging.getLogger(__name__)


class Telemetry(Hook):
    def __init__(self, scenario, rundir, extra_sinks: list | None = None):
        self.scenario = scenario
        self.rundir = rundir
        self.extra_sinks = [x for x in (extra_sinks or []) if x is not None]
        self.sampler = None
        self.note = "telemetry: off"
        self.energies: dict[tuple[str, str], Any] = {}
        self.summaries: dict[str, Any] = {}
        self.last_power_w: float | None = None

    def start(self, replicas) -> str:
        """Start sampling for a group; ``replicas`` has ``urls`` and ``emulated``."""
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
            sel = open_source(tel.source, gpus=tel.gpus,
                              emulator_urls=list(replicas.urls) if emulated else None, warn=False)
            self.note = sel.note
            if sel.source is None:
                return self.note
            sinks = [RunDirSink(self.rundir), _PowerSink(self)] + self.extra_sinks
            self.sampler = Sampler(sel.source, sinks, rate_hz=tel.rate_hz,
                                   run_id=self.rundir.run_id)
            self.sampler.start()
        except Exception as e:  # noqa: BLE001 - the load test goes on without GPU data
            log.warning("telemetry could not start: %s", e)
            self.sampler = None
            self.note = f"telemetry: could not start ({type(e).__name__}: {e})"
        return self.note

    def on_phase(self, cell: str, phase: str, edge: str, ts_ns: int) -> None:
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

    def idle_baseline(self, cell: str, replicas: int, mode: str, seconds: float) -> None:
        """GPU power with the replicas up and no load, for ``seconds`` before a group's first
        cell: the baseline per-request energy is attributed above. Stored as a window of phase
        ``idle`` under that cell's name (so a resume that reruns the cell measures it again)."""
        if self.sampler is None or seconds <= 0:
            return
        import time

        a = time.time_ns()
        self.on_phase(cell, "idle", "begin", a)
        time.sleep(seconds)
        b = time.time_ns()
        self.on_phase(cell, "idle", "end", b)
        self.rundir.windows.append(CellWindow(
            run_id=self.rundir.run_id, cell=cell, replicas=replicas, level=0.0, level_kind=mode,
            phase="idle", start_ns=a, end_ns=b, note="idle baseline: replicas up, no load"))

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


class _PowerSink:
    """Keeps the latest total power (summed over GPUs) for the web UI's live chart."""

    def __init__(self, tel: Telemetry):
        self.tel = tel

    def samples(self, batch) -> None:
        if not batch:
            return
        last = max(s.ts_ns for s in batch)
        watts = [s.power_w for s in batch if s.ts_ns == last and s.power_w is not None]
        if watts:
            self.tel.last_power_w = float(sum(watts))

    def processes(self, batch) -> None:
        pass

    def gap(self, gap) -> None:
        pass

    def close(self, summary) -> None:
        pass
