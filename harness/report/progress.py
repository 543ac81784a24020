"""The sweep's progress: a live grid (rich) on a terminal, one plain line per event elsewhere.

Shows the replicas x levels grid with each cell's state and tokens/s, the current cell and phase,
an ETA from the cells' planned lengths corrected by how long finished cells actually took, and
live output tokens/s (tokens of requests that finished in the last few seconds).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

LIVE_WINDOW_S = 3.0


@dataclass
class _CellState:
    state: str = "pending"  # pending | running | done | skipped | failed
    text: str = ""


@dataclass
class SweepProgress:
    console: Console
    replicas: list[int]
    levels: list[float] | None  # None: levels: auto (columns appear as they are chosen)
    mode: str  # concurrency | rate
    total_cells: int  # an upper bound for auto
    cell_s: float  # planned seconds per cell
    plain: bool | None = None  # None: plain unless the console is a terminal
    cells: dict[tuple[int, float], _CellState] = field(default_factory=dict)
    current: str = ""
    phase: str = ""
    group_note: str = ""
    done: int = 0
    _live: Live | None = None
    _recent: deque = field(default_factory=deque)
    _t0: float = 0.0
    _cell_started: float = 0.0
    _cell_times: list[float] = field(default_factory=list)
    _launch_times: list[float] = field(default_factory=list)
    _groups_left: int = 0

    def __post_init__(self):
        if self.plain is None:
            self.plain = not self.console.is_terminal
        self._groups_left = len(self.replicas)

    # -- life cycle ----------------------------------------------------------------------------
    def __enter__(self) -> "SweepProgress":
        self._t0 = time.monotonic()
        if not self.plain:
            self._live = Live(
                get_renderable=self._render,
                console=self.console,
                refresh_per_second=2,
                transient=False,
            )
            self._live.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def _say(self, text: str) -> None:
        if self.plain:
            self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    # -- events --------------------------------------------------------------------------------
    def skipped(self, replicas: int, level: float, cell: str) -> None:
        self.cells[(replicas, level)] = _CellState("skipped", "done before")
        self.done += 1
        self._say(f"[{cell}] finished in the run being resumed: skipped")

    def launching(self, replicas: int) -> float:
        self.group_note = f"launching {replicas} replica{'s' if replicas != 1 else ''}"
        self._say(f"[r{replicas}] {self.group_note} ...")
        return time.monotonic()

    def launched(self, replicas: int, since: float, urls: list[str], telemetry_note: str) -> None:
        self._launch_times.append(time.monotonic() - since)
        self.group_note = f"{replicas} replica{'s' if replicas != 1 else ''} up; {telemetry_note}"
        self._say(
            f"[r{replicas}] up in {self._launch_times[-1]:.1f} s: {', '.join(urls)}; {telemetry_note}"
        )

    def group_done(self, replicas: int) -> None:
        self._groups_left -= 1
        self.group_note = f"{replicas} replica{'s' if replicas != 1 else ''} stopped"
        self._say(f"[r{replicas}] replicas stopped")

    def cell_started(self, replicas: int, level: float, cell: str) -> None:
        self.cells[(replicas, level)] = _CellState("running", "")
        self.current, self.phase = cell, "starting"
        self._cell_started = time.monotonic()
        self._recent.clear()
        self._say(f"[{cell}] cell {self.done + 1}/{self.total_cells} started; {self.eta_text()}")

    def on_phase(self, cell: str, phase: str) -> None:
        self.phase = phase

    def on_record(self, end_ns: int, tokens: int) -> None:
        self._recent.append((time.monotonic(), tokens))

    def cell_finished(
        self, replicas: int, level: float, cell: str, line: str, ok: bool | None
    ) -> None:
        self._cell_times.append(time.monotonic() - self._cell_started)
        self.cells[(replicas, level)] = _CellState("done", line)
        self.done += 1
        self.current, self.phase = "", ""
        verdict = "" if ok is None else ("; SLO met" if ok else "; SLO violated")
        self._say(f"[{cell}] done: {line}{verdict}")

    def cell_failed(self, replicas: int, level: float, cell: str, why: str) -> None:
        self.cells[(replicas, level)] = _CellState("failed", why)
        self._say(f"[{cell}] not finished: {why}")

    def set_total(self, total: int) -> None:
        self.total_cells = total

    # -- figures -------------------------------------------------------------------------------
    def live_tokens_per_s(self) -> float:
        now = time.monotonic()
        while self._recent and self._recent[0][0] < now - LIVE_WINDOW_S:
            self._recent.popleft()
        span = min(LIVE_WINDOW_S, max(now - self._cell_started, 0.5))
        return sum(t for _, t in self._recent) / span

    def eta_s(self) -> float:
        per_cell = (
            (sum(self._cell_times) / len(self._cell_times)) if self._cell_times else self.cell_s
        )
        launch = (sum(self._launch_times) / len(self._launch_times)) if self._launch_times else 3.0
        left = max(self.total_cells - self.done, 0)
        running = time.monotonic() - self._cell_started if self.current else 0.0
        return max(left * per_cell - running, 0.0) + max(self._groups_left - 1, 0) * launch

    def eta_text(self) -> str:
        e = self.eta_s()
        return f"ETA {int(e // 60)}:{int(e % 60):02d}"

    # -- the live view -------------------------------------------------------------------------
    def _render(self):
        levels = self.levels if self.levels is not None else sorted({lv for _, lv in self.cells})
        t = Table(
            title="sweep: replicas x "
            + ("concurrency" if self.mode == "concurrency" else "rate (req/s)"),
            expand=False,
        )
        t.add_column("replicas", justify="right")
        for lv in levels:
            t.add_column(f"{lv:g}", justify="center")
        marks = {
            "pending": ("·", "dim"),
            "running": ("▶ running", "bold yellow"),
            "done": ("", "green"),
            "skipped": ("✓ earlier", "cyan"),
            "failed": ("✗", "red"),
        }
        for r in self.replicas:
            row = []
            for lv in levels:
                st = self.cells.get((r, lv), _CellState())
                mark, style = marks[st.state]
                row.append(
                    Text(
                        st.text
                        if st.state == "done"
                        else (mark + (f" {st.text}" if st.state == "failed" else "")),
                        style=style,
                    )
                )
            t.add_row(str(r), *row)
        elapsed = time.monotonic() - self._t0
        status = Text.assemble(
            ("cell ", "dim"),
            (self.current or "-", "bold"),
            (f" [{self.phase}]" if self.phase else "", "yellow"),
            ("   live ", "dim"),
            (f"{self.live_tokens_per_s():,.0f} tok/s", "bold green"),
            ("   done ", "dim"),
            (f"{self.done}/{self.total_cells}", "bold"),
            ("   elapsed ", "dim"),
            (f"{int(elapsed // 60)}:{int(elapsed % 60):02d}", ""),
            ("   ", ""),
            (self.eta_text(), "bold"),
        )
        return Group(t, status, Text(self.group_note, style="dim"))
