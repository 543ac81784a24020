"""Where a replica's tokens go: straight onto the client's socket, stamped for the ground truth.

A sink is called by the engine at the token's scheduled time (from the timer callback); it writes
the event and records actual-vs-scheduled lateness, TTFT and ITL as written. Fault injection
(``faults.py``) is applied here, on the token the request asked for.
"""

from __future__ import annotations

import time

import orjson

from harness.emulator import wire
from harness.emulator.faults import Fault
from harness.emulator.groundtruth import GroundTruth
from harness.emulator.histogram import LINEAR
from harness.emulator.http import Connection
from harness.emulator.native import F_PY, K_SILENT

_now = time.monotonic_ns


class Group:
    """The sequences of one request (a completion with several prompts): the response ends, and
    the request counts as completed, when the last of them does."""

    __slots__ = ("left", "parts", "seqs", "dead")

    def __init__(self, n: int):
        self.left = n
        self.parts: list[tuple[int, int]] = []     # (index, tokens) of the finished ones
        self.seqs: list = []
        self.dead = False

    def finish(self, index: int, tokens: int) -> bool:
        """One sequence ended; True when it was the last."""
        self.parts.append((index, tokens))
        self.left -= 1
        return self.left == 0


class StreamSink:
    __slots__ = ("conn", "enc", "gt", "fault", "last_ns", "dead", "held", "seq", "timer", "ka_ns",
                 "slow", "lat", "itl", "write", "c_em", "c_sid", "group")

    def __init__(self, conn: Connection, enc, gt: GroundTruth, fault: Fault | None, timer, group: Group | None = None):
        self.ka_ns = _now()         # last write of any kind (SSE keep-alive comments too)
        # faults, holds, the end and events that are not plain tokens take the general path
        self.slow = fault is not None or not enc.plain
        self.group = group
        self.lat = gt.lateness_us.counts
        self.itl = gt.itl_us.counts
        self.write = conn.fast_write or conn.transport.write
        self.conn = conn
        self.enc = enc
        self.gt = gt
        self.fault = fault
        self.last_ns = 0
        self.dead = False
        self.held: list[bytes] | None = None
        self.seq = None
        self.timer = timer
        self.c_em = None            # the C token writer while it holds this stream, and its id there
        self.c_sid = -1

    def token(self, seq, due_ns: int, last: bool) -> None:
        """The hot path: a middle token of a healthy stream (one write, two histogram bumps)."""
        k = seq.generated
        if self.slow or last or k == 1 or self.conn.closed:
            return self._token(seq, due_ns, last)
        if not self.write(self.enc.chunk(k)):
            self.gt.tokens_buffered += 1
        now = _now()
        v = (now - due_ns) // 1000
        if 0 <= v < LINEAR:
            self.lat[v] += 1
        else:
            self.gt.late(now, v)
        v = (now - self.last_ns) // 1000
        if 0 <= v < LINEAR:
            self.itl[v] += 1
        else:
            self.gt.itl_us.record(v)
        self.last_ns = self.ka_ns = now
        self.gt.tokens_sent += 1

    def _token(self, seq, due_ns: int, last: bool) -> None:
        if self.dead:
            return
        k = seq.generated
        if self.fault is not None and k > self.fault.after and self._fault(seq, k, last):
            return
        conn = self.conn
        if conn.closed or conn.transport.is_closing():
            return
        data = self.enc.token(k, last, k)
        if self.held is not None:
            self.held.append(data)
            if last:
                self.held.append(b"")
            return
        end = last
        if last and self.group is not None:
            end = self.group.finish(0, k)
            if end:
                data += wire.done(self.enc.prefix)
        if end:
            conn.end_stream(data)
        else:
            conn.write_chunk(data)
        now = _now()
        gt = self.gt
        gt.tokens_sent += 1
        v = (now - due_ns) // 1000
        if 0 <= v < LINEAR:
            gt.lateness_us.counts[v] += 1
        else:
            gt.late(now, v)
        if k == 1:
            gt.ttft_us.record((now - seq.received_ns) // 1000)
            gt.ttft_scheduled_us.record((due_ns - seq.received_ns) // 1000)
        else:
            v = (now - self.last_ns) // 1000
            if 0 <= v < LINEAR:
                gt.itl_us.counts[v] += 1
            else:
                gt.itl_us.record(v)
        self.last_ns = now
        self.ka_ns = now
        if last:
            self.dead = self.slow = True
            if end:
                gt.requests_completed += 1
                gt.e2e_us.record((now - seq.received_ns) // 1000)

    def keep_alive(self, now_ns: int, every_ns: int, comment: bytes = b": \n\n") -> bool:
        """Send the SSE keep-alive ``comment`` (axum 0.7's: ``: ``) after ``every_ns`` of silence;
        False once finished."""
        conn = self.conn
        if self.dead or conn.closed or conn.transport.is_closing():
            return False
        if self.held is None:
            ka = self.ka_ns
            if self.c_sid >= 0 and self.c_em.ptr:
                ka = max(ka, self.c_em.last_ns(self.c_sid))
            if now_ns - ka >= every_ns:
                conn.fast_write(b"%x\r\n%b\r\n" % (len(comment), comment))
                self.ka_ns = now_ns
        return True

    # -- the C token writer (engine.NativeFixedReplica) ----------------------------------------
    def c_spec(self) -> tuple[int, int, int, bytes, bytes]:
        """(kind, flags, socket fd, pre, post) for ``em_add``: a faulted or held stream, or one
        without a socket, stays on this Python path (F_PY: C hands every token back)."""
        kind, pre, post = self.enc.c_parts
        conn = self.conn
        if self.slow or self.held is not None or conn.closed or conn.fd < 0:
            return kind, F_PY, -1, pre, post
        return kind, 0, conn.fd, pre, post

    def c_attach(self, em, sid: int) -> None:
        self.c_em, self.c_sid = em, sid

    def c_sync(self, last_ns: int) -> None:
        """C hands a token back: its writes so far are this stream's latest."""
        if last_ns > self.last_ns:
            self.last_ns = last_ns
            if last_ns > self.ka_ns:
                self.ka_ns = last_ns

    def c_partial(self, last_ns: int, rest: bytes) -> None:
        """The kernel took part of C's write: the rest goes through the transport, and so does
        every later byte of this stream (C flagged it F_PY), so the order is kept."""
        self.last_ns = self.ka_ns = last_ns
        if not self.conn.closed:
            self.conn.transport.write(rest)

    def abort(self) -> None:
        self.dead = self.slow = True
        self.conn.close()

    # -- faults (slow path) -------------------------------------------------------------------
    def _fault(self, seq, k: int, last: bool) -> bool:
        """Apply the fault at token k; True when the token must not be written normally."""
        f = self.fault
        kind = f.kind
        conn = self.conn
        if kind == "delay":
            if self.held is None:
                self.slow = True
                self.held = []
                self.timer.at(_now() + int(f.ms * 1e6), self._release, None)
            return False
        self.dead = self.slow = True
        seq.cancelled = True
        self.gt.requests_faulted += 1
        if kind == "reset":
            conn.reset()
        elif kind == "close":
            conn.close()
        elif kind == "sse_error":
            conn.end_stream(self.enc.error("Request failed during generation: emulated fault", "generation")
                            + self.enc.error_tail)
        elif kind == "malformed":
            conn.end_stream(b'data:{"index":%d,"token":{"id":1,"text":"x",' % k + b"\n\n")
        elif kind == "truncate":
            conn.end_stream()
        # stall: write nothing more; the connection stays open until the client leaves
        return True

    def _release(self, _arg, due_ns: int) -> None:
        held, self.held = self.held, None
        self.fault = None
        if self.conn.closed or not held:
            return
        final = held and held[-1] == b""
        body = [h for h in held if h]
        for i, data in enumerate(body):
            if final and i == len(body) - 1:
                self.conn.end_stream(data)
            else:
                self.conn.write_chunk(data)
        self.gt.tokens_sent += len(body)
        if final:
            self.dead = self.slow = True
            self.gt.requests_completed += 1


class WholeSink:
    """Non-streaming routes: one JSON body when the last token (of the request's last sequence)
    is due, with TGI's timing headers."""

    __slots__ = ("conn", "build", "gt", "fault", "extra", "dead", "group", "index")
    last_ns = 0

    def __init__(self, conn: Connection, build, gt: GroundTruth, fault: Fault | None, extra,
                 group: Group | None = None, index: int = 0):
        self.conn = conn
        self.build = build          # callable([(index, tokens), ...]) -> dict
        self.gt = gt
        self.fault = fault
        self.extra = extra
        self.dead = False
        self.group = group or Group(1)
        self.index = index

    def token(self, seq, due_ns: int, last: bool) -> None:
        g = self.group
        if not last or self.dead or g.dead or self.conn.closed:
            return
        f = self.fault
        if f is not None:
            g.dead = True
            self.gt.requests_faulted += 1
            if f.kind == "reset":
                self.conn.reset()
            elif f.kind == "close":
                self.conn.close()
            elif f.kind == "malformed":
                self.conn.respond(200, b'{"generated_text": "x", "details": {')
            elif f.kind == "truncate":
                self.conn.transport.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                                          b"content-length: 1000\r\n\r\n{\"generated_text\"")
                self.conn.close()
            elif f.kind == "sse_error":
                self.conn.respond(424, wire.error_body(
                    "Request failed during generation: emulated fault", "generation"))
            elif f.kind == "delay":
                g.dead = False
                self.gt.requests_faulted -= 1
                self.fault = None
                self.timer_release(seq, due_ns, f.ms)
            return
        self.dead = True
        if not g.finish(self.index, seq.generated):
            return
        parts = sorted(g.parts)
        body = orjson.dumps(self.build(parts))
        now = _now()
        seqs = g.seqs or [seq]
        received = min(s.received_ns for s in seqs)
        queued = max(s.queued_ns for s in seqs)
        started = max(s.started_ns for s in seqs) or queued
        generated = sum(n for _, n in parts)
        total = now - received
        inference = now - started
        extra = self.extra + [
            (b"x-compute-time", repr(total / 1e9).encode()),
            (b"x-total-time", b"%d" % (total // 1_000_000)),
            (b"x-validation-time", b"%d" % (max(0, queued - received) // 1_000_000)),
            (b"x-queue-time", b"%d" % (max(0, started - queued) // 1_000_000)),
            (b"x-inference-time", b"%d" % (inference // 1_000_000)),
            (b"x-time-per-token", b"%d" % (inference // max(1, generated) // 1_000_000)),
            (b"x-prompt-tokens", b"%d" % sum(s.input_tokens for s in seqs)),
            (b"x-generated-tokens", b"%d" % generated)]
        self.conn.respond(200, body, b"application/json", extra)
        gt = self.gt
        gt.tokens_sent += generated
        gt.requests_completed += 1
        gt.lateness_us.record((now - due_ns) // 1000)
        gt.e2e_us.record((now - received) // 1000)

    # the C token writer holds a non-streaming request as a silent stream: only its last token
    # comes back to Python
    def c_spec(self) -> tuple[int, int, int, bytes, bytes]:
        return K_SILENT, 0, -1, b"", b""

    def c_attach(self, em, sid: int) -> None:
        pass

    def c_sync(self, last_ns: int) -> None:
        pass

    def abort(self) -> None:
        self.dead = True
        self.conn.close()

    def timer_release(self, seq, due_ns, ms):
        import asyncio
        asyncio.get_event_loop().call_later(ms / 1000.0, self.token, seq, due_ns, True)
