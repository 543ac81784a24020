"""One epoll set that reads every open stream of a generator process, without a greenlet switch
per token.

gevent's way of reading a socket costs, per token: a switch from the hub to the greenlet, a
``recv`` that fails with EAGAIN (an exception), the watcher started and stopped again, and a
switch back. At 100k tokens/s on one core that alone is the whole budget. Here every in-flight
response's socket sits in one ``select.epoll`` whose own fd is a single gevent watcher: when any
stream has data, the hub switches once to the reactor greenlet, which asks epoll which sockets are
ready and, for each, does one ``recvmsg`` and pushes the bytes into that response's parser. The
request's own greenlet sleeps from its send until its response is complete (one wake-up per
request). A socket is registered only while its response is read, so an idle keep-alive socket
the server closes never wakes the reactor.

Timestamps come from the kernel: every socket asks for ``SO_TIMESTAMPNS``, so each read carries
the time its last segment reached this host (``CLOCK_REALTIME``, put on the ``perf_counter_ns``
scale with the clocks' offset read once per wake-up). A token's time is therefore when it
arrived, not when this process got round to it: the generator's own scheduling delay (another
stream's parsing, a record flush, the GIL) stays out of TTFT and ITL. Where the kernel gives no
stamp (a FIN, another OS) the read time is used. Tokens that queued up in the socket while the
reader was behind share the stamp of the last one, as they shared the read time before.
"""

from __future__ import annotations

import ctypes
import logging
import os
import select
import socket
import struct
from time import perf_counter_ns, thread_time_ns, time_ns
from typing import Protocol

from gevent import get_hub
from gevent import sleep as gsleep
from gevent.monkey import get_original
from greenlet import GreenletExit, greenlet

from harness.gcpauses import GcPauses
from harness.loadgen.switchlog import SwitchLog
from harness.loadgen.native import Out, Slot
from harness.loadgen.native import load as load_native

log = logging.getLogger(__name__)

_RECV = 65536
LATE_NS = 5_000_000   # a read this long after its data arrived counts as late (reader health)
PUMP_NS = 1_000_000   # request greenlets read other streams when no pass began in this long
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)   # Linux x86/arm value; Python leaves it unnamed
_ANC = socket.CMSG_SPACE(16) if hasattr(socket, "CMSG_SPACE") else 32   # one struct timespec
_timespec = struct.Struct("qq").unpack
# gevent's monkey patching takes epoll out of ``select``; the OS's own is what is wanted here
try:
    _epoll = get_original("select", "epoll")
except AttributeError:      # not Linux: the load generator cannot run, everything else can
    _epoll = None


class Handler(Protocol):
    """A response being read: ``feed``/``eof``/``error`` return True once it is complete.

    A handler may also offer ``resume() -> (has_first, last_ns) | None`` (the next read may be
    taken in place by the C pass: one whole plain token event) and ``absorb(first_ns, last_ns,
    tokens, itls)`` (the tokens the C pass took since; called before any other read is fed)."""

    def feed(self, data: bytes, t_ns: int) -> bool: ...
    def eof(self, t_ns: int) -> bool: ...
    def error(self, exc: Exception, t_ns: int) -> bool: ...   # OSError, or a parser bug
    def finished(self) -> None: ...   # called once, after the reactor has let go of the socket


class Reactor:
    """``add(sock, handler)`` reads ``sock`` into ``handler`` until it is done; create it in the
    thread (gevent hub) whose greenlets will use it.

    ``plain``: the protocol's plain token shape (``WireProtocol.plain_token``, a
    :class:`~harness.protocols.base.PlainShape`), which the C pass (``fastread.c``, when it
    builds) takes in place; ``native``: False reads in Python whatever is available."""

    def __init__(self, plain=None, native: bool = True):
        self.hub = get_hub()
        if _epoll is None:
            raise RuntimeError("slm-harness's stream reader needs Linux (select.epoll); "
                               "run the load generator on Linux (or in the compose stack)")
        self.ep = _epoll()
        self.handlers: dict[int, tuple] = {}   # fd -> (raw recvmsg, handler), or (C slot, handler)
        self._lib = load_native() if native else None   # None also with SLM_NATIVE=0 or no compiler
        self._fr = None
        if self._lib is not None:
            self._open_native(plain)
        self.glet = greenlet(self._run, parent=self.hub)
        self.watcher = self.hub.loop.io(self.ep.fileno(), 1)
        self.watcher.start(self.glet.switch)
        # Reader health: wake-ups whose oldest read had waited in the kernel >= LATE_NS (when,
        # how long, how many sockets were ready). Kernel stamps keep token times exact through
        # such waits, but a wait longer than the gap between two tokens merges their stamps.
        self.late: list[tuple[int, ...]] = []   # kept only for SLM_READER_LAG_LOG
        self.pass_cpu = 0          # this thread's CPU clock when the pass began (with the lag log)
        self.keep_late = bool(os.environ.get("SLM_READER_LAG_LOG"))
        if self.keep_late and self._fr is not None:
            self._lib.fr_set_timing(self._fr, 1)   # diagnosis: each late pass's slowest system call
        # with the lag log: every cyclic collection of >= 1 ms, (generation, ns)
        self.gc_pauses = GcPauses(keep_ns=1_000_000).start() if self.keep_late else None
        # with the lag log: which greenlet held the loop before each late pass (when, lag, ns, name)
        self.switch_log = SwitchLog().start() if self.keep_late else None
        if self.switch_log is not None:
            self.switch_log.names[self.glet] = "the reader (its own passes)"
        self.holders: list[tuple[int, int, str]] = []
        self.late_count = 0
        self.lag_max_ns = 0
        self._late_since = 0       # the same two since the last take_late()
        self._lag_since = 0
        self.pumping = False
        # SLM_READER_INTERVAL_US=N: after a pass that read something, the next pass begins no
        # sooner than N us; the reader sleeps out the rest instead of waking on every segment.
        # Token times are kernel receive stamps, so this moves no token's time. It batches reads
        # (the test: 1.2-1.8 reads a pass without it, >= 4 with 1000 us), and it cut the
        # generator's CPU per token by 7-25% on 16-core Xeon VMs. Off by default: at 256 streams
        # it raised the TTFT the benchmark measured (+0.47/+0.77 ms against +0.25/+0.29 ms, cause
        # not found; docs/benchmarks/generator_fidelity.md).
        self.interval_ns = int(float(os.environ.get("SLM_READER_INTERVAL_US", "0")) * 1000)
        self.passes = 0            # read passes that found a ready socket, and the reads they made
        self.reads = 0
        self.closed = False
        self.pass_ns = 0           # when the last read pass began (perf_counter_ns)
        self.pass_outs = 0         # reads the last pass handed to Python, and responses it ended
        self.pass_ends = 0
        self.pass_c_ns = 0         # with the lag log: how long the last pass's C part took
        self.pass_max_call = 0     # with the lag log: the last pass's slowest system call in C, ns
        self.pass_nested = 0       # further C passes the last pass ran between its slices
        self.nested_passes = 0     # and all of them, since the start
        # SLM_READER_SLICE_US: how long the reads handed to Python are handled before another C
        # pass reads every stream (0: never; for comparison)
        self.slice_ns = int(float(os.environ.get("SLM_READER_SLICE_US", "2000")) * 1000)
        self.stalls = None         # collections.Counter of stacks, with SLM_READER_WATCHDOG_MS
        if os.environ.get("SLM_READER_WATCHDOG_MS"):
            _start_watchdog(self, float(os.environ["SLM_READER_WATCHDOG_MS"]))

    @staticmethod
    def prepare(sock) -> None:
        """Ask the kernel to stamp every read of ``sock``; once per connection, before use."""
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        except OSError:
            pass   # no kernel stamps: each read is stamped when it happens

    def _open_native(self, plain) -> None:
        lib = self._lib
        pats = plain.patterns() if plain is not None else (b"",) * 6
        args = [a for pat in pats for a in (pat, len(pat))]
        fr = lib.fr_new(self.ep.fileno(), *args, 1 if plain is not None else 0)
        if not fr:
            self._lib = None
            return
        self._fr = fr
        self._slots: dict[int, Slot] = {}
        self._outs = (Out * lib.fr_out_cap(fr)).from_address(lib.fr_outs(fr))
        self._buf = (ctypes.c_char * lib.fr_buf_cap(fr)).from_address(lib.fr_buf(fr))
        self._pump = self._pump_native

    @property
    def native(self) -> bool:
        """Whether reads go through the C pass."""
        return self._fr is not None

    def add(self, sock, handler: Handler) -> None:
        raw = getattr(sock, "_sock", sock)      # gevent's socket wraps a non-blocking OS socket
        fd = raw.fileno()
        if self._fr is not None:
            slot = self._slots.get(fd)    # C memory of a fd's slot stays put until close()
            if slot is None:
                addr = self._lib.fr_slot_of(self._fr, fd)
                if not addr:
                    raise MemoryError("no memory for the C read pass's socket slot")
                slot = self._slots[fd] = Slot.from_address(addr)
            entry = (slot, handler)   # the slot is drained (all zero) when its last response let go
        else:
            entry = (raw.recvmsg, handler)
        # A socket is in the epoll set exactly while it has a handler. A chained request takes the
        # socket over inside its predecessor's ``finished`` (``_done``), still registered: no
        # epoll_ctl at all then. (This epoll set is itself watched by gevent's, and the kernel
        # checks such nested sets under a global mutex on every ADD; at 1024 streams the
        # watchdog caught the reader inside epoll_ctl in 6 of 15 stalls >= 12 ms.)
        fresh = fd not in self.handlers
        self.handlers[fd] = entry
        if fresh:
            self.ep.register(fd, select.EPOLLIN)

    def remove(self, sock) -> None:
        """Stop reading ``sock`` (its response timed out or its greenlet was killed)."""
        self._forget(getattr(sock, "_sock", sock).fileno())

    def _forget(self, fd: int) -> None:
        entry = self.handlers.pop(fd, None)
        if entry is not None:
            if self._fr is not None:
                _drain(entry[0], entry[1])   # tokens taken in place belong to the response
            try:
                self.ep.unregister(fd)
            except OSError:
                pass

    def _done(self, fd: int, handler: Handler) -> None:
        self.pass_ends += 1
        entry = self.handlers.get(fd)
        if entry is not None and self._fr is not None:
            _drain(entry[0], handler)   # tokens taken in place belong to the response, first
        handler.finished()              # may hand the socket straight on (a chained request)
        if self.handlers.get(fd) is entry:
            self._forget(fd)            # not taken on: out of the epoll set until its next request

    def _run(self) -> None:
        hub_switch = self.hub.switch
        me = self.glet.switch
        interval = self.interval_ns
        while not self.closed:
            # always a full pass here: the epoll fd is level-triggered, so returning without
            # reading (pump's 1 ms rule) would have the hub switch straight back, a busy loop
            if self.pump(force=True) and interval:
                wait = self.pass_ns + interval - perf_counter_ns()
                if wait > 0:
                    # sleep with the watcher off (it would switch here mid-sleep), then read again
                    self.watcher.stop()
                    try:
                        gsleep(wait / 1e9)
                    finally:
                        if not self.closed:   # close() stops the watcher for good
                            self.watcher.start(me)
                continue
            try:
                hub_switch()
            except GreenletExit:
                return

    def pump(self, force: bool = False) -> int:
        """Read every socket that is ready now, without waiting.

        The reactor greenlet does this on each wake-up; request greenlets also call it between
        their own steps (a response's end, its accounting). gevent runs up to 50 queued
        callbacks before it looks at sockets again, and each of those can be a whole request's
        end-and-next-send; when many streams end together that held every stream's read for
        tens of milliseconds (long enough for two tokens to merge into one read). A pass that
        began less than PUMP_NS ago makes this a no-op (unless ``force``): under full load the
        reactor's own passes come that often, and extra ones would only cost. Returns how many
        sockets were ready."""
        if self.pumping or (not force and perf_counter_ns() - self.pass_ns < PUMP_NS):
            return 0
        self.pumping = True
        try:
            ready = self._pump()
        finally:
            self.pumping = False
        if ready:
            self.passes += 1
            self.reads += ready
        return ready

    def _pump(self) -> int:
        handlers = self.handlers
        # realtime - monotonic, read once per pass: kernel stamps -> perf_counter_ns scale
        self.pass_ns = pc = perf_counter_ns()
        if self.keep_late:
            self.pass_cpu = thread_time_ns()
        off = time_ns() - pc
        oldest = 0
        ready = self.ep.poll(0)
        self.pass_outs, self.pass_ends = len(ready), 0
        for fd, _ev in ready:
            entry = handlers.get(fd)
            if entry is None:
                continue
            recvmsg, h = entry
            try:
                data, anc, _flags, _addr = recvmsg(_RECV, _ANC)
            except BlockingIOError:
                continue
            except OSError as e:
                if h.error(e, perf_counter_ns()):
                    self._done(fd, h)
                continue
            if anc:
                sec, ns = _timespec(anc[0][2])
                t = sec * 1_000_000_000 + ns - off
            else:
                t = perf_counter_ns()
            if not oldest:
                oldest = t       # epoll lists sockets in the order they became ready
            try:
                end = h.feed(data, t) if data else h.eof(t)
            except Exception as e:  # a parser bug must not stop every other stream
                end = h.error(e, t)
            if end:
                self._done(fd, h)
        if oldest:
            self._health(oldest, len(ready))
        return len(ready)

    def _pump_native(self) -> int:
        """``_pump`` with the C pass: plain token reads never reach Python (fastread.c).

        The reads it hands to Python are handled in slices of SLICE_NS: when handling them takes
        longer (a bunch of responses ending together, each with its chained send, ~0.1 ms apiece
        on a 16-core Xeon VM), another C pass reads every socket in between, and what it hands
        over is queued behind. Without that, a pass of 100-250 ends held every other stream's
        read for 20-40 ms there, long enough to merge two or three of its tokens into one read."""
        self.pass_ns = perf_counter_ns()
        if self.keep_late:
            self.pass_cpu = thread_time_ns()
        lib, fr = self._lib, self._fr
        k = lib.fr_pass(fr)
        ready = lib.fr_ready(fr)
        oldest = lib.fr_oldest(fr)
        self.pass_outs, self.pass_ends, self.pass_nested = k, 0, 0
        if self.keep_late:
            self.pass_c_ns = perf_counter_ns() - self.pass_ns
            self.pass_max_call = lib.fr_max_call(fr)
        if k:
            handlers = self.handlers
            work = self._outs_list(k)
            slice_ns = self.slice_ns
            slice_end = perf_counter_ns() + slice_ns
            later: dict[int, int] = {}   # fd -> position of its last read a further pass queued
            i = 0
            while i < len(work):
                fd, n, t, data = work[i]
                i += 1
                entry = handlers.get(fd)
                if entry is None:
                    continue
                slot, h = entry
                if slot.tokens:
                    _drain(slot, h)   # tokens taken in place before this read come first
                try:
                    if n > 0:
                        end = h.feed(data, t)
                    elif n == 0:
                        end = h.eof(t)
                    else:
                        end = h.error(OSError(-n, os.strerror(-n)), t)
                except Exception as e:  # a parser bug must not stop every other stream
                    end = h.error(e, t)
                if end:
                    self._done(fd, h)
                elif later.get(fd, 0) <= i:   # no later read of this socket queued: in place again
                    resume = getattr(h, "resume", None)
                    st = resume() if resume is not None else None
                    if st is not None:
                        lib.fr_enable(fr, fd, *st)
                if slice_ns and i < len(work) and perf_counter_ns() > slice_end:
                    k = lib.fr_pass(fr)    # read every stream again before the rest
                    ready += lib.fr_ready(fr)
                    oldest = oldest or lib.fr_oldest(fr)
                    self.pass_nested += 1
                    self.nested_passes += 1
                    if self.keep_late:
                        self.pass_max_call = max(self.pass_max_call, lib.fr_max_call(fr))
                    if k:
                        self.pass_outs += k
                        base = len(work)
                        work.extend(self._outs_list(k))
                        for j in range(base, len(work)):
                            later[work[j][0]] = j + 1   # a socket's last queued read, 1-based
                    slice_end = perf_counter_ns() + slice_ns
        if oldest:
            self._health(oldest, ready)
        return ready

    def _outs_list(self, k: int) -> list[tuple[int, int, int, bytes | None]]:
        """The C pass's reads for Python as (fd, len, t, bytes): copied out of its buffers, which
        the next pass reuses."""
        outs, buf = self._outs, self._buf
        out = []
        for i in range(k):
            o = outs[i]
            n = o.len
            if n > 0:
                off = o.off
                out.append((o.fd, n, o.t, buf[off:off + n]))
            else:
                out.append((o.fd, n, o.t, None))
        return out

    def _health(self, oldest: int, ready: int) -> None:
        now = perf_counter_ns()
        lag = now - oldest
        if lag >= LATE_NS:
            self.lag_max_ns = max(self.lag_max_ns, lag)
            self.late_count += 1
            self._late_since += 1
            self._lag_since = max(self._lag_since, lag)
            if self.keep_late and len(self.late) < 100_000:
                # how much of the wait was the pass itself (reading and handling what it found),
                # how much CPU this thread had in it (less than the pass: not running), and how
                # many reads it handed to Python and responses it ended (each end sends a chained
                # request and wakes its greenlet)
                self.late.append((now, lag, ready, now - self.pass_ns, thread_time_ns() - self.pass_cpu,
                                  self.pass_outs, self.pass_ends, self.pass_c_ns, self.pass_nested,
                                  self.pass_max_call))
                if self.switch_log is not None:
                    self.holders.append((now, lag, *self.switch_log.holder(oldest, self.pass_ns)))

    def take_late(self) -> tuple[int, int]:
        """(late read passes, longest wait in ns) since the previous call."""
        out = (self._late_since, self._lag_since)
        self._late_since = self._lag_since = 0
        return out

    def close(self) -> None:
        self.closed = True
        log.info("stream reader: %d reads in %d passes", self.reads, self.passes)
        if self.late_count:
            log.warning("the stream reader fell behind %d time(s) (data waited up to %.1f ms in the kernel "
                        "before it was read). Token times are kernel stamps and stay exact unless two tokens "
                        "of one stream queued together; if this grows, this generator process is near its "
                        "limit: use more processes (--processes N)", self.late_count, self.lag_max_ns / 1e6)
        path = os.environ.get("SLM_READER_LAG_LOG")   # diagnosis: benchmarks/generator_fidelity.py --diag
        if path and self.late:
            with open(path, "a") as f:
                f.writelines(" ".join(map(str, row)) + "\n" for row in self.late)
        if self.switch_log is not None:
            self.switch_log.stop()
            if path and self.holders:
                with open(path + ".holders", "a") as f:
                    f.writelines(f"{t} {lag} {ns} {name}\n" for t, lag, ns, name in self.holders)
        if self.gc_pauses is not None:
            self.gc_pauses.stop()
            if path and self.gc_pauses.long:
                with open(path + ".gc", "a") as f:
                    f.writelines(f"{g} {ns}\n" for g, ns in self.gc_pauses.long)
        stacks = self.stalls
        if path and stacks:
            with open(path + ".stacks", "a") as f:
                f.writelines(f"{n} x\n{st}\n\n" for st, n in stacks.most_common(30))
        self.watcher.stop()
        self.watcher.close()
        if self._fr is not None:
            for slot, h in self.handlers.values():
                _drain(slot, h)
            self.handlers.clear()
            self._slots.clear()
            self._lib.fr_free(self._fr)
            self._fr = None
        self.ep.close()


def _drain(slot, h) -> None:
    """Hand the tokens the C pass took for ``h`` over to it and stop the in-place path."""
    n = slot.tokens
    if n:
        h.absorb(slot.first, slot.last, n, slot.itl[:slot.n_itl])
    slot.on = slot.tokens = slot.n_itl = slot.first = 0


def _start_watchdog(reactor: Reactor, ms: float) -> None:
    """Diagnosis only (SLM_READER_WATCHDOG_MS): when the reactor has not run for ``ms`` while
    streams are open, count every thread's innermost frames, to find what holds the process."""
    import collections
    import sys
    import traceback

    real_sleep = get_original("time", "sleep")
    reactor.stalls = collections.Counter()
    get_ident = get_original("_thread", "get_ident")

    def watch():
        me = get_ident()
        while True:
            real_sleep(ms / 4e3)
            if reactor.handlers and reactor.pass_ns and perf_counter_ns() - reactor.pass_ns > ms * 1e6:
                for tid, frame in sys._current_frames().items():
                    if tid == me:
                        continue
                    st = "".join(traceback.format_stack(frame)[-10:])
                    if "task_queue_get" in st:
                        continue   # an idle gevent pool thread
                    reactor.stalls[f"thread {tid}:\n{st}"] += 1

    get_original("_thread", "start_new_thread")(watch, ())   # an OS thread, not a greenlet
