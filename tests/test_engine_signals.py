"""SIGTERM or Ctrl-C during a run stops the run, wherever the signal lands (gevent runs helpers
such as the GPU sampler as greenlets of the main thread, and a handler runs in whichever one is
current)."""

from __future__ import annotations

import subprocess
import sys

import pytest

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


CTRL_C = """
import locust  # gevent's monkey patching, as in every door
import os, signal, threading
import gevent
from harness.engine.session import ctrl_c_reaches_main, sigterm_raises

out = {}

def sampler():           # a monkey-patched thread, as the GPU sampler is: a greenlet of the main thread
    try:
        os.kill(os.getpid(), signal.SIGINT)     # delivered here, in the sampler's greenlet
        for _ in range(1000):
            pass
        out["sampler"] = "went on"
    except KeyboardInterrupt:
        out["sampler"] = "killed"

def wait():
    t = threading.Thread(target=sampler, name="gpu-sampler", daemon=True)
    t.start()
    try:
        gevent.sleep(5)
        print("main: not stopped", out)
    except KeyboardInterrupt:
        t.join()
        print("main: stopped", out)

if DOOR == "locust":
    ctrl_c_reaches_main()
    wait()
else:
    with sigterm_raises():
        wait()
"""


@pytest.mark.parametrize("door", ["locust", "engine"])
def test_ctrl_c_landing_in_the_gpu_samplers_thread_stops_the_main_greenlet(door):
    """Without the handler, the KeyboardInterrupt ends the sampler's thread alone ("Exception in
    thread gpu-sampler") and the run goes on: Ctrl-C to ``locust --headless`` was lost so."""
    p = subprocess.run([sys.executable, "-c", f"DOOR = {door!r}\n" + CTRL_C], cwd=ROOT,
                       capture_output=True, text=True, timeout=60, env=harness_env())
    assert p.stdout.strip() == "main: stopped {'sampler': 'went on'}", p.stdout + p.stderr
    assert "Exception in thread" not in p.stderr, p.stderr
