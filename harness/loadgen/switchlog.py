"""Which greenlet held the event loop: a diagnosis for the stream reader's late wake-ups.

When the reader wakes late but its pass is short, something else ran in between. ``SwitchLog``
keeps the last greenlet switches (when, to which greenlet) through ``greenlet.settrace``, and says
which greenlet ran longest in a window. On only with ``SLM_READER_LAG_LOG``
(``benchmarks/generator_fidelity.py --diag``): a Python call per switch costs ~1 us.
"""

from __future__ import annotations

import collections
from time import perf_counter_ns

import greenlet


def _name(g, names: dict) -> str:
    """A greenlet's name for a person: what it runs (the hub, a Locust user's task loop, ...). A
    started raw greenlet has no ``run`` left: ``names`` names those."""
    if g is None:
        return "?"
    if g in names:
        return names[g]
    info = getattr(g, "_formatinfo", None)      # a gevent Greenlet: what it was spawned with
    if info is not None:
        text = info()
        if text:
            return text.split("(", 1)[0]
    fn = getattr(g, "_run", None) or getattr(g, "run", None)
    fn = getattr(fn, "func", fn)                 # functools.partial
    name = getattr(fn, "__qualname__", None)
    if name is None:
        name = type(g).__name__
    return name


class SwitchLog:
    """The last ``keep`` greenlet switches of this thread, and who held a window of time. A
    greenlet is named by the caller (``names``), else by the function it resumes in."""

    def __init__(self, keep: int = 4096):
        self.switches: collections.deque = collections.deque(maxlen=keep)   # (t_ns, name or code)
        self.names: dict = {}     # greenlet -> name, for raw greenlets
        self._prev = None

    def start(self) -> SwitchLog:
        self._prev = greenlet.settrace(self._trace)
        self.switches.append((perf_counter_ns(), _name(greenlet.getcurrent(), self.names)))
        return self

    def stop(self) -> None:
        greenlet.settrace(self._prev)
        self._prev = None

    def _trace(self, event, args) -> None:
        if event in ("switch", "throw"):
            self.switches.append((perf_counter_ns(), self._label(args[1])))
        if self._prev is not None:
            self._prev(event, args)

    def _label(self, g):
        """Cheap at switch time: a name given by the caller, else the code the greenlet resumes in
        (its innermost suspended frame), else, not started yet, what it was spawned with."""
        name = self.names.get(g)
        if name is not None:
            return name
        f = getattr(g, "gr_frame", None)
        if f is not None:
            return f.f_code
        return _name(g, self.names)

    def holder(self, start_ns: int, end_ns: int) -> tuple[int, str]:
        """(ns, name): the greenlet that ran longest without a switch inside [start_ns, end_ns]."""
        best, who = 0, "?"
        sw = list(self.switches)
        for i, (t, label) in enumerate(sw):
            t_next = sw[i + 1][0] if i + 1 < len(sw) else end_ns
            lo, hi = max(t, start_ns), min(t_next, end_ns)
            if hi - lo > best:
                best, who = hi - lo, label
        return best, (who if isinstance(who, str) else getattr(who, "co_qualname", who.co_name))
