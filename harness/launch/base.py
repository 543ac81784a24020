"""What every launcher gives the sweep: running replicas with URLs, and a clean stop.

A launcher is a context manager: ``with launch(target, n, log_dir) as replicas: ...`` brings ``n``
replicas up, waits until each answers its health path, and stops every one of them (by PID or
by compose) on exit, including on Ctrl-C. A replica that exits early or never becomes healthy
raises :class:`harness.errors.LaunchError` naming it and where its log is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


@dataclass
class Replica:
    index: int
    url: str                      # base URL, e.g. http://127.0.0.1:8081
    pid: int | None = None        # process id where the launcher knows it (per-process GPU memory)
    log_path: Path | None = None


@dataclass
class Replicas:
    items: list[Replica]
    kind: str                     # "emulator" | "endpoints" | "processes" | "compose"
    emulated: bool = False        # True: power/GPU state come from the emulator's model
    extra: dict = field(default_factory=dict)

    @property
    def urls(self) -> list[str]:
        return [r.url for r in self.items]

    def __len__(self) -> int:
        return len(self.items)


class Launcher(Protocol):
    def __enter__(self) -> Replicas: ...

    def __exit__(self, exc_type, exc, tb) -> None: ...


def launcher_for(target, replicas: int, log_dir: Path) -> Launcher:
    """The launcher the scenario's ``target.launcher.kind`` names."""
    kind = target.launcher.kind
    if kind == "emulator":
        from harness.launch.emulator import EmulatorLauncher
        return EmulatorLauncher(target, replicas, log_dir)
    if kind == "endpoints":
        from harness.launch.endpoints import EndpointsLauncher
        return EndpointsLauncher(target, replicas, log_dir)
    if kind == "processes":
        from harness.launch.processes import ProcessLauncher
        return ProcessLauncher(target, replicas, log_dir)
    if kind == "compose":
        from harness.launch.compose import ComposeLauncher
        return ComposeLauncher(target, replicas, log_dir)
    raise ValueError(f"unknown launcher kind {kind!r}")
