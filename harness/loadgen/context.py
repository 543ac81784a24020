"""What the Locust users of one generator process share: the plan, client, picker, collector.

Stored on ``environment.slm``. A worker builds it from the plan message the master sends, a
local run from the scenario directly; users read the clock against ``t0`` to know the cell and
phase, so nothing is sent per request.
"""

from __future__ import annotations

import gc
import os
import sys
from dataclasses import dataclass, field
from functools import partial
from time import perf_counter_ns

from gevent import get_hub

from harness.loadgen.collector import CellInfo, Collector
from harness.loadgen.breaker import picker_for
from harness.loadgen.replicas import ReplicaPicker
from harness.loadgen.stream import Chain, StreamClient, StreamResult
from harness.protocols import protocol_for
from harness.scenario.models import Scenario
from harness.workload.arrivals import Arrivals
from harness.workload.plan import Plan, Segment, build_plan
from harness.workload.requests import RequestFactory


@dataclass
class PlanMessage:
    """What the master tells every worker (msgpack-able via :meth:`to_wire`)."""

    scenario: dict
    urls: list[str]
    replicas: int
    levels: list[float]
    run_id: str
    t0_ns: int                   # wall-clock start of the plan
    open_loop_streams: int = 1   # open-loop users across all workers (rate is split among them)
    repeat: int = 0              # which repeat of (replicas, level) this is (names the cell)

    def to_wire(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_wire(cls, d: dict) -> "PlanMessage":
        return cls(**d)


@dataclass
class LoadContext:
    scenario: Scenario
    plan: Plan
    run_id: str
    urls: list[str]
    client: StreamClient
    picker: ReplicaPicker
    collector: Collector
    stream_index: int = 0
    open_loop_streams: int = 1
    t0_pc: int = 0
    stopped: bool = False
    max_measure: int | None = None       # this process's share of load.max_requests per cell
    _measure_sent: dict = field(default_factory=dict)
    exhausted: set = field(default_factory=set)   # cells whose measured requests are all sent
    _factories: dict = field(default_factory=dict)
    _windows: dict = field(default_factory=dict)
    _next_stream: int = 0
    _prepared: dict = field(default_factory=dict)   # RequestFactory -> its next (spec, body)
    _frozen_pc: int = 0                  # when the heap was last frozen (FREEZE_NS)
    chained: bool = True                 # closed loops send their next request from the reader (Chain)
    input_error: Exception | None = None  # bad input met by a user (a dataset record): stops the run

    @classmethod
    def build(cls, msg: PlanMessage, *, events=None, forward: bool = False, record_sink=None,
              stream_index: int = 0) -> "LoadContext":
        from harness.protocols.access import Access
        from harness.protocols.probe import resolve

        sc = Scenario.model_validate(msg.scenario) if isinstance(msg.scenario, dict) else msg.scenario
        sc = resolve(sc, list(msg.urls))   # protocol auto (normally resolved before the plan was sent)
        proto = protocol_for(sc.target.protocol, sc.target.model, sc.workload.sampling,
                             sc.workload.system_prompt)
        client = StreamClient(proto, request_timeout_s=sc.target.request_timeout_s,
                              connect_timeout_s=sc.target.connect_timeout_s,
                              access=Access.from_target(sc.target))
        col = Collector(record_sink=record_sink, events=events, protocol=proto.name, path=proto.path,
                        forward=forward)
        col.reader_health = client.take_late
        plan = build_plan(sc.load, list(msg.levels), msg.replicas, repeat=msg.repeat)
        # the plan's wall-clock start on this process's perf counter, through the collector's own
        # offset: a record's intended_ns falls in a window exactly when its phase says so
        t0_pc = msg.t0_ns - col.wall_offset_ns
        share = None
        if sc.load.max_requests:
            w = max(1, msg.open_loop_streams)
            share = sc.load.max_requests // w + (1 if stream_index % w < sc.load.max_requests % w else 0)
        ctx = cls(sc, plan, msg.run_id, list(msg.urls), client, picker_for(list(msg.urls), sc.target),
                  col, stream_index=stream_index, open_loop_streams=msg.open_loop_streams, t0_pc=t0_pc,
                  max_measure=share, chained=os.environ.get("SLM_CHAIN", "1") != "0")
        settle_heap()
        return ctx

    @property
    def pacer(self):
        """Starts open-loop requests at their intended times (the client's
        :class:`~harness.loadgen.pacer.Pacer`)."""
        return self.client.pacer

    # ------------------------------------------------------------------------------------------
    def segment_at(self, pc: int) -> Segment | None:
        t = (pc - self.t0_pc) / 1e9
        if t < 0:
            return self.plan.segments[0] if self.plan.segments else None
        return self.plan.at(t)

    def ended(self, pc: int | None = None) -> bool:
        """No request is to start any more: the plan is over, or its last cell is exhausted."""
        if self.stopped or (((pc or perf_counter_ns()) - self.t0_pc) / 1e9) >= self.plan.total_s:
            return True
        return bool(self.exhausted) and self.plan.segments[-1].cell in self.exhausted

    def new_stream(self) -> int:
        """A distinct seed stream for each user of this process (reproducible per worker)."""
        k = self.stream_index * 100_000 + self._next_stream
        self._next_stream += 1
        return k

    def factory(self, stream: int) -> RequestFactory:
        f = self._factories.get(stream)
        if f is None:
            if self.scenario.workload.sessions is not None:
                from harness.workload.sessions import SessionFactory

                f = self._factories[stream] = SessionFactory(self.scenario.workload, stream)
            else:
                f = self._factories[stream] = RequestFactory(self.scenario.workload, stream)
        return f

    def arrivals(self, stream: int) -> Arrivals:
        ld = self.scenario.load
        return Arrivals(ld.arrival, self.scenario.workload.seed, stream, ld.burstiness)

    def one_request(self, factory: RequestFactory, seg: Segment | None, intended_pc: int | None = None,
                    chain: Chain | None = None, pin: dict | None = None, prepared: tuple | None = None):
        """Send one request now and account it under ``seg``'s cell and phase.

        Returns the :class:`StreamResult`, or None without sending when ``load.max_requests``
        measured requests of this cell have been sent (this process's share): the cell then ends
        early. The accounting (record, histograms, Locust events) runs as a hub callback, after
        this greenlet has moved on: a closed-loop stream sends its next request first, so a wave
        of streams ending together does not delay each other's next send by everyone's
        accounting. ``collector.inflight`` drops only once the request is accounted. (A separate
        low-priority accountant greenlet measured worse at 1024 streams: 98.7/99.0% of ideal
        against 99.2/99.3% for this, docs/benchmarks/generator_fidelity.md.)

        A closed loop passes its :class:`Chain` (from :meth:`chain`): the reader then sends the
        stream's next request as soon as this one's end is read, and the next call collects that
        request (``seg`` is then ignored: the chain chose it when it sent).

        ``prepared``: this request's (spec, body) from :meth:`take_prepared`, drawn by an open
        loop before the intended time, so that drawing it is not between that time and the send.
        """
        col = self.collector
        pending = chain.pending if chain is not None else None
        if pending is not None:        # sent by the reader already: collect it
            spec, seg, url = pending.spec, pending.tag, pending.ep.url
            self.picker.hold(url)
            run = partial(self.client.wait, chain)
        else:
            if not self._may_send(seg):
                if prepared is not None and factory not in self._prepared:
                    self._prepared[factory] = prepared     # unsent: the next request's after all
                return None
            spec, body = prepared or self._prepared.pop(factory, None) or self._prepare(factory)
            url = pin.get(spec.session) if pin is not None and (spec.turn or 0) > 1 else None
            if url is not None:
                # a sticky session's later turn: the replica of its first turn, whatever the balance
                self.picker.hold(url)
                sent = getattr(self.picker, "_sent", None)
                if sent is not None:
                    sent(url)
            else:
                url = self.picker.acquire()
                if pin is not None:
                    pin.clear()
                    pin[spec.session] = url
            run = partial(self.client.send, url, spec, body, chain)
        left_out = getattr(self.picker, "left_out", None)
        skipped = [u for u in left_out() if u != url] if left_out is not None else ()
        col.inflight += 1
        try:
            res = run()
        except BaseException:
            col.inflight -= 1
            raise
        finally:
            self.picker.release(url)
        if res.error_class == "connect":
            self.picker.mark_down(url)
        outcome = getattr(self.picker, "outcome", None)
        tripped = outcome(url, res.error_class) if outcome is not None else False
        get_hub().loop.run_callback(self._account, res, spec, seg, intended_pc, factory, url, tripped,
                                    skipped)
        return res

    def _can_send(self, seg: Segment) -> bool:
        """False when ``seg``'s cell may send no more (its share of ``load.max_requests`` is
        sent: the cell is then marked exhausted); counts nothing."""
        if seg.phase == "measure" and self.max_measure is not None:
            if self._measure_sent.get(seg.cell, 0) >= self.max_measure:
                self.exhausted.add(seg.cell)
                return False
        return seg.cell not in self.exhausted

    def _count_sent(self, seg: Segment) -> None:
        """Count a request sent under ``seg`` against its cell's share of ``load.max_requests``."""
        if seg.phase == "measure" and self.max_measure is not None:
            self._measure_sent[seg.cell] = self._measure_sent.get(seg.cell, 0) + 1

    def _may_send(self, seg: Segment) -> bool:
        """:meth:`_can_send`, and counts the request when it may."""
        if not self._can_send(seg):
            return False
        self._count_sent(seg)
        return True

    def chain(self, factory: RequestFactory) -> Chain | None:
        """A closed-loop stream's :class:`Chain` (None with ``SLM_CHAIN=0``, for comparison)."""
        if not self.chained:
            return None
        return Chain(lambda url: self._chained(factory, url))

    def _chained(self, factory: RequestFactory, url: str):
        """The chain's next request, at the moment a response from ``url`` ends: what the closed
        loop would send next, or None where it would not send on this socket (the plan is over,
        the cell is exhausted, or the balance policy would pick another replica)."""
        now = perf_counter_ns()
        if self.ended(now):
            return None
        seg = self.segment_at(now)
        # the cell first: ``prefers`` advances a round robin's rotation, which a request that is
        # then not sent must not do (the next acquire would skip a replica)
        if seg is None or not self._can_send(seg) or not self.picker.prefers(url):
            return None
        self._count_sent(seg)
        spec, body = self._prepared.pop(factory, None) or self._prepare(factory)
        return spec, body, seg

    def take_prepared(self, factory: RequestFactory) -> tuple:
        """``factory``'s next (spec, body): the one the accounting drew ahead, or drawn now."""
        return self._prepared.pop(factory, None) or self._prepare(factory)

    def _prepare(self, factory: RequestFactory) -> tuple:
        spec = factory.next()
        return spec, self.client.protocol.body(spec)

    def _account(self, res: StreamResult, spec, seg: Segment, intended_pc: int | None,
                 factory: RequestFactory | None = None, url: str | None = None,
                 tripped: bool = False, skipped=()) -> None:
        col = self.collector
        pacer = self.client._pacer_
        if pacer is not None:
            pacer.poll()     # a send due now goes before this (a wave of ends runs back to back)
        self.client.pump()   # reads first: the accounting below is the slow part of a request
        try:
            phase = seg.phase
            if intended_pc is None:
                # closed loop: the phase is the one at the moment the request was actually sent;
                # one sent just after the plan's end is after every window: cool-down
                now_seg = self.segment_at(res.start_pc)
                seg, phase = (now_seg, now_seg.phase) if now_seg is not None else (seg, "cooldown")
            info = CellInfo(self.run_id, seg.cell, self.plan.replicas, seg.level, phase)
            col.add(res, spec, info, intended_pc if intended_pc is not None else res.start_pc,
                    self.measure_window_pc(seg.cell))
            if url is not None:
                ps = col.phase_stats(seg.cell, phase)
                ps.count_replica(url, res.error_class, tripped)
                if skipped:
                    ps.count_skipped(skipped)
        finally:
            col.inflight -= 1
            now = perf_counter_ns()
            if now - self._frozen_pc >= FREEZE_NS:
                self._frozen_pc = now
                gc.freeze()
            # draw this stream's next request now, off the path from a response's end to the next
            # send (a closed loop's throughput at 1024 streams is lost on that path); the factory's
            # sequence is unchanged, only drawn one request early
            if factory is not None and factory not in self._prepared:
                self._prepared[factory] = self._prepare(factory)

    def measure_window_pc(self, cell: str) -> tuple[int, int] | None:
        w = self._windows.get(cell, False)
        if w is False:
            span = self.plan.window(cell, "measure")
            w = self._windows[cell] = (None if span is None else
                                       (self.t0_pc + int(span[0] * 1e9), self.t0_pc + int(span[1] * 1e9)))
        return w


#: How often the accounting moves every object alive out of the cyclic collector's reach. A
#: request's objects (its result, response, timer, greenlet frames) live for its whole stream, a
#: second or more: long enough to be promoted and then walked by every older collection, which at
#: 1024 streams made collections of 2-10 ms, each holding every stream's read. Frozen, they are
#: walked at most for the 100 ms before the next freeze. Freezing costs nothing (lists spliced),
#: and objects still die by reference counting; only garbage in reference cycles could no longer
#: be found, and a request makes none (tests/test_loadgen_stream.py checks).
FREEZE_NS = 100_000_000


def settle_heap() -> None:
    """Move every object alive now (Locust, gevent, pandas, pyarrow: ~10^5-10^6 of them) out of
    the cyclic collector's reach before the load starts.

    A full collection walks every tracked object; with the imported libraries that is tens of
    milliseconds during which no greenlet reads its socket, which shows up as a late token on
    every open stream (an ITL p99 of 20-30 ms where the server sent every 10 ms). Frozen objects
    are never scanned again. During the run the accounting freezes again every FREEZE_NS; what a
    finished run left in reference cycles is unfrozen and collected here, when the next one starts.

    Also: the GIL switch interval goes down to 0.5 ms, so that when a background thread (the
    records writer) holds the interpreter, the event loop gets it back within that, not 5 ms.
    """
    gc.unfreeze()   # a previous run's objects (FREEZE_NS froze them) may be garbage now: found here
    gc.collect()
    gc.freeze()
    sys.setswitchinterval(0.0005)
    if os.environ.get("SLM_GC") == "0":   # diagnosis: no automatic collections at all
        gc.disable()
