"""EmulatorLauncher: a real child process, health waits, stop by PID, clear launch errors."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request

import pytest

from harness.errors import LaunchError
from harness.launch.base import launcher_for
from harness.scenario.models import EmulatorLauncher as EmulatorCfg, Target
from tests.support.ports import free_port
from tests.support.processes import harness_env


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_child_process_started_healthy_and_stopped(tmp_path):
    target = Target(launcher=EmulatorCfg(profile="cpu-demo"))
    with launcher_for(target, 3, tmp_path) as reps:
        assert len(reps) == 3 and reps.emulated and reps.kind == "emulator"
        pids = {r.pid for r in reps.items}
        assert len(pids) == 1                     # one process serves every replica
        pid = pids.pop()
        assert pid != os.getpid() and _alive(pid)
        assert len(set(reps.urls)) == 3
        for u in reps.urls:
            assert urllib.request.urlopen(u + "/health", timeout=5).status == 200
    deadline = time.time() + 10
    while _alive(pid) and time.time() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)
    log = tmp_path / "emulator-r3.log"
    assert "emulating 3 replica(s) of profile cpu-demo" in log.read_text()


def test_fixed_base_port(tmp_path):
    base = free_port()
    target = Target(launcher=EmulatorCfg(profile="cpu-demo", base_port=base))
    with launcher_for(target, 1, tmp_path) as reps:
        assert reps.urls == [f"http://127.0.0.1:{base}"]


def test_bad_profile_is_a_launch_error_naming_the_log(tmp_path):
    target = Target(launcher=EmulatorCfg(profile="no-such-profile"))
    with pytest.raises(LaunchError, match="exited with code 2") as e:
        with launcher_for(target, 1, tmp_path):
            pass
    assert "emulator-r1.log" in str(e.value)
    assert "unknown emulator profile" in (tmp_path / "emulator-r1.log").read_text()


def test_in_process(tmp_path):
    target = Target(launcher=EmulatorCfg(profile="cpu-demo", in_process=True))
    with launcher_for(target, 2, tmp_path) as reps:
        assert all(r.pid == os.getpid() for r in reps.items)
        for u in reps.urls:
            assert urllib.request.urlopen(u + "/health", timeout=5).status == 200
    with pytest.raises(OSError):
        urllib.request.urlopen(reps.urls[0] + "/health", timeout=2)


def test_cli_port_in_use_fails_cleanly(tmp_path):
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    port = s.getsockname()[1]
    try:
        r = subprocess.run([sys.executable, "-m", "harness", "emulate", "--port", str(port)],
                           capture_output=True, text=True, timeout=60,
                           env=harness_env())
    finally:
        s.close()
    assert r.returncode != 0 and "cannot listen" in r.stderr
