"""A small HTTP/1.1 server on a raw asyncio Protocol: keep-alive, Content-Length bodies, chunked
responses for streams.

aiohttp's StreamResponse costs ~25 us per SSE event on one core (it saturates near 40k events/s);
writing pre-framed chunks straight to the transport costs a few microseconds, which is what lets
one core stream >100k tokens/s. Requests on a connection are served one at a time, in order.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import time
from email.utils import formatdate
from typing import Callable

MAX_HEADER_BYTES = 65536
MAX_BODY_BYTES = 32 * 1024 * 1024

REASONS = {200: "OK", 204: "No Content", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
           408: "Request Timeout", 411: "Length Required", 413: "Payload Too Large",
           415: "Unsupported Media Type", 422: "Unprocessable Entity", 424: "Failed Dependency",
           429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable"}


class Request:
    __slots__ = ("method", "path", "query", "headers", "body", "keep_alive", "received_ns")

    def __init__(self, method, path, query, headers, body, keep_alive, received_ns):
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive
        self.received_ns = received_ns


class _DateCache:
    """The Date header, formatted at most once a second."""

    def __init__(self):
        self._sec = -1
        self._value = b""

    def get(self, now_s: float) -> bytes:
        s = int(now_s)
        if s != self._sec:
            self._sec = s
            self._value = formatdate(s, usegmt=True).encode()
        return self._value


DATE = _DateCache()


def _direct_writer(transport: asyncio.Transport, fd: int) -> Callable[[bytes], None]:
    """``transport.write`` minus asyncio's bookkeeping when nothing is queued: one ``write(2)``.

    Every write of a response goes through it: besides the cost, uvloop's ``transport.write``
    defers the actual write to the end of the loop iteration, after every other token due in
    the same wake-up, so the ground truth's stamp would be taken before the bytes left.

    Anything not written at once (a full socket buffer, an error) goes through the transport,
    which queues it behind nothing and handles the error as usual, so order is kept. Returns
    True when the kernel took all of ``data`` now, False when (some of) it waits in the
    transport's buffer: the ground truth counts those writes, whose stamp is earlier than the
    moment the bytes really left (a client that does not keep up).
    """
    size = transport.get_write_buffer_size
    write = transport.write
    oswrite = os.write

    def fast(data: bytes) -> bool:
        if not size():
            try:
                n = oswrite(fd, data)
            except OSError:
                n = 0
            if n == len(data):
                return True
            data = data[n:]
        write(data)
        return False
    return fast


class Connection(asyncio.Protocol):
    """One client connection. ``handler(request, conn)`` answers through the methods below."""

    def __init__(self, handler: Callable[[Request, "Connection"], None], clock_ns: Callable[[], int],
                 loop: asyncio.AbstractEventLoop):
        self.handler = handler
        self.clock_ns = clock_ns
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.busy = False
        self.closed = False
        self.keep_alive = True
        self.on_lost: Callable[[], None] | None = None
        self.fast_write: Callable[[bytes], None] | None = None
        self.fd = -1                 # the socket's descriptor (the C token writer dups it)
        self._continued = False
        self.head_sent = False       # this request's status line went out (no other answer can)

    # -- asyncio.Protocol ---------------------------------------------------------------------
    def connection_made(self, transport):
        self.transport = transport
        self.fast_write = transport.write
        sock = transport.get_extra_info("socket")
        if transport.get_extra_info("sslcontext") is not None:
            sock = None   # TLS: every write goes through the transport (it encrypts), none to the fd
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
            self.fd = sock.fileno()
            self.fast_write = _direct_writer(transport, self.fd)

    def connection_lost(self, exc):
        self.closed = True
        cb, self.on_lost = self.on_lost, None
        if cb is not None:
            cb()

    def data_received(self, data: bytes):
        self.buf += data
        if not self.busy:
            self._next_request()

    def eof_received(self):
        return False  # close our side too

    # -- parsing ------------------------------------------------------------------------------
    def _next_request(self) -> None:
        while not self.busy and not self.closed:
            buf = self.buf
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEADER_BYTES:
                    self._fail(400, b"headers too large")
                return
            head = bytes(buf[:end]).decode("latin-1")
            lines = head.split("\r\n")
            try:
                method, target, version = lines[0].split(" ", 2)
            except ValueError:
                self._fail(400, b"bad request line")
                return
            headers: dict[str, str] = {}
            for line in lines[1:]:
                k, sep, v = line.partition(":")
                if sep:
                    headers[k.strip().lower()] = v.strip()
            if "chunked" in headers.get("transfer-encoding", "").lower():
                self._fail(411, b"chunked request bodies are not supported; send Content-Length")
                return
            try:
                length = int(headers.get("content-length", "0"))
            except ValueError:
                self._fail(400, b"bad content-length")
                return
            if length > MAX_BODY_BYTES:
                self._fail(413, b"body too large")
                return
            if len(buf) < end + 4 + length:
                if "100-continue" in headers.get("expect", "").lower() and not self._continued:
                    self._continued = True
                    self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                return
            self._continued = False
            body = bytes(buf[end + 4:end + 4 + length])
            del buf[:end + 4 + length]
            conn_hdr = headers.get("connection", "").lower()
            keep = (version == "HTTP/1.1" and "close" not in conn_hdr) or (
                version == "HTTP/1.0" and "keep-alive" in conn_hdr)
            self.keep_alive = keep
            path, _, query = target.partition("?")
            self.busy = True
            self.handler(Request(method.upper(), path, query, headers, body, keep, self.clock_ns()), self)

    def _fail(self, status: int, msg: bytes) -> None:
        self.keep_alive = False
        self.busy = True
        self.respond(status, msg, b"text/plain")

    # -- responses ----------------------------------------------------------------------------
    def _head(self, status: int, ctype: bytes, extra: list[tuple[bytes, bytes]] | None,
              length: int | None) -> bytearray:
        self.head_sent = True
        h = bytearray(b"HTTP/1.1 %d %s\r\n" % (status, REASONS.get(status, "Unknown").encode()))
        h += b"content-type: " + ctype + b"\r\n"
        if length is None:
            h += b"transfer-encoding: chunked\r\n"
        else:
            h += b"content-length: %d\r\n" % length
        if extra:
            for k, v in extra:
                h += k + b": " + v + b"\r\n"
        h += b"access-control-allow-origin: *\r\nvary: origin, access-control-request-method, " \
             b"access-control-request-headers\r\ndate: " + DATE.get(time.time()) + b"\r\n"
        if not self.keep_alive:
            h += b"connection: close\r\n"
        h += b"\r\n"
        return h

    def respond(self, status: int, body: bytes, ctype: bytes = b"application/json",
                extra: list[tuple[bytes, bytes]] | None = None) -> None:
        if self.closed:
            return
        self.fast_write(bytes(self._head(status, ctype, extra, len(body))) + body)
        self._done()

    def start_stream(self, status: int, ctype: bytes, extra=None) -> None:
        if not self.closed:
            self.fast_write(bytes(self._head(status, ctype, extra, None)))

    def write_chunk(self, data: bytes) -> None:
        """One chunk of a chunked body (the caller must not pass empty data)."""
        self.fast_write(b"%x\r\n%b\r\n" % (len(data), data))

    def end_stream(self, last: bytes = b"") -> None:
        if self.closed:
            return
        if last:
            self.fast_write(b"%x\r\n%b\r\n0\r\n\r\n" % (len(last), last))
        else:
            self.fast_write(b"0\r\n\r\n")
        self._done()

    def _done(self) -> None:
        self.on_lost = None
        self.head_sent = False
        if not self.keep_alive:
            self.transport.close()
            self.closed = True
            return
        self.busy = False
        if self.buf:
            self.loop.call_soon(self._next_request)

    def reset(self) -> None:
        """Abort with a TCP RST (SO_LINGER 0), as a crashed or killed server would."""
        if self.closed:
            return
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        self.on_lost = None
        self.closed = True
        self.transport.abort()

    def close(self) -> None:
        if not self.closed:
            self.on_lost = None
            self.closed = True
            self.transport.close()
