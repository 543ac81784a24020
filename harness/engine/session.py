"""A run's session: the run directory (new, or reopened for ``--resume``), its manifest, the
store, GPU telemetry and SIGTERM, closed with a status whatever happens.

Every door opens one: ``run``, ``sweep`` and ``locust -f`` write the same files.
"""

from __future__ import annotations

import json
import logging
import signal
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from harness.engine.hooks import Hook, Hooks
from harness.engine.telemetry import Telemetry
from harness.errors import InputError
from harness.records.rundir import RunDir, UnreadableFile, read_table
from harness.records.schema import CellWindow
from harness.hostinfo import host_info
from harness.store.runstore import ObservedAppender, RunStore

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C (gevent hands KeyboardInterrupt subclasses to the main greenlet)."""


class Stopped(KeyboardInterrupt):
    """The web UI's stop button during ``run --web-ui``: the run ends as ``stopped``."""


class SigtermSeen:
    """Whether SIGTERM came. The handler's exception can land where Python ignores exceptions (a
    weakref callback, a ``__del__``: "Exception ignored in ..."), so the engine also checks this
    between cells and at its end."""

    hit = False

    def check(self) -> None:
        if self.hit:
            raise Terminated()


def _quiet(exc_type: type) -> None:
    """A signal handler that runs while gevent's hub is current raises in the hub, which prints a
    traceback before passing the exception on to the main greenlet; one that lands in a ``__del__``
    or weakref callback is printed as "Exception ignored". SIGTERM is not an error: neither
    prints (the run still stops, see SigtermSeen)."""
    import sys

    hook = sys.unraisablehook
    if not getattr(hook, "_quiet_for", None):
        def quiet(unraisable, _next=hook):
            if not isinstance(unraisable.exc_value, exc_type):
                _next(unraisable)
        quiet._quiet_for = exc_type
        sys.unraisablehook = quiet
    if "gevent" in sys.modules:
        import gevent

        hub = gevent.get_hub()
        if not issubclass(exc_type, hub.NOT_ERROR):
            hub.NOT_ERROR = (*hub.NOT_ERROR, exc_type)


def _other_greenlets_main():
    """The main greenlet when a signal handler runs in another greenlet (a helper, or the hub,
    which would print a traceback before passing the exception on); else None."""
    import sys

    if "gevent" not in sys.modules:
        return None
    import gevent
    from greenlet import getcurrent

    hub = gevent.get_hub()
    main = hub.parent
    cur = getcurrent()
    return main if cur is not main and main is not None else None


def _raise_in_main(exc_type: type, seen: SigtermSeen | None = None):
    """A signal handler raising ``exc_type`` in the main greenlet, wherever the signal lands.

    Python runs a handler in whichever greenlet is current. In a helper greenlet (the GPU
    sampler, a monkey-patched thread) the exception would end that helper alone (threading's
    excepthook prints and swallows it) and the run would go on."""
    def handler(signum, frame):
        if seen is not None:
            seen.hit = True
        main = _other_greenlets_main()
        if main is not None:          # stop the run itself, leave the helper alone
            import gevent

            gevent.get_hub().loop.run_callback(main.throw, exc_type())
            return
        raise exc_type()
    return handler


def ctrl_c_reaches_main() -> None:
    """Ctrl-C raises KeyboardInterrupt in the main greenlet wherever it lands (main thread only),
    for a door that lasts the process's lifetime (``locust -f``, whose main catches it)."""
    try:
        signal.signal(signal.SIGINT, _raise_in_main(KeyboardInterrupt))
    except ValueError:  # not the main thread
        pass


@contextmanager
def sigterm_raises():
    """SIGTERM behaves like Ctrl-C while the run goes on, and both reach the main greenlet (main
    thread only); yields a SigtermSeen."""
    seen = SigtermSeen()
    _quiet(Terminated)
    try:
        old = signal.signal(signal.SIGTERM, _raise_in_main(Terminated, seen))
        old_int = signal.signal(signal.SIGINT, _raise_in_main(KeyboardInterrupt))
    except ValueError:  # not the main thread
        yield seen
        return
    try:
        yield seen
    finally:
        signal.signal(signal.SIGTERM, old)
        signal.signal(signal.SIGINT, old_int)


@contextmanager
def signals_held():
    """Ctrl-C and SIGTERM wait for the block to end, then raise as usual (KeyboardInterrupt,
    :class:`Terminated`): the run directory is opened whole, never left half-made and "running"."""
    got: list[int] = []

    def hold(signum, frame):
        got.append(signum)

    try:
        old = {sig: signal.signal(sig, hold) for sig in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)
    if got:
        raise Terminated() if got[0] == signal.SIGTERM else KeyboardInterrupt()


def stop_message(e: KeyboardInterrupt) -> str:
    """How a stop by signal is written in the manifest and printed."""
    return "terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted (Ctrl-C)"


class Session(Hook):
    """Owns the run directory for one run; see the module docstring.

    Records and windows written to ``rundir`` are seen by the store, telemetry (a window's
    energy) and ``hooks.on_record``; call :meth:`close` exactly once.
    """

    def __init__(self, scenario, scenario_text: str, results_dir, *, command: str,
                 resume: Path | None = None, hooks: Hooks | None = None, **manifest):
        self.scenario = scenario
        self.hooks = hooks or Hooks()
        self.old: dict = {}
        if resume is not None:
            self.rundir, self.old = reopen_rundir(Path(resume))
            stored = self.old.get("scenario")
            if stored is not None and stored != scenario.model_dump(mode="json"):
                self.rundir.close(self.old.get("status", "interrupted"))
                raise InputError("the scenario differs from the one the run was started with "
                                 "(resume with the same file, or start a new sweep)",
                                 file=str(Path(resume) / "manifest.json"), field="scenario")
        else:
            self.rundir = RunDir.create(results_dir, scenario.name)
            self.rundir.write_scenario(scenario_text)
            self.rundir.write_manifest(command=command, scenario=scenario.model_dump(mode="json"),
                                       cells_done=[], cells_partial=[], auto_results={},
                                       hardware=host_info(), **manifest)
        self.cells_done: list[str] = list(self.old.get("cells_done", []))
        self.cells_partial: list[str] = []
        self.store = RunStore(scenario, self.rundir)
        self.telemetry = Telemetry(scenario, self.rundir, [self.store.sink()])
        self.hooks.add(self.telemetry)
        from harness.engine.server_metrics import ServerMetrics

        self.server_metrics = ServerMetrics(scenario, self.rundir)
        self.hooks.add(self.server_metrics)
        self.windows: list[CellWindow] = []
        self.rundir.requests = ObservedAppender(self.rundir.requests, self._on_record)
        self.rundir.windows = ObservedAppender(_FillFirst(self.rundir.windows, self.telemetry.fill),
                                               self._on_window)
        self.closed = False

    @property
    def path(self) -> Path:
        return Path(self.rundir.path)

    @property
    def run_id(self) -> str:
        return self.rundir.run_id

    def _on_record(self, rec) -> None:
        d = rec if isinstance(rec, dict) else rec.to_dict()
        self.store.record(rec)
        self.hooks.on_record(d)

    def _on_window(self, w: CellWindow) -> None:
        self.windows.append(w)
        self.store.window(w)

    def cell_requests(self, name: str) -> pd.DataFrame:
        """The cell's request rows (its latest attempt), read back from the run directory: holding
        them in memory until the cell ends would grow a long cell's run by ~1.4 KiB a request."""
        self.rundir.requests.flush()
        return read_table(self.path, "requests", cell=name)

    def cell_started(self, name: str) -> None:
        self.rundir.begin_cell(name)
        self.store.marker(name, "start")

    def cell_ended(self, name: str, partial: bool) -> None:
        self.store.marker(name, "end")
        self.rundir.flush()
        if partial:
            self.cells_partial.append(name)
            self.rundir.write_manifest(cells_partial=self.cells_partial)
        else:
            self.cells_done.append(name)
            self.rundir.write_manifest(cells_done=self.cells_done)

    def close(self, status: str, message: str = "") -> None:
        """Stop telemetry, flush the store, write the manifest's last state and close the files."""
        if self.closed:
            return
        self.closed = True
        try:
            self.telemetry.stop("last")
            self.server_metrics.end()
            stored = self.store.close()
            self.server_metrics.wait_closed()
            if stored is not None:
                self.rundir.write_manifest(store={"note": self.store.note, **stored})
            self.rundir.write_manifest(cells_done=self.cells_done, cells_partial=self.cells_partial,
                                       stop_reason=message or None)
        finally:
            self.rundir.close(status)


class _FillFirst:
    """A window appender that lets telemetry write the window's energy before the row is stored."""

    def __init__(self, inner, fill):
        self._inner, self._fill = inner, fill

    def append(self, w) -> None:
        try:
            self._fill(w)
        except Exception:  # noqa: BLE001 - energy then comes from the samples in analysis
            log.exception("window energy")
        self._inner.append(w)

    def extend(self, rows) -> None:
        for r in rows:
            self.append(r)

    def __getattr__(self, name):
        return getattr(self._inner, name)


def reopen_rundir(path: Path) -> tuple[RunDir, dict]:
    """A RunDir writing to ``path`` again with every row of its finished cells (also what a killed
    writer left in its journals); an unfinished or partial cell's rows are dropped
    (``RunDir.reopen``) and that cell runs again."""
    mf = path / "manifest.json"
    if not mf.is_file():
        raise InputError("not a run directory (no manifest.json)", file=str(path), field="--resume")
    try:
        old = json.loads(mf.read_text())
    except json.JSONDecodeError as e:
        raise InputError(f"invalid JSON: {e.msg}", file=str(mf), line=e.lineno) from None
    if old.get("command") != "sweep":
        raise InputError("only a sweep's run directory can be resumed", file=str(mf),
                         field="command")
    try:
        rd = RunDir.reopen(path, finished=old.get("cells_done", []))
    except UnreadableFile as e:
        raise InputError("cannot resume: the file is unreadable (a writer of an older version "
                         "was killed before it could close it)", file=str(e.path)) from None
    rd.manifest["cells_partial"] = []
    return rd, old
