"""Shared helpers for the emulator tests: a real emulator child process on free ports."""

from __future__ import annotations

import contextlib
import json
import tempfile
import urllib.request
from pathlib import Path

from harness.launch.emulator import EmulatorLauncher
from harness.scenario.models import EmulatorLauncher as EmulatorCfg, Target


@contextlib.contextmanager
def emulator(replicas: int = 2, profile: str = "cpu-demo", in_process: bool = False):
    target = Target(launcher=EmulatorCfg(profile=profile, in_process=in_process))
    with tempfile.TemporaryDirectory() as d:
        with EmulatorLauncher(target, replicas, Path(d)) as reps:
            yield reps


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def get_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read().decode()


def post(url: str, body: dict, headers: dict | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"content-type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
