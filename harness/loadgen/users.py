"""Locust users: a closed-loop stream per user, or one open-loop arrival process per user.

Both read ``environment.slm`` (:class:`LoadContext`). A closed-loop user sends its next request as
soon as the previous one ends; an open-loop user sends at intended times from its arrival
process and never waits for responses, so queueing shows up in latency, measured from the
intended send time (no coordinated omission).
"""

from __future__ import annotations

from time import perf_counter_ns

import gevent
from gevent import Greenlet
from gevent.lock import Semaphore
from gevent.pool import Group
from locust import User, constant, task
from locust.exception import StopUser

from harness.loadgen.context import LoadContext


def _sleep_until(pc: int) -> None:
    d = (pc - perf_counter_ns()) / 1e9
    if d > 0:
        gevent.sleep(d)


_STEP_NS = 10_000_000
#: how long before its intended time the open loop prepares a request (next arrival, cell, its
#: greenlet) and hands it to the pacer, so that work is not between the wake-up and the send
LEAD_NS = 2_000_000


def _next_arrival(ctx: LoadContext, t_pc: int, need: float, share: int) -> int | None:
    """The instant after ``t_pc`` where the integral of this stream's rate reaches ``need``.

    Exact jumps inside constant-rate segments, 10 ms steps (midpoint rate) inside ramps; None
    when the plan ends first.
    """
    t0 = ctx.t0_pc
    while not ctx.ended(t_pc):
        seg = ctx.segment_at(t_pc)
        if seg is None:
            return None
        seg_end = t0 + int(seg.end_s * 1e9)
        if seg_end <= t_pc:
            t_pc = seg_end + 1
            continue
        if seg.from_value == seg.to_value:
            rate = seg.to_value / share
            if rate > 0:
                dt = int(need / rate * 1e9)
                if t_pc + dt < seg_end:
                    return t_pc + dt
                need -= rate * (seg_end - t_pc) / 1e9
            t_pc = seg_end
            continue
        step = min(_STEP_NS, seg_end - t_pc)
        rate = seg.value_at((t_pc + step / 2 - t0) / 1e9) / share
        if rate > 0 and rate * step / 1e9 >= need:
            return t_pc + int(need / rate * 1e9)
        need -= rate * step / 1e9
        t_pc += step
    return None


class _LLMUser(User):
    abstract = True
    wait_time = constant(0)

    def _ctx(self) -> LoadContext | None:
        ctx = getattr(self.environment, "slm", None)
        while ctx is None:          # a worker spawned before the plan arrived
            gevent.sleep(0.05)
            ctx = getattr(self.environment, "slm", None)
        return ctx

    def _factory(self, ctx: LoadContext, stream: int):
        """The stream's request factory; bad input (a dataset record) stops this user once and
        is kept on the context for the driver to report, instead of a task retried forever."""
        from harness.errors import InputError

        try:
            return ctx.factory(stream)
        except InputError as e:
            if getattr(ctx, "input_error", None) is None:
                ctx.input_error = e
            raise StopUser() from None


class ClosedLoopUser(_LLMUser):
    """One stream: request, read to the end, repeat (concurrency = number of users)."""

    abstract = False

    @task
    def stream(self) -> None:
        ctx = self._ctx()
        factory = self._factory(ctx, ctx.new_stream())
        if ctx.scenario.workload.sessions is not None:
            self._sessions(ctx, factory)
        chain = ctx.chain(factory)   # the reader sends the next request the moment one ends
        _sleep_until(ctx.t0_pc)
        while True:
            if chain is None or chain.pending is None:
                now = perf_counter_ns()
                seg = None if ctx.ended(now) else ctx.segment_at(now)
                if seg is None:
                    gevent.sleep(0.05)   # the plan is over: send nothing new, let others drain
                    continue
            rec = ctx.one_request(factory, seg, chain=chain)
            if rec is None:
                gevent.sleep(0.05)   # this cell's max_requests are sent: wait for the next cell
            elif rec.error_class == "connect":
                gevent.sleep(0.05)   # no replica answers: do not spin on refusals

    def _sessions(self, ctx: LoadContext, factory) -> None:
        """Conversations: each turn waits for the previous answer, then the think time."""
        sessions = ctx.scenario.workload.sessions
        pin: dict | None = {} if sessions.sticky else None
        _sleep_until(ctx.t0_pc)
        while True:
            now = perf_counter_ns()
            seg = None if ctx.ended(now) else ctx.segment_at(now)
            if seg is None:
                gevent.sleep(0.05)
                continue
            rec = ctx.one_request(factory, seg, pin=pin)
            if rec is None or rec.error_class == "connect":
                gevent.sleep(0.05)
                continue
            think = factory.think_s()
            if think > 0:
                gevent.sleep(think)


def _in_flight_cap(ctx: LoadContext, share: int) -> Semaphore | None:
    """This stream's part of ``load.max_in_flight`` (split evenly over the open-loop streams of
    all workers, at least one each), or None without a cap."""
    cap = ctx.scenario.load.max_in_flight
    if not cap:
        return None
    k = ctx.stream_index % share
    return Semaphore(max(1, cap // share + (1 if k < cap % share else 0)))


def _send_at(ctx, group, sem, factory, seg, intended_pc: int, queued: bool) -> bool:
    """Start one open-loop request at ``intended_pc`` (the pacer switches into it then), through
    the in-flight cap if any.

    Returns whether the cap is holding requests back, so a request sent late because the cap
    was full (not merely one found locked) is counted once in the phase's ``held``.
    """
    prepared = ctx.take_prepared(factory)
    if sem is None:
        _start_at(ctx, group, intended_pc, ctx.one_request, factory, seg, intended_pc, prepared=prepared)
        return queued
    ctx.pacer.sleep_until(intended_pc)   # the cap is judged at the intended time, not before
    queued = sem.locked() or (queued and perf_counter_ns() > intended_pc)
    if queued:
        ctx.collector.phase_stats(seg.cell, seg.phase).held += 1
    sem.acquire()
    _start_at(ctx, group, intended_pc, _capped, ctx, sem, factory, seg, intended_pc, prepared)
    return queued


def _start_at(ctx, group, pc: int, fn, *args, **kwargs) -> None:
    """``fn(*args, **kwargs)`` in a greenlet of ``group`` that the pacer starts at ``pc`` (at
    once when that is past): straight from its wake-up, not queued behind other callbacks."""
    g = Greenlet(fn, *args, **kwargs)
    group.add(g)
    ctx.pacer.at(pc, lambda: g.dead or g.switch())   # dead: killed before its time came


def _capped(ctx: LoadContext, sem: Semaphore, factory, seg, intended_pc: int, prepared: tuple) -> None:
    try:
        ctx.one_request(factory, seg, intended_pc, prepared=prepared)
    finally:
        sem.release()


def _open_session(ctx: LoadContext, stream: int, n: int, seg, intended_pc: int) -> None:
    """One conversation started by an open loop (sessions per second): its first turn at the
    arrival's intended time, each later turn when the previous answer and the think time are
    over (its intended time: the end of the think time)."""
    from harness.workload.sessions import SessionFactory

    sessions = ctx.scenario.workload.sessions
    factory = SessionFactory(ctx.scenario.workload, stream, started=n)
    pin: dict | None = {} if sessions.sticky else None
    pc = intended_pc
    try:
        for turn in range(sessions.turns):
            if turn:
                now = perf_counter_ns()
                seg = None if ctx.ended(now) else ctx.segment_at(now)
                if seg is None:
                    break
            res = ctx.one_request(factory, seg, pc, pin=pin)
            if res is None or res.error_class is not None:
                break
            think = factory.think_s()
            if think > 0:
                gevent.sleep(think)
            pc = perf_counter_ns()
    finally:
        gevent.sleep(0)          # let the last turn's accounting run, then drop its draw-ahead
        ctx._prepared.pop(factory, None)


class OpenLoopUser(_LLMUser):
    """One arrival process at ``rate / open_loop_streams`` req/s; each request is its own greenlet.

    With ``load.max_in_flight`` an arrival that finds the cap full waits for a free slot (FIFO,
    the schedule keeps running); it is counted as held back and its latency still runs from its
    intended send time, so the cap never hides queueing (no coordinated omission).
    """

    abstract = False

    @task
    def arrivals(self) -> None:
        ctx = self._ctx()
        if ctx.scenario.workload.trace is not None:
            self._replay(ctx)
        stream = ctx.new_stream()
        factory = self._factory(ctx, stream)
        arr = ctx.arrivals(stream)
        share = max(1, ctx.open_loop_streams)
        group = Group()
        # constant arrivals: stagger the streams of all workers so their sum is evenly spaced
        total0 = ctx.plan.segments[0].value_at(0.0)
        k = ctx.stream_index % share
        offset_s = k / total0 if arr.kind == "constant" and total0 > 0 else 0.0
        next_pc = ctx.t0_pc + int(offset_s * 1e9)
        need = 0.0 if arr.kind == "constant" else arr.unit()   # constant: first send at the start
        sem = _in_flight_cap(ctx, share)
        queued = False       # the previous arrival waited for the cap: later ones queue behind it
        pacer = ctx.pacer
        sessions_started = 0
        while True:
            next_pc = _next_arrival(ctx, next_pc, need, share)
            need = arr.unit()
            if next_pc is None:
                break
            seg = ctx.segment_at(next_pc)
            pacer.sleep_until(next_pc - LEAD_NS)
            if seg.cell in ctx.exhausted:
                continue
            if ctx.scenario.workload.sessions is not None:
                sessions_started += 1
                _start_at(ctx, group, next_pc, _open_session, ctx, stream, sessions_started, seg, next_pc)
                continue
            queued = _send_at(ctx, group, sem, factory, seg, next_pc, queued)
        group.join()
        while True:
            gevent.sleep(1.0)

    def _replay(self, ctx: LoadContext) -> None:
        """Send this stream's share of a trace (every ``share``-th entry) at its intended times."""
        from harness.workload.trace import TraceFactory, load_trace

        share = max(1, ctx.open_loop_streams)
        k = ctx.stream_index % share
        ctx.new_stream()
        tr = ctx.scenario.workload.trace
        factory = TraceFactory(tr, load_trace(tr), ctx.scenario.workload.seed, k, share)
        group = Group()
        sem = _in_flight_cap(ctx, share)
        queued = False
        for e in factory.entries:
            pc = ctx.t0_pc + int(e.offset_s * 1e9)
            if ctx.ended(pc):
                break
            seg = ctx.segment_at(pc)
            ctx.pacer.sleep_until(pc - LEAD_NS)
            if seg is None or seg.cell in ctx.exhausted:
                break
            queued = _send_at(ctx, group, sem, factory, seg, pc, queued)
        group.join()
        while True:
            gevent.sleep(1.0)

