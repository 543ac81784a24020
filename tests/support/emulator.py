"""The emulator in tests: replicas through the harness's own launcher, ``slm-harness emulate`` as
its own process (tests/support/processes.py starts it), and small HTTP helpers to talk to it."""

from __future__ import annotations

import contextlib
import json
import tempfile
import urllib.request
from pathlib import Path

from harness.launch.emulator import EmulatorLauncher
from harness.scenario.models import EmulatorLauncher as EmulatorCfg, Target
from tests.support.processes import emulator_process


@contextlib.contextmanager
def emulator(replicas: int = 2, profile: str = "cpu-demo", in_process: bool = False):
    target = Target(launcher=EmulatorCfg(profile=profile, in_process=in_process))
    with tempfile.TemporaryDirectory() as d:
        with EmulatorLauncher(target, replicas, Path(d)) as reps:
            yield reps


@contextlib.contextmanager
def emulate_process(profile: str, *args: str):
    """``slm-harness emulate`` as its own process, with CLI options the launcher does not pass
    (e.g. ``--keep-alive-s``); yields the first replica's URL."""
    with emulator_process(*args, profile=profile) as urls:
        yield urls[0]


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


def write_profile(dir_: Path, name: str, *, timing: str, limits: str = "", max_total_tokens: int = 1024) -> str:
    """A small custom profile YAML for a test (path returned)."""
    text = f"""name: {name}
model: {{id: test/model, params: 134515008, weight_bytes: 269030016, layers: 30, kv_heads: 3, head_dim: 64}}
gpu: {{name: test gpu, memory_bytes: 25769803776, mem_bandwidth_gb_s: 900, peak_tflops: 120,
      idle_w: 50, active_w: 150, power_limit_w: 300, sm_clock_mhz: 1500}}
limits:
  max_input_tokens: 64
  max_total_tokens: {max_total_tokens}
{limits}
timing:
{timing}
"""
    p = dir_ / f"{name}.yaml"
    p.write_text(text)
    return str(p)


async def stream_tgi(session, url: str, prompt: str, max_new: int, headers: dict | None = None,
                     events: list | None = None) -> dict:
    """Read one /generate_stream with a plain aiohttp client; token timing as received.

    ``events``, when given, is filled as tokens arrive, so a test can act mid-stream on what the
    client has seen rather than on a sleep that a loaded machine stretches."""
    import time

    import orjson
    events = [] if events is None else events
    stamps = []
    t0 = time.perf_counter()
    async with session.post(url + "/generate_stream", json={
            "inputs": prompt, "parameters": {"max_new_tokens": max_new, "details": True}},
            headers=headers or {}) as r:
        status = r.status
        async for line in r.content:
            if line.startswith(b"data:"):
                events.append(orjson.loads(line[5:]))
                stamps.append(time.perf_counter() - t0)
    return {"status": status, "events": events, "t": stamps}
