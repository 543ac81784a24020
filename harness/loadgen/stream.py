"""The hot path: one streamed request over a raw gevent socket, a timestamp at every event.

Why raw sockets: a Locust ``HttpUser`` reading ``iter_lines()`` falls behind at a few hundred
streams on one core (docs/loadgen.md); reading HTTP/1.1 and SSE straight off a
keep-alive socket keeps per-token work to one ``recv``, one ``perf_counter_ns`` per read, one
chunk-frame check and the protocol's event check. The reads are done by one :class:`Reactor`
per process (an epoll set woken through a single gevent watcher), which pushes them into each
response's parser (:class:`_Response`): no greenlet switch per token, one per request.
Everything else (histograms, records, Locust events) happens once per request, after the
stream ends.

Errors are results, never exceptions: each failure gets one class from
:data:`harness.records.schema.ERROR_CLASSES` and the caller goes on.

``https://`` replicas: the TLS handshake runs once per connection in the request's greenlet
(Python's ``ssl`` over memory buffers), and the reader keeps receiving the socket's bytes as
for plain HTTP, with their kernel stamps; each read is decrypted (:class:`_TlsFeed`) before the
parser sees it. Plaintext keeps the C pass's in-place path; TLS reads always go through Python's
parser (its own in-place path): the cost per token is one decryption and that parser.
"""

from __future__ import annotations

import errno
import os
import ssl
from dataclasses import dataclass, field
from time import perf_counter_ns

from gevent import Timeout
from gevent import socket as gsocket
from gevent.event import AsyncResult

from harness.loadgen.native import load as load_native
from harness.loadgen.pacer import Pacer
from harness.loadgen.reactor import Reactor
from harness.protocols.access import Access, parse_url
from harness.protocols.base import DONE, ERROR, FINAL, MALFORMED, TOKEN, Final, RequestSpec, WireProtocol

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


class _Conn:
    __slots__ = ("sock", "buf", "fresh", "tls", "tls_in", "tls_out")

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.fresh = True
        self.tls: ssl.SSLObject | None = None   # https: the TLS connection state over memory buffers
        self.tls_in = self.tls_out = None

    def start_tls(self, ctx: ssl.SSLContext, host: str) -> None:
        """The TLS handshake over this (blocking, with its connect timeout) socket."""
        self.tls_in, self.tls_out = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ctx.wrap_bio(self.tls_in, self.tls_out, server_hostname=host)
        while True:
            try:
                obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                if self.tls_out.pending:
                    self.sock.sendall(self.tls_out.read())
                data = self.sock.recv(65536)
                if not data:
                    raise ConnectionResetError(errno.ECONNRESET, "the server closed the connection in the TLS handshake")
                self.tls_in.write(data)
        if self.tls_out.pending:
            self.sock.sendall(self.tls_out.read())
        self.tls = obj

    def wire(self, payload: bytes) -> bytes:
        """The bytes to send for ``payload``: itself, or its TLS records."""
        if self.tls is None:
            return payload
        self.tls.write(payload)
        return self.tls_out.read()

    def reader(self, resp: "_Response"):
        """What the reactor feeds this connection's reads into."""
        return resp if self.tls is None else _TlsFeed(resp, self.tls, self.tls_in)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class Chain:
    """A closed-loop stream's next request, sent by the reader the moment the current response's
    end is read, on the same keep-alive socket.

    Without it the next send waits until the request's greenlet has been woken and has run, and
    when many streams end together (a closed loop's streams bunch up behind any stall) that wait
    was most of the gap between a response's end and the next send: 5-14 ms on average at 512
    streams on a 2-core machine, tens of ms at 1024. ``next(url)`` returns ``(spec, body, tag)``,
    or None where the loop would not send on this socket to ``url`` now; ``pending`` is the
    request it sent, which :meth:`StreamClient.wait` collects."""

    __slots__ = ("next", "pending")

    def __init__(self, next_request):
        self.next = next_request
        self.pending: _Pending | None = None


class _Pending:
    __slots__ = ("ep", "conn", "resp", "spec", "body", "tag")

    def __init__(self, ep, conn, resp, spec, body, tag):
        self.ep, self.conn, self.resp, self.spec, self.body, self.tag = ep, conn, resp, spec, body, tag


class _Endpoint:
    __slots__ = ("url", "host", "port", "head", "idle", "tls")

    def __init__(self, url: str, route: str, access: Access):
        w = parse_url(url)
        self.url = w.url
        self.host = w.host
        self.port = w.port
        self.tls = access.ssl_context if w.tls else None
        # everything before Content-Length, built once: request line, Host, the scenario's headers
        self.head = (b"POST " + w.path(route).encode() + b" HTTP/1.1\r\nHost: " + w.host_header.encode() +
                     b"\r\nContent-Type: application/json\r\nAccept: text/event-stream\r\n" +
                     access.header_lines())
        self.idle: list[_Conn] = []


def _send(sock, payload: bytes) -> None:
    """``sendall`` without gevent's per-call machinery when the kernel takes it all at once (a
    request always fits an idle socket's buffer): this is on a closed loop's critical path."""
    try:
        n = sock._sock.send(payload)
    except BlockingIOError:
        n = 0
    if n < len(payload):
        sock.sendall(payload[n:])


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
                 connect_timeout_s: float = 10.0, max_idle_per_replica: int = 4096,
                 access: Access | None = None):
        self.protocol = protocol
        self.access = access or Access()
        self.request_timeout_s = request_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.max_idle = max_idle_per_replica
        self._reactor_: Reactor | None = None   # made on first use, in the thread that sends
        self._pacer_: Pacer | None = None       # likewise: the open loop's send clock
        load_native()   # build the C pass now, before any request waits for it
        self._endpoints: dict[str, _Endpoint] = {}
        # diagnosis (SLM_SENT_HEADER=1): each chained request carries its send time (CLOCK_MONOTONIC
        # ns), so an emulator on this host can tell how long requests took to reach it
        # (request_delay_us). Only chained ones: they are sent the moment their payload is built, on
        # a warm socket; another request's payload is built before its socket is found or connected
        self.sent_header = os.environ.get("SLM_SENT_HEADER") == "1"

    def close(self) -> None:
        for ep in self._endpoints.values():
            while ep.idle:
                ep.idle.pop().close()
        if self._reactor_ is not None:
            self._reactor_.close()
            self._reactor_ = None
        if self._pacer_ is not None:
            self._pacer_.close()
            self._pacer_ = None

    @property
    def pacer(self) -> Pacer:
        """The open loop's send clock (:class:`~harness.loadgen.pacer.Pacer`), made on first use
        in the thread that sends."""
        p = self._pacer_
        if p is None:
            p = self._pacer_ = Pacer()
        return p

    def _endpoint(self, url: str) -> _Endpoint:
        ep = self._endpoints.get(url)
        if ep is None:
            ep = self._endpoints[url] = _Endpoint(url, self.protocol.path, self.access)
        return ep

    def _connect(self, ep: _Endpoint) -> _Conn:
        sock = gsocket.create_connection((ep.host, ep.port), timeout=self.connect_timeout_s)
        sock.setsockopt(gsocket.IPPROTO_TCP, gsocket.TCP_NODELAY, 1)
        Reactor.prepare(sock)   # kernel receive stamps: token times are arrivals
        conn = _Conn(sock)
        if ep.tls is not None:
            try:
                conn.start_tls(ep.tls, ep.host)
            except BaseException:
                conn.close()
                raise
        sock.settimeout(None)   # one timer per request (below), not one per recv
        return conn

    # ------------------------------------------------------------------------------------------
    @staticmethod
    def _payload(ep: _Endpoint, body: bytes, stamp: bool = False) -> bytes:
        sent = b"X-Sent-Ns: %d\r\n" % perf_counter_ns() if stamp else b""
        return ep.head + sent + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body

    def send(self, url: str, spec: RequestSpec, body: bytes | None = None,
             chain: Chain | None = None) -> StreamResult:
        """Run one request to the replica at ``url``; never raises for server or network faults.

        With ``chain``, a clean end on a reusable socket sends the chain's next request at once
        (:class:`Chain`); collect it with :meth:`wait`."""
        ep = self._endpoint(url)
        if body is None:
            body = self.protocol.body(spec)
        payload = self._payload(ep, body)
        for attempt in (0, 1):
            conn = ep.idle.pop() if ep.idle else None
            res = StreamResult(ep.url, perf_counter_ns())
            if conn is None:
                try:
                    conn = self._connect(ep)
                except (gsocket.timeout, TimeoutError) as e:
                    return self._fail(res, "connect", f"connect timeout: {e}")
                except ssl.SSLError as e:   # certificate refused, no common protocol...
                    return self._fail(res, "connect", self.access.redact(f"TLS handshake failed: {e.reason or e}"))
                except OSError as e:
                    return self._fail(res, "connect", f"connect failed: {e.strerror or e}")
                attempt = 1  # a fresh socket is never retried
            reused = not conn.fresh
            conn.fresh = False
            resp = _Response(res, self.protocol, AsyncResult())
            if chain is not None:
                resp.chain = (self, chain, ep, conn)
            if reused:   # TTFT starts at the send (a fresh socket's connect still counts)
                res.start_pc = perf_counter_ns()
            out = self._run(ep, conn, resp, reused and attempt == 0, payload)
            if out is not None:
                return self._redacted(out)
        return res  # pragma: no cover - loop always returns

    def _redacted(self, res: StreamResult) -> StreamResult:
        """A server may echo a request header in its error text: never let a secret through."""
        if res.error and self.access.headers:
            res.error = self.access.redact(res.error)
        return res

    def wait(self, chain: Chain) -> StreamResult:
        """The request ``chain`` sent (:class:`Chain`): wait for its end, as :meth:`send` does.

        If the server had closed the kept-alive socket before answering, the request is sent
        again on another socket, as :meth:`send` retries."""
        p = chain.pending
        chain.pending = None
        p.resp.chain = (self, chain, p.ep, p.conn)
        out = self._run(p.ep, p.conn, p.resp, True, None)
        if out is not None:
            return self._redacted(out)
        return self.send(p.ep.url, p.spec, p.body, chain)

    def _fire(self, chain: Chain, ep: _Endpoint, conn: _Conn) -> bool:
        """In the reader, at a clean end on a reusable socket: send the chain's next request on
        it now. True when the socket went to that request."""
        nxt = chain.next(ep.url)
        if nxt is None:
            return False
        spec, body, tag = nxt
        payload = self._payload(ep, body, self.sent_header)   # sent right now, on a warm socket
        resp = _Response(StreamResult(ep.url, perf_counter_ns()), self.protocol, AsyncResult())
        try:
            payload = conn.wire(payload)
            sent = conn.sock._sock.send(payload)   # never blocks: this is the reader's own pass
        except (OSError, ssl.SSLError):
            sent = -1
        if sent == len(payload):
            self._reactor().add(conn.sock, conn.reader(resp))
        else:   # not sent whole (a full or broken socket): wait() sends it again on another socket
            resp.outcome = OSError(errno.EPIPE, "the kept-alive socket did not take the request")
            resp.t_end = perf_counter_ns()
        chain.pending = _Pending(ep, conn, resp, spec, body, tag)
        return True

    def _run(self, ep: _Endpoint, conn: _Conn, resp: _Response, may_retry: bool,
             payload: bytes | None) -> StreamResult | None:
        """Send ``payload`` (None: already sent) and read the response to its end; None when it
        should be sent again on another socket (the server had closed this kept-alive one)."""
        res = resp.res
        reactor = self._reactor()
        timer = Timeout(self.request_timeout_s)
        timer.start()
        reading = False
        try:
            if payload is not None:
                _send(conn.sock, conn.wire(payload))
                reactor.add(conn.sock, conn.reader(resp))
            if resp.outcome is None:
                reading = True
                resp.waiter.get()
                reading = False
            reactor.pump()        # other streams' reads before this one's end-and-next-send
        except Timeout as t:
            if reading:
                reactor.remove(conn.sock)
            conn.close()
            if t is not timer:
                raise
            resp.close_out()
            return self._fail(res, "timeout", f"no complete response within {self.request_timeout_s:g} s")
        except OSError as e:      # the send failed (ssl.SSLError is an OSError too)
            resp.outcome = e
        except BaseException:
            if reading:
                reactor.remove(conn.sock)
            conn.close()          # killed greenlet (GreenletExit) or a bug: never leak the socket
            raise
        finally:
            timer.close()
        outcome = resp.outcome
        if outcome == "ok":
            if resp.close_out():
                if not resp.handed_on:     # else the chain's next request has the socket now
                    if len(ep.idle) < self.max_idle:
                        ep.idle.append(conn)
                    else:
                        conn.close()
            else:
                conn.close()
            return res
        conn.close()
        if isinstance(outcome, OSError):
            resp.close_out()
            if may_retry and res.status is None and outcome.errno in (errno.ECONNRESET, errno.EPIPE):
                return None
            if res.status is None and outcome.errno == errno.ECONNREFUSED:
                return self._fail(res, "connect", f"connection refused: {outcome.strerror}")
            return self._fail(res, "reset", f"connection error: {outcome.strerror or outcome}")
        if isinstance(outcome, BaseException):
            raise outcome         # a parser bug: let it show
        # the peer closed the socket
        if may_retry and res.status is None:
            return None           # an idle keep-alive socket the server had closed: retry once
        resp.close_out()
        res.end_pc = resp.t_end
        return self._finish_closed(res)

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

    def take_late(self) -> tuple[int, int]:
        """The reader's late passes and longest wait since the last call (:meth:`Reactor.take_late`)."""
        r = self._reactor_
        return (0, 0) if r is None else r.take_late()

    def pump(self) -> None:
        """Read whatever other streams have ready now (see :meth:`Reactor.pump`)."""
        if self._reactor_ is not None:
            self._reactor_.pump()

    # ------------------------------------------------------------------------------------------
    def _reactor(self) -> Reactor:
        r = self._reactor_
        if r is None:
            r = self._reactor_ = Reactor(self.protocol.plain_token)
        return r


class _Response:
    """The push parser of one response: the reactor feeds it every read with its timestamp.

    Head, then the body; SSE events are classified by the protocol as they complete. Per token
    the work is one chunk-frame check and the protocol's event check; everything else happens
    once, at the end (``close_out``).
    """

    __slots__ = ("res", "protocol", "event", "final_then_done", "buf", "body", "keep", "sse", "err_body",
                 "first", "last", "tokens", "events", "final", "done_event", "pending", "error_event",
                 "outcome", "waiter", "t_end", "plain", "itl_append", "fast", "chain", "handed_on")

    def __init__(self, res: StreamResult, protocol: WireProtocol, waiter):
        self.res = res
        self.protocol = protocol
        self.event = protocol.event
        shape = protocol.plain_token          # PlainShape of a plain token event, or None
        self.plain = shape.match if shape is not None else None
        self.itl_append = res.itl_ns.append
        self.fast = False
        self.final_then_done = protocol.final_then_done
        self.buf = b""
        self.body: _Body | None = None
        self.keep = False
        self.sse = False
        self.err_body = b""
        self.first = None
        self.last = 0
        self.tokens = 0
        self.events = 0
        self.final = None
        self.done_event = False
        self.pending = b""
        self.error_event = False
        self.outcome = None           # "ok" | "closed" | OSError | Exception (a parser bug)
        self.waiter = waiter
        self.t_end = 0
        self.chain = None             # (client, Chain, endpoint, conn): send the next request at the end
        self.handed_on = False        # the socket went to the chain's next request

    # -- reactor interface --------------------------------------------------------------------
    def feed(self, data: bytes, t: int) -> bool:
        if self.fast and data[-4:] == b"\n\n\r\n":
            # The usual read mid-stream, handled in place (no further calls): one whole chunk
            # carrying one whole plain token event, ``HEX\r\ndata:{...}\n\n\r\n`` or with
            # ``data: {`` (the same test as fastread.c's). The accounting below is the token branch
            # of ``_events``, inlined on purpose.
            nl = data.find(b"\r\n", 0, 10)
            if (data.startswith(b"data:", nl + 2) and data.count(b"\n") == 4
                    and self.plain(data[nl + 8:-4] if data[nl + 7:nl + 8] == b" " else data[nl + 7:-4])):
                try:
                    size = int(data[:nl], 16)
                except ValueError:
                    size = -1
                if size == len(data) - nl - 4:
                    if self.first is None:
                        self.first = t
                    else:
                        self.itl_append(t - self.last)
                    self.last = t
                    self.tokens += 1
                    self.events += 1
                    return False
        end = self._feed(data, t)
        if not end:
            self._set_fast()
        return end

    def _set_fast(self) -> None:
        """Whether the next read may take the in-place path: a clean SSE chunked stream of a
        protocol with a plain-token shape, nothing pending, no error event seen."""
        b = self.body
        self.fast = (self.plain is not None and self.sse and not self.pending and not self.error_event
                     and b is not None and b.chunked and not b.raw and not b.chunk_left and not b.need_crlf
                     and not b.done)

    def _feed(self, data: bytes, t: int) -> bool:
        body = self.body
        if body is None:
            buf = self.buf + data
            i = buf.find(b"\r\n\r\n")
            if i < 0:
                self.buf = buf
                return False
            self.buf = b""
            if not self._head(buf[:i], t):
                return True
            body = self.body
            data = buf[i + 4:]
            if not data:
                return body.done and body.tail == 0 and self._end(t)
        piece = body.feed(data)
        if piece:
            if self.sse:
                if self._events(piece, t):
                    return True
            elif len(self.err_body) < _MAX_ERROR_BODY:
                self.err_body += piece[:_MAX_ERROR_BODY - len(self.err_body)]
        if body.done and body.tail == 0:
            return self._end(t)
        return False

    def eof(self, t: int) -> bool:
        body = self.body
        if body is not None and body.left is None and not body.chunked:
            body.done = True              # a close-delimited body: EOF is its end
            self.keep = False
            return self._end(t)
        if body is not None and body.done:
            self.keep = False             # only the closing CRLF was missing
            return self._end(t)
        self.outcome = "closed"
        self.t_end = t
        return True

    def error(self, exc: Exception, t: int) -> bool:
        self.outcome = exc
        self.t_end = t
        return True

    def finished(self) -> None:
        ch = self.chain
        if ch is not None and self.reusable():
            self.handed_on = ch[0]._fire(ch[1], ch[2], ch[3])
        # no value: the response holding its waiter holding the response would be a reference
        # cycle per request, garbage only the cyclic collector frees, and its collections (several
        # ms each at 1024 streams) hold every stream's read
        self.waiter.set()

    def reusable(self) -> bool:
        """A clean, complete 200 response on a keep-alive socket: what :meth:`close_out` says
        True to, without filling the result."""
        return (self.keep and self._clean() and self.res.status == 200 and self.res.error_class is None
                and (self.final is not None or self.done_event))

    def _clean(self) -> bool:
        """The response ended and its whole body was read: nothing of it is left in the socket."""
        b = self.body
        return self.outcome == "ok" and b is not None and b.done and b.tail == 0

    def resume(self) -> tuple[bool, int] | None:
        """Whether the reactor's C pass may take the next reads in place (the ``fast`` test)."""
        return (self.first is not None, self.last) if self.fast else None

    def absorb(self, first: int, last: int, tokens: int, itls: list[int]) -> None:
        """The plain token events the C pass took in place since :meth:`resume`."""
        if self.first is None:
            self.first = first
        self.res.itl_ns.extend(itls)
        self.last = last
        self.tokens += tokens
        self.events += tokens

    # -- parsing ------------------------------------------------------------------------------
    def _head(self, raw: bytes, t: int) -> bool:
        res = self.res
        lines = raw.decode("latin-1").split("\r\n")
        try:
            res.status = int(lines[0].split(" ", 2)[1])
        except (IndexError, ValueError):
            res.error_class, res.error = "malformed", f"bad HTTP status line {lines[0][:60]!r}"
            self.outcome, self.t_end, self.keep = "ok", t, False
            return False
        headers = {}
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            headers[k.strip().lower()] = v.strip()
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        length = headers.get("content-length")
        length = int(length) if length is not None and not chunked else None
        self.keep = headers.get("connection", "").lower() != "close" and (chunked or length is not None)
        self.body = _Body(chunked, length)
        if res.status == 200:
            ctype = headers.get("content-type", "")
            self.sse = "text/event-stream" in ctype
            if not self.sse:
                res.error_class, res.error = "malformed", f"expected text/event-stream, got {ctype!r}"
        else:
            res.error_class = _classify_status(res.status)
        return True

    def _events(self, piece: bytes, t: int) -> bool:
        """SSE lines of one read; True when an error event or a malformed one ends the stream."""
        if self.pending:
            piece = self.pending + piece
            self.pending = b""
        # fast path: exactly one ``data:`` event in this read (the usual case per token)
        if piece[:5] == b"data:" and piece[-2:] == b"\n\n" and piece.count(b"\n") == 2:
            lines = (piece[:-2],)
        else:
            lines = piece.split(b"\n")
            self.pending = lines.pop()
        res = self.res
        for line in lines:
            if line[:5] != b"data:":
                if line[:6] == b"event:" and b"error" in line:
                    self.error_event = True
                continue
            payload = line[5:]
            if payload[:1] == b" " or payload[-1:] == b"\r":
                payload = payload.strip()
            kind, n, detail = self.event(payload)
            if n:
                if self.first is None:
                    self.first = t
                else:
                    res.itl_ns.append(t - self.last)
                self.last = t
                self.tokens += n
                self.events += 1
            if kind == TOKEN:
                if not self.error_event:
                    continue
                kind = ERROR
                detail = "event: error"
            if kind == FINAL:
                prev = self.final
                if prev is not None:   # a usage-only chunk after the finish_reason one: keep both
                    detail = Final(detail.finish_reason or prev.finish_reason,
                                   prev.output_tokens if detail.output_tokens is None else detail.output_tokens,
                                   prev.input_tokens if detail.input_tokens is None else detail.input_tokens)
                self.final = detail
                if not self.final_then_done:
                    self.done_event = True
            elif kind == DONE:
                self.done_event = True
            elif kind == ERROR:
                res.error_class, res.error = "sse_error", f"error event: {detail}"[:200]
            elif kind == MALFORMED:
                res.error_class, res.error = "malformed", str(detail)[:200]
            if res.error_class is not None:
                self.keep = False
                self.outcome, self.t_end = "ok", t
                return True
        return False

    def _end(self, t: int) -> bool:
        self.outcome, self.t_end = "ok", t
        return True

    def close_out(self) -> bool:
        """Fill the result once the response is over; True when the socket may be reused."""
        res = self.res
        res.first_pc = self.first
        res.events = self.events
        res.output_tokens = self.tokens
        final = self.final
        if final is not None:
            if final.output_tokens is not None:
                res.output_tokens = final.output_tokens
            res.input_tokens = final.input_tokens
            res.finish_reason = final.finish_reason or ("length" if self.done_event else None)
        clean = self._clean()
        if res.status is not None and res.status != 200:
            res.end_pc = self.t_end
            res.error = f"HTTP {res.status}: {self.protocol.error_message(self.err_body)}"[:200]
            return self.keep and clean
        if res.error_class is not None:
            res.end_pc = self.t_end
            return False
        res.end_pc = self.last or self.t_end
        if final is None and not self.done_event:
            if self.outcome == "closed":
                return False
            res.error_class = "incomplete"
            res.error = f"stream ended without the final event after {self.events} events"
            return False
        if res.finish_reason is None:
            res.finish_reason = "unknown"
        return self.keep and clean


class _TlsFeed:
    """Between the reactor and a response on a TLS connection: each read (ciphertext, with its
    kernel stamp) is decrypted, and what it held goes on to the parser with the same stamp."""

    __slots__ = ("resp", "obj", "inbio")

    def __init__(self, resp: _Response, obj: ssl.SSLObject, inbio: ssl.MemoryBIO):
        self.resp, self.obj, self.inbio = resp, obj, inbio

    def feed(self, data: bytes, t: int) -> bool:
        self.inbio.write(data)
        read, inbio, obj = self.obj.read, self.inbio, self.obj
        parts = []
        try:
            while True:
                parts.append(read(262144))
                if not inbio.pending and not obj.pending():
                    break   # the usual case: one whole record, no exception raised to learn it
        except ssl.SSLWantReadError:
            pass            # the rest of a record is still on its way
        except ssl.SSLZeroReturnError:   # the server's close_notify: as the connection's end
            if parts:
                plain = b"".join(parts)
                if self.resp.feed(plain, t):
                    return True
            return self.resp.eof(t)
        except ssl.SSLError as e:
            return self.resp.error(e, t)
        if not parts:
            return False
        return self.resp.feed(parts[0] if len(parts) == 1 else b"".join(parts), t)

    def eof(self, t: int) -> bool:
        return self.resp.eof(t)

    def error(self, exc: Exception, t: int) -> bool:
        return self.resp.error(exc, t)

    def finished(self) -> None:
        self.resp.finished()

    @staticmethod
    def resume():
        return None   # ciphertext: never the C pass's in-place path


class _Body:
    """Incremental HTTP/1.1 body decoder (chunked, Content-Length, or until close): bytes in,
    body data out, ``done`` once the body has ended (``tail``: closing CRLF bytes still due)."""

    __slots__ = ("raw", "chunked", "left", "chunk_left", "need_crlf", "done", "tail")

    def __init__(self, chunked: bool, length: int | None):
        self.raw = b""
        self.chunked = chunked
        self.left = length            # None: until close
        self.chunk_left = 0
        self.need_crlf = False
        self.done = False
        self.tail = 0                 # bytes of the chunked body's closing CRLF still to read

    def feed(self, raw: bytes) -> bytes:
        if self.done:                 # only the closing CRLF of a chunked body is left
            self.tail = max(0, self.tail - len(raw))
            return b""
        return self._decode(raw) if self.chunked else self._plain(raw)

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
