"""The hot path: one streamed request over a raw gevent socket, a timestamp at every event.

Why raw sockets: a Locust ``HttpUser`` reading ``iter_lines()`` falls behind at a few hundred
streams on one core (see the project's shared notes); reading HTTP/1.1 and SSE straight off a
keep-alive socket keeps per-token work to one ``recv``, one ``perf_counter_ns`` per read, one
``split`` and the protocol's event check. Everything else (histograms, records, Locust events)
happens once per request, after the stream ends.

Errors are results, never exceptions: each failure gets one class from
:data:`harness.records.schema.ERROR_CLASSES` and the caller goes on.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field
from time import perf_counter_ns
from urllib.parse import urlsplit

from gevent import Timeout
from gevent import socket as gsocket

from harness.protocols.base import DONE, ERROR, FINAL, MALFORMED, TOKEN, RequestSpec, WireProtocol

_RECV = 65536
_MAX_ERROR_BODY = 65536


@dataclass(slots=True)
class StreamResult:
    """Everything one request told: times are ``perf_counter_ns`` of this process."""

    replica: str
    start_pc: int
    end_pc: int = 0
    first_pc: int | None = None
    itl_ns: list[int] = field(default_factory=list)   # gaps between token events
    events: int = 0                                   # token-bearing events
    output_tokens: int = 0
    input_tokens: int | None = None
    finish_reason: str | None = None
    status: int | None = None
    error_class: str | None = None
    error: str | None = None


class _Closed(Exception):
    """The peer closed the connection (recv returned nothing)."""


class _Conn:
    __slots__ = ("sock", "buf", "fresh")

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.fresh = True

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class _Endpoint:
    __slots__ = ("url", "host", "port", "hostport", "idle")

    def __init__(self, url: str):
        u = urlsplit(url)
        if u.scheme not in ("http", ""):
            raise ValueError(f"only http:// replica URLs are supported, got {url!r}")
        self.url = url.rstrip("/")
        self.host = u.hostname or "127.0.0.1"
        self.port = u.port or 80
        self.hostport = f"{self.host}:{self.port}".encode()
        self.idle: list[_Conn] = []


def _classify_status(status: int) -> str:
    if status == 429:
        return "http_429"
    if 400 <= status < 500 and status != 424:
        return "http_4xx"
    if status >= 500 or status == 424:
        return "http_5xx"
    return "other"


class StreamClient:
    """Sends streaming requests of one protocol; keeps idle keep-alive sockets per replica.

    One instance per generator process is enough: gevent greenlets share it, each request takes an
    idle socket (or opens one) and gives it back only after a cleanly finished response.
    """

    def __init__(self, protocol: WireProtocol, *, request_timeout_s: float = 120.0,
                 connect_timeout_s: float = 10.0, max_idle_per_replica: int = 4096):
        self.protocol = protocol
        self.request_timeout_s = request_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.max_idle = max_idle_per_replica
        self._endpoints: dict[str, _Endpoint] = {}

    def close(self) -> None:
        for ep in self._endpoints.values():
            while ep.idle:
                ep.idle.pop().close()

    def _endpoint(self, url: str) -> _Endpoint:
        ep = self._endpoints.get(url)
        if ep is None:
            ep = self._endpoints[url] = _Endpoint(url)
        return ep

    def _connect(self, ep: _Endpoint) -> _Conn:
        sock = gsocket.create_connection((ep.host, ep.port), timeout=self.connect_timeout_s)
        sock.setsockopt(gsocket.IPPROTO_TCP, gsocket.TCP_NODELAY, 1)
        sock.settimeout(None)   # one timer per request (below), not one per recv
        return _Conn(sock)

    # ------------------------------------------------------------------------------------------
    def send(self, url: str, spec: RequestSpec, body: bytes | None = None) -> StreamResult:
        """Run one request to the replica at ``url``; never raises for server or network faults."""
        ep = self._endpoint(url)
        if body is None:
            body = self.protocol.body(spec)
        head = (b"POST " + self.protocol.path.encode() + b" HTTP/1.1\r\nHost: " + ep.hostport +
                b"\r\nContent-Type: application/json\r\nAccept: text/event-stream\r\n"
                b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n")
        payload = head + body
        for attempt in (0, 1):
            conn = ep.idle.pop() if ep.idle else None
            res = StreamResult(ep.url, perf_counter_ns())
            if conn is None:
                try:
                    conn = self._connect(ep)
                except (gsocket.timeout, TimeoutError) as e:
                    return self._fail(res, "connect", f"connect timeout: {e}")
                except OSError as e:
                    return self._fail(res, "connect", f"connect failed: {e.strerror or e}")
                attempt = 1  # a fresh socket is never retried
            reused = not conn.fresh
            conn.fresh = False
            timer = Timeout(self.request_timeout_s)
            timer.start()
            try:
                conn.sock.sendall(payload)
                keep = self._read(conn, res)
            except Timeout as t:
                conn.close()
                if t is not timer:
                    raise
                return self._fail(res, "timeout", f"no complete response within {self.request_timeout_s:g} s")
            except _Closed:
                if reused and attempt == 0 and res.status is None:
                    conn.close()      # an idle keep-alive socket the server had closed: retry once
                    continue
                conn.close()
                return self._finish_closed(res)
            except (gsocket.timeout, TimeoutError):
                conn.close()
                return self._fail(res, "timeout", f"no data within {self.request_timeout_s:g} s")
            except OSError as e:
                conn.close()
                if reused and attempt == 0 and res.status is None and e.errno in (
                        errno.ECONNRESET, errno.EPIPE):
                    continue
                if res.status is None and e.errno == errno.ECONNREFUSED:
                    return self._fail(res, "connect", f"connection refused: {e.strerror}")
                return self._fail(res, "reset", f"connection error: {e.strerror or e}")
            except BaseException:
                conn.close()          # killed greenlet (GreenletExit) or a bug: never leak the socket
                raise
            finally:
                timer.close()
            if keep and len(ep.idle) < self.max_idle:
                ep.idle.append(conn)
            else:
                conn.close()
            return res
        return res  # pragma: no cover - loop always returns

    @staticmethod
    def _fail(res: StreamResult, cls: str, msg: str) -> StreamResult:
        res.end_pc = perf_counter_ns()
        res.error_class = cls
        res.error = msg[:200]
        return res

    @staticmethod
    def _finish_closed(res: StreamResult) -> StreamResult:
        """The peer closed the socket: fine after the final event, else a reset mid-stream."""
        res.end_pc = res.end_pc or perf_counter_ns()
        if res.error_class is None and res.finish_reason is None:
            res.error_class = "reset"
            res.error = ("connection closed before the response" if res.status is None
                         else f"connection closed mid-stream after {res.events} events")
        return res

    # ------------------------------------------------------------------------------------------
    def _read(self, conn: _Conn, res: StreamResult) -> bool:
        """Read one response; fill ``res``. Returns True when the socket may be reused."""
        sock = conn.sock
        buf = conn.buf
        while True:
            i = buf.find(b"\r\n\r\n")
            if i >= 0:
                break
            chunk = sock.recv(_RECV)
            if not chunk:
                raise _Closed()
            buf += chunk
        t_head = perf_counter_ns()
        head = buf[:i].decode("latin-1")
        rest = buf[i + 4:]
        lines = head.split("\r\n")
        try:
            res.status = status = int(lines[0].split(" ", 2)[1])
        except (IndexError, ValueError):
            res.error_class, res.error = "malformed", f"bad HTTP status line {lines[0][:60]!r}"
            res.end_pc = t_head
            return False
        headers = {}
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            headers[k.strip().lower()] = v.strip()
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        length = headers.get("content-length")
        length = int(length) if length is not None and not chunked else None
        keep = headers.get("connection", "").lower() != "close" and (chunked or length is not None)
        body = _Body(sock, rest, chunked, length)

        if status != 200:
            data = body.read_all(_MAX_ERROR_BODY)
            res.end_pc = perf_counter_ns()
            res.error_class = _classify_status(status)
            res.error = f"HTTP {status}: {self.protocol.error_message(data)}"[:200]
            conn.buf = b""
            return keep and body.done
        ctype = headers.get("content-type", "")
        if "text/event-stream" not in ctype:
            data = body.read_all(_MAX_ERROR_BODY)
            res.end_pc = perf_counter_ns()
            res.error_class, res.error = "malformed", f"expected text/event-stream, got {ctype!r}"
            conn.buf = b""
            return keep and body.done
        ok = self._read_events(body, res)
        conn.buf = b""
        return ok and keep and body.done

    def _read_events(self, body: "_Body", res: StreamResult) -> bool:
        """Parse SSE off the body; one timestamp per read. Returns True if the stream was clean."""
        event = self.protocol.event
        final_then_done = self.protocol.final_then_done
        itl = res.itl_ns
        first = None
        last = 0
        tokens = 0
        events = 0
        final = None
        done = False
        pending = b""
        error_event = False
        try:
            for piece, t in body.pieces():
                if pending:
                    piece = pending + piece
                    pending = b""
                # fast path: exactly one ``data:`` event in this read (the usual case per token)
                if piece[:5] == b"data:" and piece[-2:] == b"\n\n" and piece.count(b"\n") == 2:
                    lines = (piece[:-2],)
                else:
                    lines = piece.split(b"\n")
                    pending = lines.pop()
                for line in lines:
                    if line[:5] != b"data:":
                        if line[:6] == b"event:" and b"error" in line:
                            error_event = True
                        continue
                    payload = line[5:]
                    if payload[:1] == b" " or payload[-1:] == b"\r":
                        payload = payload.strip()
                    kind, n, detail = event(payload)
                    if n:
                        if first is None:
                            first = t
                        else:
                            itl.append(t - last)
                        last = t
                        tokens += n
                        events += 1
                    if kind == TOKEN:
                        if not error_event:
                            continue
                        kind = ERROR
                        detail = "event: error"
                    if kind == FINAL:
                        final = detail
                        if not final_then_done:
                            done = True
                    elif kind == DONE:
                        done = True
                    elif kind == ERROR:
                        res.error_class, res.error = "sse_error", f"error event: {detail}"[:200]
                        break
                    elif kind == MALFORMED:
                        res.error_class, res.error = "malformed", str(detail)[:200]
                        break
                if res.error_class is not None:
                    break
        finally:
            res.first_pc = first
            res.events = events
            res.output_tokens = tokens
            if final is not None:
                if final.output_tokens is not None:
                    res.output_tokens = final.output_tokens
                res.input_tokens = final.input_tokens
                res.finish_reason = final.finish_reason or ("length" if done else None)
            res.end_pc = last if last else perf_counter_ns()
        if res.error_class is not None:
            res.end_pc = perf_counter_ns()
            return False
        if body.eof_before_end:
            if final is not None or done:
                return False
            raise _Closed()
        if final is None and not done:
            res.error_class = "incomplete"
            res.error = f"stream ended without the final event after {events} events"
            return False
        if res.finish_reason is None:
            res.finish_reason = "unknown"
        return True


def _waiting_recv(sock):
    """``recv`` that waits for readability first, then reads the OS socket directly.

    gevent's ``socket.recv`` tries a non-blocking read first; mid-stream that read almost always
    fails (the next token is ~10 ms away), which costs a raised exception per token before the
    greenlet parks. Waiting first saves that on every token. Falls back to ``sock.recv`` when
    gevent's socket internals are not there.
    """
    raw_sock = getattr(sock, "_sock", None)
    event = getattr(sock, "_read_event", None)
    wait = getattr(sock, "_wait", None)
    if raw_sock is None or event is None or wait is None:
        return sock.recv
    raw_recv = raw_sock.recv
    would_block = (errno.EAGAIN, errno.EWOULDBLOCK)

    def recv(n: int) -> bytes:
        while True:
            wait(event)
            try:
                return raw_recv(n)
            except BlockingIOError:
                continue
            except OSError as e:
                if e.errno in would_block:
                    continue
                raise

    return recv


class _Body:
    """Incremental HTTP/1.1 body: chunked, Content-Length, or until close; yields data pieces."""

    __slots__ = ("sock", "raw", "chunked", "left", "chunk_left", "need_crlf", "done", "eof_before_end",
                 "tail")

    def __init__(self, sock, rest: bytes, chunked: bool, length: int | None):
        self.sock = sock
        self.raw = rest
        self.chunked = chunked
        self.left = length            # None: until close
        self.chunk_left = 0
        self.need_crlf = False
        self.done = False
        self.eof_before_end = False
        self.tail = 0                 # bytes of the chunked body's closing CRLF still to read

    def pieces(self):
        """Yield ``(data, perf_counter_ns at arrival)`` until the body ends."""
        sock = self.sock
        recv = _waiting_recv(sock)
        raw = self.raw
        self.raw = b""
        t = perf_counter_ns()
        while True:
            if raw:
                data = self._decode(raw) if self.chunked else self._plain(raw)
                if data:
                    yield data, t
            if self.done:
                while self.tail > 0:          # consume the closing CRLF so keep-alive stays clean
                    more = sock.recv(self.tail)
                    if not more:
                        self.eof_before_end = True
                        return
                    self.tail -= len(more)
                return
            raw = recv(_RECV)
            t = perf_counter_ns()
            if not raw:
                if self.left is None and not self.chunked:
                    self.done = True      # close-delimited body: EOF is its end
                else:
                    self.eof_before_end = True
                return

    def _plain(self, raw: bytes) -> bytes:
        if self.left is None:
            return raw
        if len(raw) >= self.left:
            raw = raw[:self.left]
            self.left = 0
            self.done = True
            return raw
        self.left -= len(raw)
        return raw

    def _decode(self, raw: bytes) -> bytes:
        if not self.raw and not self.chunk_left and not self.need_crlf:
            nl = raw.find(b"\r\n")
            if 0 < nl < 10:
                try:
                    size = int(raw[:nl], 16)
                except ValueError:
                    size = -1
                if size > 0 and len(raw) == nl + size + 4 and raw[-2:] == b"\r\n":
                    return raw[nl + 2:nl + 2 + size]   # exactly one whole chunk: the usual case
        if self.raw:
            raw = self.raw + raw
            self.raw = b""
        out = []
        pos = 0
        n = len(raw)
        left = self.chunk_left
        need_crlf = self.need_crlf
        find = raw.find
        while pos < n:
            if left:
                end = pos + left
                if end >= n:
                    out.append(raw[pos:])
                    left = end - n
                    pos = n
                    if left == 0:
                        need_crlf = True
                    break
                out.append(raw[pos:end])
                pos = end
                left = 0
                need_crlf = True
            if need_crlf:
                if n - pos < 2:
                    break
                pos += 2
                need_crlf = False
                continue
            nl = find(b"\r\n", pos)
            if nl < 0:
                break
            try:
                size = int(raw[pos:nl].split(b";", 1)[0], 16)
            except ValueError:
                size = 0
            pos = nl + 2
            if size == 0:
                self.done = True      # no trailers expected: only the closing CRLF follows
                self.tail = max(0, 2 - (n - pos))
                pos = n
                break
            left = size
        self.chunk_left = left
        self.need_crlf = need_crlf
        if pos < n:
            self.raw = raw[pos:]
        return out[0] if len(out) == 1 else b"".join(out)

    def read_all(self, limit: int) -> bytes:
        """The rest of the body (error responses), at most ``limit`` bytes kept."""
        out = b""
        try:
            for data, _ in self.pieces():
                if len(out) < limit:
                    out += data[:limit - len(out)]
        except (OSError, gsocket.timeout):
            pass
        return out
