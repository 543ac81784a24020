"""SIGTERM during a run stops the run, wherever the signal lands (gevent runs helpers such as the
GPU sampler as greenlets of the main thread, and a handler runs in whichever one is current)."""

from __future__ import annotations

import subprocess
import sys

from tests.support.processes import ROOT, harness_env

SCRIPT = """
import locust  # gevent's monkey patching, as in every door
import os, signal
import gevent
from harness.engine.session import Terminated, sigterm_raises

out = {}

def helper():
    try:
        os.kill(os.getpid(), signal.SIGTERM)    # delivered here, in the helper greenlet
        for _ in range(1000):
            pass
        out["helper"] = "went on"
    except Terminated:
        out["helper"] = "killed"

with sigterm_raises() as seen:
    try:
        gevent.spawn(helper)
        gevent.sleep(5)
        print("main: not stopped", out)
    except Terminated:
        print("main: stopped", out)
"""


def test_a_sigterm_landing_in_a_helper_greenlet_stops_the_main_one_and_spares_the_helper():
    p = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True,
                       timeout=60, env=harness_env())
    assert p.stdout.strip() == "main: stopped {'helper': 'went on'}", p.stdout + p.stderr
    assert "Traceback" not in p.stderr
