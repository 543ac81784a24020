"""Observers of a run. Progress lines, the web UI's LLM tab and the store implement what they
need; the engine calls every hook through :class:`Hooks` and a failing observer never stops
the run."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


class Hook:
    """Every method is optional; the defaults do nothing."""

    def on_group_launching(self, replicas: int) -> None:
        """Replicas of a group are being brought up."""

    def on_group_start(self, replicas: int, urls: list[str], telemetry_note: str) -> None:
        """Replicas of a group answer at ``urls``; GPU telemetry runs as the note says."""

    def on_cell_skipped(self, cell) -> None:
        """``cell`` (a :class:`~harness.engine.plan.Cell`) finished in the run being resumed."""

    def on_cell_start(self, cell) -> None:
        """``cell`` is about to be driven."""

    def on_phase(self, cell: str, phase: str, edge: str, ts_ns: int) -> None:
        """A phase window (ramp, warmup, measure, cooldown) of ``cell`` opens (``edge`` "begin")
        or closes ("end") at wall-clock ``ts_ns``."""

    def on_record(self, rec: dict) -> None:
        """One finished request's record, as written to ``requests.parquet``."""

    def on_cell_done(self, cell, metrics, partial: bool) -> None:
        """``cell`` ended; ``metrics`` is its :class:`CellMetrics` (None without a measured
        window); ``partial`` when the run was stopped before the cell's end."""

    def on_group_done(self, replicas: int) -> None:
        """The group's replicas are down."""

    def on_note(self, replicas: int, text: str) -> None:
        """A sentence worth showing as it happens (e.g. where ``levels: auto`` starts and why
        it stopped)."""


class Hooks:
    """Fan-out to a list of :class:`Hook` s."""

    def __init__(self, hooks: list[Hook] | None = None):
        self.hooks = [h for h in (hooks or []) if h is not None]

    def add(self, hook: Hook) -> None:
        self.hooks.append(hook)

    def __getattr__(self, name: str) -> Any:
        if not name.startswith("on_"):
            raise AttributeError(name)

        def call(*args, **kw):
            for h in self.hooks:
                try:
                    getattr(h, name)(*args, **kw)
                except Exception:  # noqa: BLE001 - an observer's bug never stops the run
                    log.exception("hook %s.%s failed", type(h).__name__, name)

        return call


class ProgressHook(Hook):
    """Drives :class:`harness.report.progress.SweepProgress` (the console's progress lines)."""

    def __init__(self, progress):
        self.p = progress
        self._since = 0.0

    def on_group_launching(self, replicas):
        self._since = self.p.launching(replicas)

    def on_group_start(self, replicas, urls, telemetry_note):
        self.p.launched(replicas, self._since, list(urls), telemetry_note)

    def on_cell_skipped(self, cell):
        self.p.skipped(cell.replicas, cell.level, cell.name)

    def on_cell_start(self, cell):
        self.p.cell_started(cell.replicas, cell.level, cell.name)

    def on_phase(self, cell, phase, edge, ts_ns):
        if edge == "begin":
            self.p.on_phase(cell, phase)

    def on_record(self, rec):
        self.p.on_record(rec["end_ns"], rec.get("output_tokens") or 0)

    def on_cell_done(self, cell, metrics, partial):
        if partial:
            self.p.cell_failed(cell.replicas, cell.level, cell.name, "partial: the run was stopped")
            return
        line = cell_line(metrics) if metrics else "no measured window"
        self.p.cell_finished(cell.replicas, cell.level, cell.name, line,
                             metrics.slo_ok if metrics else None)

    def on_group_done(self, replicas):
        self.p.group_done(replicas)

    def on_note(self, replicas, text):
        self.p.group_note = text          # the live view's status line; plain consoles print it
        self.p._say(f"[r{replicas}] {text}")


def cell_line(m) -> str:
    ttft = f"{m.ttft_p99_s * 1000:.0f} ms" if m.ttft_p99_s is not None else "n/a"
    err = f", errors {m.error_rate:.1%}" if m.error_rate else ""
    return f"{m.output_tokens_per_s:,.0f} tok/s, TTFT p99 {ttft}{err}"
