"""A sweep stopped by a signal partway through, as an operator's Ctrl-C or a crash would, and then
resumed: ``slm-harness sweep`` in its own process, signalled once its output reaches a chosen line,
and ``sweep --resume`` on the run directory it left."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.support.processes import ROOT, harness, harness_env, wait_for
from tests.support.runs import only_run


@dataclass
class StoppedSweep:
    """How the signalled sweep ended and where its results went."""

    returncode: int
    results: Path

    @property
    def run(self) -> Path:
        """The one run directory it left."""
        return only_run(self.results)


def stop_sweep(scen: Path, results: Path, at: Callable[[str], bool], *, after_s: float = 0.0,
               until: Callable[[], bool] | None = None, until_s: float = 60,
               sig: signal.Signals = signal.SIGTERM, guard_s: float = 150) -> StoppedSweep:
    """Run ``slm-harness sweep SCEN --results RESULTS`` and send it ``sig`` ``after_s`` seconds
    after the first line of its output for which ``at`` is true (nothing, if it ends first);
    with ``until``, only once that is also true (polled for up to ``until_s`` seconds): a state
    the sweep has observably reached, where a fixed delay would be a guess a loaded machine breaks.

    SIGKILL goes to its whole process group (its launched replicas too, with no cleanup, as a
    crash or power cut); any other signal to the sweep alone, whose output is then read to the
    end so that its shutdown never waits on a full pipe. ``guard_s`` kills it if it hangs."""
    group = sig == signal.SIGKILL
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness", "sweep", str(scen), "--results", str(results)],
        cwd=ROOT, env=harness_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        start_new_session=group,
    )

    def send(s: signal.Signals) -> None:
        if group:
            os.killpg(proc.pid, s)
        else:
            proc.send_signal(s)

    guard = threading.Timer(guard_s, send, (signal.SIGKILL,))
    guard.start()
    try:
        for line in proc.stdout:
            if at(line):
                time.sleep(after_s)
                if until is not None:
                    wait_for(until, until_s, "the sweep to reach the state to signal it in", 0.1)
                send(sig)
                break
        if group:
            proc.wait(30)
        else:
            proc.communicate(timeout=60)
    finally:
        guard.cancel()
        if proc.poll() is None:        # the test failed before its signal: leave nothing behind
            send(signal.SIGKILL)
            proc.wait(30)
    return StoppedSweep(proc.returncode, results)


def resume_sweep(scen: Path, run: Path, timeout: float = 150) -> subprocess.CompletedProcess:
    """``slm-harness sweep SCEN --resume RUN`` to the end, its output captured."""
    return harness("sweep", str(scen), "--resume", str(run), timeout=timeout)
