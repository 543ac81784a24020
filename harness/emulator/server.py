"""N emulated replicas in one process, on one event loop, sharing one simulated GPU and one timer.

One process is what makes interference possible: every replica's step sees the others' GPU use
at the moment it starts. Each replica listens on its own port.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import hmac
import json
import logging
import os
import signal
from pathlib import Path

from harness.emulator.app import ReplicaApp
from harness.emulator.engine import make_replica
from harness.emulator.gpu import SharedGpu
from harness.emulator.groundtruth import GroundTruth, merge_summaries
from harness.emulator.http import Connection
from harness.emulator.metrics import TgiMetrics
from harness.emulator.native import load_emitter
from harness.emulator.personality import PERSONALITIES
from harness.emulator.wire import COMPACT
from harness.emulator.profile import FixedTiming, Profile
from harness.emulator.timer import TimerWheel
from harness.gcpauses import GcPauses

log = logging.getLogger(__name__)


class Emulator:
    def __init__(self, profile: Profile, replicas: int, loop: asyncio.AbstractEventLoop | None = None,
                 tick_us: float = 100.0, native: bool = True, gpu=None, server: str | None = None,
                 sse_compact: bool = False):
        self.profile = profile
        self.personality = PERSONALITIES[server or profile.server]
        if sse_compact:       # TGI <= 2.0 (axum 0.6): "data:{...}", ":" keep-alive comments
            self.personality = dataclasses.replace(self.personality, prefix=COMPACT,
                                                   keep_alive=self.personality.keep_alive and b":\n\n")
        self.n = replicas
        self.loop = loop or asyncio.get_event_loop()
        self.timer = TimerWheel(self.loop, tick_ns=int(tick_us * 1000))
        # ``gpu``: a GPU shared with other processes, whose warm-up sized each replica's KV
        # budget (harness/emulator/sharedgpu.py); else one simulated GPU for this process
        self.gpu = gpu if gpu is not None else SharedGpu(profile, replicas)
        self.budgets = list(getattr(gpu, "budgets", None) or [None] * replicas)
        profiles = [profile if b is None else profile.model_copy(update={"limits": profile.limits.model_copy(
            update={"max_batch_total_tokens": b})}) for b in self.budgets]
        self.metrics = [TgiMetrics(p.limits.max_input_tokens, p.limits.max_total_tokens,
                                   p.limits.max_batch_total_tokens) for p in profiles]
        for m in self.metrics:
            m.model_name = profile.model.id
        self.ground_truth = [GroundTruth(i) for i in range(replicas)]
        # the C token writer (fastemit.c) where it builds: fixed-timing replicas' middle tokens
        self.emitter = load_emitter() if native and isinstance(profile.timing, FixedTiming) else None
        if self.emitter is not None:
            for g in self.ground_truth:
                g.native = self.emitter.counts()
        self.engines = [make_replica(i, profiles[i], self.gpu, self.timer, self.metrics[i], self.emitter,
                                     self.ground_truth[i].native) for i in range(replicas)]
        self.apps = [ReplicaApp(self, i) for i in range(replicas)]
        self.servers: list[asyncio.base_events.Server] = []
        self.ports: list[int] = []
        self.keep_alive_s = 15.0
        self.ssl = None          # an ssl.SSLContext: serve https (then no C writer: it writes plaintext)
        self.token: str | None = None   # demand "Authorization: Bearer TOKEN" (not on /emulator/)
        self.sse_space = True    # every personality frames "data: {" (see personality.py; --sse-compact: "data:{")
        self._ka_task: asyncio.Task | None = None
        self.gc = GcPauses().start()

    async def start(self, host: str = "127.0.0.1", base_port: int = 0) -> list[int]:
        for i, app in enumerate(self.apps):
            port = base_port + i if base_port else 0
            handle = app.handle if self.token is None else _require_token(app.handle, self.token)
            srv = await self.loop.create_server(
                lambda handle=handle: Connection(handle, self.timer.now_ns, self.loop),
                host, port, reuse_address=True, backlog=4096, ssl=self.ssl)
            self.servers.append(srv)
            self.ports.append(srv.sockets[0].getsockname()[1])
        self._ka_task = self.loop.create_task(self._keep_alive())
        return self.ports

    async def _keep_alive(self) -> None:
        every = int(self.keep_alive_s * 1e9)
        while True:
            await asyncio.sleep(min(1.0, self.keep_alive_s / 4))
            now = self.timer.now_ns()
            for app in self.apps:
                app.keep_alive(now, every)

    def urls(self, host: str = "127.0.0.1") -> list[str]:
        scheme = "https" if self.ssl is not None else "http"
        return [f"{scheme}://{host}:{p}" for p in self.ports]

    async def stop(self) -> None:
        if self._ka_task is not None:
            self._ka_task.cancel()
        for s in self.servers:
            s.close()
        for s in self.servers:
            await s.wait_closed()
        self.timer.close()
        for g in self.ground_truth:
            g.detach()
        self.gc.stop()
        if self.emitter is not None:
            self.emitter.close()
            self.emitter = None

    def ground_truth_summary(self, replica: int) -> dict:
        return {"emulated": True, "replica": replica, "replicas": self.n,
                "timer": "timerfd" if self.timer.precise else "asyncio",
                "writer": "c" if self.emitter is not None else "python",
                "gc": self.gc.summary(),
                "timer_wake_us": self.timer.wake_us.summary(),
                "loop_stalls": list(self.timer.stalls),
                "total": merge_summaries(self.ground_truth),
                "per_replica": [g.summary() for g in self.ground_truth]}

    def state(self) -> dict:
        out = []
        for e in self.engines:
            out.append({"replica": e.index, "active": e.active(), "queue": len(e.queue),
                        "batch": e.last_batch, "steps": e.steps, "last_step_ms": round(e.last_step_ms, 3)})
        return {"emulated": True, "profile": self.profile.name, "gpu_util_pct": round(100 * self.gpu.util, 2),
                "replicas": out}


def _require_token(handle, token: str):
    """``handle`` behind a bearer token, as a hosted endpoint is: 401 without it."""
    want = ("Bearer " + token).encode()

    def guarded(req, conn):
        got = req.headers.get("authorization", "").encode("latin-1", "replace")
        if req.path.startswith("/emulator/") or hmac.compare_digest(got, want):
            return handle(req, conn)
        conn.respond(401, b'{"error":"Authorization header is missing or invalid","error_type":"unauthorized"}')
    return guarded


def write_port_file(path: str | Path, host: str, ports: list[int], scheme: str = "http") -> None:
    """Atomically: the launcher polls for this file to learn the ports."""
    p = Path(path)
    tmp = p.with_suffix(p.suffix + ".tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), "host": host, "ports": ports,
                               "urls": [f"{scheme}://{host}:{q}" for q in ports]}))
    tmp.replace(p)


def _new_loop() -> asyncio.AbstractEventLoop:
    if os.environ.get("SLM_EMULATOR_LOOP", "uvloop") == "uvloop":
        try:
            import uvloop
            return uvloop.new_event_loop()
        except ImportError:
            pass
    return asyncio.new_event_loop()


def serve(profile: Profile, replicas: int, host: str, base_port: int, port_file: str | None,
          tick_us: float = 100.0, keep_alive_s: float = 15.0, ssl_context=None, token: str | None = None,
          sse_space: bool = False, gpu=None, server: str | None = None, sse_compact: bool = False) -> None:
    """Run until SIGINT/SIGTERM. ``gpu``: a warmed-up shared GPU (closed on the way out)."""
    loop = _new_loop()
    asyncio.set_event_loop(loop)
    em = Emulator(profile, replicas, loop, tick_us, native=ssl_context is None, gpu=gpu, server=server,
                  sse_compact=sse_compact)
    em.keep_alive_s = keep_alive_s
    em.ssl, em.token, em.sse_space = ssl_context, token, sse_space
    try:
        ports = loop.run_until_complete(em.start(host, base_port))
    except OSError as e:
        raise SystemExit(f"slm-harness emulate: cannot listen on {host}:{base_port}: {e.strerror}") from None
    stop = asyncio.Event()
    gc.collect()
    gc.freeze()   # start-up objects (modules, pydantic models) never need scanning again
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if port_file:
        write_port_file(port_file, host, ports, "https" if ssl_context is not None else "http")
    print(f"emulating {replicas} replica(s) of profile {profile.name} (server: {em.personality.name}, "
          f"emulated GPU: {profile.gpu.name}) "
          f"timer={'timerfd' if em.timer.precise else 'asyncio'}", flush=True)
    for u in em.urls(host):
        print(f"  {u}", flush=True)
    loop.run_until_complete(stop.wait())
    loop.run_until_complete(em.stop())
    loop.close()
    if gpu is not None:
        gpu.close()

