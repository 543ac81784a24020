"""Per-replica scheduling: continuous batching with a step-time model, or a fixed schedule.

Time is whatever the timer says (real monotonic ns when serving, virtual ns in
:mod:`harness.emulator.simulate`), so the same code serves HTTP and runs calibration offline.
A step starts where the previous one ended (never at "now"), so late writes show up as lateness
in the ground truth instead of slowing the model down.
"""

from __future__ import annotations

import logging
import random
from collections import deque
from typing import Callable, Protocol

from harness.emulator.gpu import SharedGpu
from harness.emulator.native import EM_CANCELLED, EM_FIRST, EM_IDLE, EM_PARTIAL, EM_SLICE, F_CANCEL, F_PY, NEVER
from harness.emulator.profile import FixedTiming, Profile, RooflineTiming
from harness.emulator.timer import SLICE_NS

log = logging.getLogger(__name__)


class Sink(Protocol):
    def token(self, seq: "Seq", due_ns: int, last: bool) -> None: ...


class Timer(Protocol):
    def at(self, due_ns: int, fn: Callable, arg) -> None: ...
    def now_ns(self) -> int: ...


class Seq:
    """One request inside a replica."""

    __slots__ = ("rid", "input_tokens", "max_new", "generated", "prefill_left", "sink",
                 "received_ns", "queued_ns", "started_ns", "cancelled", "finished", "replica", "sid", "first_ns")

    def __init__(self, rid: int, input_tokens: int, max_new: int, sink: Sink, received_ns: int):
        self.rid = rid
        self.input_tokens = input_tokens
        self.max_new = max_new
        self.generated = 0
        self.prefill_left = input_tokens
        self.sink = sink
        self.received_ns = received_ns
        self.queued_ns = received_ns
        self.started_ns = 0
        self.cancelled = False
        self.finished = False
        self.replica = -1
        self.sid = -1        # its stream in the C token writer while queued there (NativeFixedReplica)
        self.first_ns = 0    # when its first token was due

    @property
    def reserved_tokens(self) -> int:
        return self.input_tokens + self.max_new


class NullStats:
    """Metric hooks the engine calls; :class:`harness.emulator.metrics.TgiMetrics` implements them."""

    def queue(self, size: int) -> None: ...
    def batch(self, size: int, max_tokens: int) -> None: ...
    def step(self, method: str, duration_s: float, size: int, concat: bool = False) -> None: ...
    def finished(self, seq: Seq, now_ns: int) -> None: ...


class StepModel:
    """Step time of one replica: host part + GPU part stretched by the other replicas' use."""

    def __init__(self, profile: Profile):
        t = profile.timing
        assert isinstance(t, RooflineTiming)
        self.t = t
        m, g = profile.model, profile.gpu
        bw = g.mem_bandwidth_gb_s * 1e9
        self.weights_ms = m.weight_bytes / bw * 1e3
        self.kv_ms_per_token = m.kv_bytes_per_token / bw * 1e3
        self.prefill_ms_per_token = 2.0 * m.params / (g.peak_tflops * 1e12 * g.mfu) * 1e3

    def host_ms(self, batch: int, prefill_tokens: int) -> float:
        t = self.t
        return (t.host_step_ms + t.host_per_seq_ms * batch + t.host_per_seq2_ms * batch * batch
                + t.host_per_prefill_token_ms * prefill_tokens) / t.host_speed

    def gpu_ms(self, batch: int, prefill_tokens: int, ctx_tokens: int, pairs: int = 0) -> float:
        t = self.t
        roofline = self.weights_ms + self.kv_ms_per_token * ctx_tokens + self.prefill_ms_per_token * prefill_tokens
        return (t.gpu_step_ms + t.gpu_per_seq_ms * batch + t.gpu_per_prefill_token_ms * prefill_tokens + roofline
                + t.gpu_per_mpair_ms * pairs * 1e-6)

    def step_ms(self, batch: int, prefill_tokens: int, ctx_tokens: int,
                others_util: float, others_busy: int, host_scale: float = 1.0, pairs: int = 0) -> tuple[float, float]:
        """(step duration, GPU busy time) in ms; ``host_scale`` stretches this step's host part (jitter),
        ``pairs`` are the step's dense-mask attention pairs (query tokens x cache tokens read).

        GPU busy time is the step's GPU work plus the context-switch cost of time-slicing with the
        other busy replicas; waiting for them (processor sharing) stretches the step but is not
        this replica's busy time."""
        host = self.host_ms(batch, prefill_tokens) * host_scale
        busy = self.gpu_ms(batch, prefill_tokens, ctx_tokens, pairs) * (1.0 + self.t.switch_overhead * others_busy)
        return host + busy / (1.0 - min(others_util, self.t.contention_cap)), busy


class BatchingReplica:
    """TGI-style router queue and continuous batcher for one replica."""

    def __init__(self, index: int, profile: Profile, gpu: SharedGpu, timer: Timer, stats=None):
        self.index = index
        self.limits = profile.limits
        self.gpu = gpu
        self.timer = timer
        self.stats = stats or NullStats()
        self.model = StepModel(profile)
        speed = profile.timing.host_speed      # the CPU-side costs below run on the host's CPU
        self.admission_ns = int(profile.timing.admission_ms / speed * 1e6)
        self.paged = profile.limits.kv_admission == "paged"
        self.kv_total = profile.limits.max_batch_total_tokens
        self.frontend_ms = profile.timing.frontend_ms / speed
        self.frontend_per_seq = profile.timing.frontend_per_seq
        self._frontend: list[list] = []     # [work left in ms, seq] being taken in
        self._frontend_t = 0
        self._frontend_r = 1.0
        self._frontend_gen = 0
        self.frontend_fifo = profile.timing.frontend_fifo
        self._frontend_free = 0             # fifo: when the front end is done with what it has
        # CUDA graphs captured on first use (transformers): the padded shapes this replica has a graph for
        self.graph_q = profile.limits.graph_q_interval
        self.graph_kv = profile.limits.graph_kv_interval
        self.graph_capture_ms = profile.timing.graph_capture_ms / speed
        self.graphs: set[tuple[int, int]] = set()
        self.step_jitter = profile.timing.step_jitter
        self._rng = random.Random(index)
        self.captures = 0
        self.queue: deque[Seq] = deque()
        self.prefilling: list[Seq] = []
        self.running: list[Seq] = []
        self.reserved = 0
        self.stepping = False
        self._emit: list[Seq] = []
        self._completing: list[Seq] = []
        self._step_method = "decode"
        self._step_started = 0
        self.steps = 0
        self.last_step_ms = 0.0
        self.last_batch = 0

    def active(self) -> int:
        return len(self.queue) + len(self.prefilling) + len(self.running)

    def cancel(self, seq: Seq) -> None:
        """The client went away: the stream's next turn drops it."""
        seq.cancelled = True

    def submit(self, seq: Seq, now_ns: int) -> None:
        seq.replica = self.index
        if self.frontend_ms and self.frontend_fifo:   # one after another, each handed over when done
            self._frontend_free = max(now_ns, self._frontend_free) + int(
                self.frontend_ms / self._frontend_rate() * 1e6)
            self.timer.at(self._frontend_free + self.admission_ns, self._enqueue, seq)
        elif self.frontend_ms:    # the front end takes it in, sharing its one thread with the others
            self._frontend_advance(now_ns)
            self._frontend.append([self.frontend_ms, seq])
            self._frontend_arm(now_ns)
        elif self.admission_ns:   # parsing, tokenising, validating: before the queue, in parallel
            self.timer.at(now_ns + self.admission_ns, self._enqueue, seq)
        else:
            self._enqueue(seq, now_ns)

    # The front end is processor sharing: one thread interleaves every request it is taking in
    # (an event loop), so a burst of k requests is taken in together after about k * frontend_ms,
    # and the more sequences are streaming, the slower it goes (it writes their tokens too).
    def _frontend_rate(self) -> float:
        return 1.0 / (1.0 + self.frontend_per_seq * len(self.running))

    def _frontend_advance(self, now_ns: int) -> None:
        if self._frontend:
            done_ms = (now_ns - self._frontend_t) / 1e6 * self._frontend_r / len(self._frontend)
            for job in self._frontend:
                job[0] -= done_ms
        self._frontend_t = now_ns

    def _frontend_arm(self, now_ns: int) -> None:
        self._frontend_gen += 1
        if self._frontend:
            self._frontend_r = self._frontend_rate()
            left = min(job[0] for job in self._frontend)
            due = now_ns + max(0, int(left * len(self._frontend) / self._frontend_r * 1e6))
            self.timer.at(due, self._frontend_done, self._frontend_gen)

    def _frontend_done(self, gen: int, now_ns: int) -> None:
        if gen != self._frontend_gen:
            return                # an arrival since rescheduled it
        self._frontend_advance(now_ns)
        done = [job[1] for job in self._frontend if job[0] <= 1e-6]
        self._frontend = [job for job in self._frontend if job[0] > 1e-6]
        for seq in done:
            if self.admission_ns:
                self.timer.at(now_ns + self.admission_ns, self._enqueue, seq)
            else:
                self._enqueue(seq, now_ns)
        self._frontend_arm(now_ns)

    def _enqueue(self, seq: Seq, now_ns: int) -> None:
        if seq.cancelled:
            return
        seq.queued_ns = now_ns
        self.queue.append(seq)
        self.stats.queue(len(self.queue))
        if not self.stepping:
            self._start_step(now_ns)

    def _admit(self, now_ns: int) -> None:
        lim = self.limits
        max_size = lim.max_batch_size or 1 << 30
        q = self.queue
        while q:
            s = q[0]
            if s.cancelled:
                q.popleft()
                continue
            if len(self.prefilling) + len(self.running) >= max_size:
                break
            if not self.paged and self.reserved + s.reserved_tokens > self.kv_total:
                break
            q.popleft()
            s.started_ns = now_ns
            self.reserved += s.reserved_tokens
            self.prefilling.append(s)
        self.stats.queue(len(q))

    def _release(self, s: Seq) -> None:
        self.reserved -= s.reserved_tokens

    def _start_step(self, t_ns: int) -> None:
        if any(s.cancelled for s in self.running):
            for s in self.running:
                if s.cancelled:
                    self._release(s)
            self.running = [s for s in self.running if not s.cancelled]
        if any(s.cancelled for s in self.prefilling):
            for s in self.prefilling:
                if s.cancelled:
                    self._release(s)
            self.prefilling = [s for s in self.prefilling if not s.cancelled]
        self._admit(t_ns)
        lim = self.limits
        budget = lim.max_batch_prefill_tokens
        if lim.budget_includes_decode:          # decodes are scheduled first, one token each
            budget -= len(self.running)
        if self.paged:                          # the cache holds what has been computed so far
            free = self.kv_total - sum(s.input_tokens + s.generated for s in self.running) - sum(
                s.input_tokens - s.prefill_left for s in self.prefilling)
            floor = lim.kv_free_margin * self.kv_total
        prefill_tokens = 0
        kv_read = 0                             # cache tokens the step reads for its prompts so far
        completing: list[Seq] = []
        for s in self.prefilling:
            if budget <= 0:
                break
            if self.paged:
                if s.prefill_left == s.input_tokens and free < floor:
                    break                       # no new prompt starts inside the safety margin
                free -= min(s.prefill_left, budget)
            kv_read += s.input_tokens - s.prefill_left
            chunk = min(s.prefill_left, budget)
            s.prefill_left -= chunk
            budget -= chunk
            prefill_tokens += chunk
            if s.prefill_left == 0:
                completing.append(s)
        batch = len(self.running)
        if batch == 0 and prefill_tokens == 0:
            self.stepping = False
            self.gpu.set_rate(self.index, 0.0, t_ns)
            self.gpu.kv_tokens[self.index] = 0
            self.stats.batch(0, 0)
            return
        ctx = 0
        for s in self.running:
            ctx += s.input_tokens + s.generated
        self.gpu.kv_tokens[self.index] = ctx + sum(s.input_tokens - s.prefill_left for s in self.prefilling)
        others, busy = self.gpu.others(self.index)
        jitter = 1.0 + max(-0.9, self.step_jitter * self._rng.gauss(0.0, 1.0)) if self.step_jitter else 1.0
        # attention through one dense mask: every query token of the batch against every cache token it reads
        pairs = (batch + prefill_tokens) * (ctx + kv_read + prefill_tokens)
        dur_ms, gpu_ms = self.model.step_ms(batch, prefill_tokens, ctx, others, busy, jitter, pairs)
        if self.graph_q and self._new_graph(batch + prefill_tokens, ctx - batch + kv_read, lim.max_batch_prefill_tokens):
            dur_ms += self.graph_capture_ms
        self.gpu.set_rate(self.index, min(1.0, gpu_ms / dur_ms), t_ns, pairs / dur_ms * 1e-3)
        self.stepping = True
        self._emit = self.running
        self._completing = completing
        self._step_method = "prefill" if prefill_tokens else "decode"
        self._step_started = t_ns
        self.last_step_ms = dur_ms
        self.last_batch = batch + len(completing)
        self.stats.batch(batch + len(self.prefilling), self.reserved)
        self.timer.at(t_ns + int(dur_ms * 1e6), self._end_step, None)

    def _new_graph(self, q_tokens: int, kv_tokens: int, max_q: int) -> bool:
        """Whether this step's padded shape (query tokens, cache tokens read) needs a graph captured first.

        transformers pads both dimensions (``pad_to_interval``) and keeps every graph it captured, so a
        shape costs a capture once per server process; a closed loop meets new shapes for as long as its
        waves keep splitting differently."""
        key = (min(-(-q_tokens // self.graph_q) * self.graph_q, max_q), -(-max(kv_tokens, 1) // self.graph_kv))
        if key in self.graphs:
            return False
        self.graphs.add(key)
        self.captures += 1
        return True

    def _end_step(self, _arg, due_ns: int) -> None:
        self.steps += 1
        finished = False
        for s in self._emit:
            if s.cancelled:
                continue
            s.generated += 1
            last = s.generated >= s.max_new
            if last:
                s.finished = True
                finished = True
                self._release(s)
                self.stats.finished(s, due_ns)
            s.sink.token(s, due_ns, last)
        if finished:
            self.running = [s for s in self.running if not s.finished]
        if self._completing:
            done = set(map(id, self._completing))
            self.prefilling = [s for s in self.prefilling if id(s) not in done]
            for s in self._completing:
                if s.cancelled:
                    self._release(s)
                    continue
                s.generated = 1
                s.first_ns = due_ns
                if s.max_new <= 1:
                    s.finished = True
                    self._release(s)
                    self.stats.finished(s, due_ns)
                    s.sink.token(s, due_ns, True)
                else:
                    self.running.append(s)
                    s.sink.token(s, due_ns, False)
        self.stats.step(self._step_method, (due_ns - self._step_started) / 1e9, self.last_batch,
                        self._step_method == "prefill" and bool(self._emit))
        self._start_step(due_ns)


class FixedReplica:
    """Fixed schedule: TTFT then a token every ITL for every stream, independent of load.

    Every stream has the same ITL, so the streams' next tokens fall due in the order they were
    queued: two FIFOs (first tokens, next tokens) ordered by due time replace a heap entry per
    token, and the replica keeps one timer entry, at its earliest due token. One wake-up of the
    timer drains every token that is due, in due order, each written with its own schedule.
    """

    def __init__(self, index: int, profile: Profile, gpu: SharedGpu, timer: Timer, stats=None):
        t = profile.timing
        assert isinstance(t, FixedTiming)
        self.index = index
        self.gpu = gpu
        self.timer = timer
        self.stats = stats or NullStats()
        self.ttft_ns = int(t.ttft_ms * 1e6)
        self.itl_ns = int(t.itl_ms * 1e6)
        self.util_streams = t.util_streams
        self.n_active = 0
        self.queue: deque[Seq] = deque()   # always empty; the same shape as BatchingReplica
        self.steps = 0
        self.last_step_ms = t.itl_ms
        self.last_batch = 0
        self._first: deque = deque()       # (due_ns, seq): first tokens, due = submit + TTFT
        self._next: deque = deque()        # (due_ns, seq): later tokens, due = previous due + ITL
        self._armed = 0                    # due of the live timer entry (0: none)
        self._gen = 0                      # timer entries of older generations are stale

    def active(self) -> int:
        return self.n_active

    def cancel(self, seq: Seq) -> None:
        """The client went away: the stream's next turn drops it."""
        seq.cancelled = True

    def _set_active(self, n: int, now_ns: int) -> None:
        self.n_active = n
        self.last_batch = n
        self.gpu.set_rate(self.index, min(1.0, n / self.util_streams), now_ns)
        self.stats.batch(n, 0)

    def _finish(self, s: Seq, due: int) -> None:
        """``s``'s last token is due: it leaves the replica, then the token is written."""
        s.finished = True
        self._set_active(self.n_active - 1, due)
        self.stats.finished(s, due)
        s.sink.token(s, due, True)

    def submit(self, seq: Seq, now_ns: int) -> None:
        seq.replica = self.index
        seq.queued_ns = seq.started_ns = now_ns
        self._set_active(self.n_active + 1, now_ns)
        due = now_ns + self.ttft_ns
        self._first.append((due, seq))
        if not self._armed or due < self._armed:
            self._arm(due)

    def _arm(self, due_ns: int) -> None:
        self._gen += 1
        self._armed = due_ns
        self.timer.at(due_ns, self._fire, self._gen)

    def _fire(self, gen: int, _due_ns: int) -> None:
        if gen != self._gen:
            return                       # superseded by an earlier entry that already ran
        self._armed = 0
        first, nxt = self._first, self._next
        itl = self.itl_ns
        now_ns = self.timer.now_ns
        now = now_ns()
        stop = now + SLICE_NS
        n = 0
        while True:
            if first and (not nxt or first[0][0] <= nxt[0][0]):
                q = first
            elif nxt:
                q = nxt
            else:
                return
            due = q[0][0]
            if due > now:
                now = now_ns()
                if due > now:
                    break
            n += 1
            if n & 31 == 0 and now_ns() > stop:
                break
            s = q.popleft()[1]
            if s.cancelled:
                self._set_active(self.n_active - 1, due)
                continue
            g = s.generated = s.generated + 1
            if g == 1:
                s.first_ns = due
            if g >= s.max_new:
                self._finish(s, due)
                continue
            nxt.append((due + itl, s))
            s.sink.token(s, due, False)
        head = min(first[0][0] if first else 1 << 62, nxt[0][0] if nxt else 1 << 62)
        self._arm(head)


class NativeFixedReplica(FixedReplica):
    """:class:`FixedReplica` whose later tokens are queued and written by the C token writer.

    The same schedule and the same ground truth; what changes is who writes a middle token of a
    healthy stream: ``em_drain`` (fastemit.c) formats and sends it, and stamps the C side's
    histograms. Python keeps the first-token FIFO and writes every first token, every last token,
    every token of a faulted stream, and whatever the kernel did not take at once (the stream
    then stays with Python). The two FIFOs are merged by due time as in the Python drain: C writes
    its tokens due strictly before the earliest first token, then hands over.
    """

    def __init__(self, index: int, profile: Profile, gpu: SharedGpu, timer: Timer, stats, emitter, counts):
        super().__init__(index, profile, gpu, timer, stats)
        self.em = emitter
        self.counts = counts          # this replica's NativeCounts (folded into its GroundTruth)
        self.ring = emitter.ring(self.itl_ns)
        self.seqs: dict[int, Seq] = {}   # sid -> stream queued in C

    def cancel(self, seq: Seq) -> None:
        seq.cancelled = True
        if seq.sid >= 0 and self.em.ptr:    # (no ptr: the emulator stopped and freed the writer)
            self.em.flag(self.em.ptr, seq.sid, F_CANCEL)

    def _fire(self, gen: int, _due_ns: int) -> None:
        if gen != self._gen or not self.em.ptr:
            return
        self._armed = 0
        first = self._first
        em = self.em
        drain, ptr, ring, out, ref = em.drain, em.ptr, self.ring, em.out, em.out_ref
        now_ns = self.timer.now_ns
        stop = now_ns() + SLICE_NS
        while True:
            code = drain(ptr, ring, first[0][0] if first else NEVER, stop, ref)
            if code == EM_FIRST:
                if not first:
                    break
                due = first[0][0]
                now = now_ns()
                if due > now or now > stop:
                    break
                try:
                    self._first_token(first.popleft()[1], due)
                except Exception:    # one broken stream must not stop this replica's clock
                    log.exception("emulator: writing a first token failed")
            elif code == EM_IDLE or code == EM_SLICE:
                break
            else:
                try:
                    self._handed_over(code, out)
                except Exception:
                    log.exception("emulator: a token handed back by the C writer failed")
        head = min(first[0][0] if first else NEVER, em.head(ptr, ring))
        if head != NEVER:
            self._arm(head)

    def _first_token(self, s: Seq, due: int) -> None:
        if s.cancelled:
            self._set_active(self.n_active - 1, due)
            return
        s.generated = 1
        s.first_ns = due
        sink = s.sink
        if s.max_new <= 1:
            self._finish(s, due)
            return
        sink.token(s, due, False)
        kind, flags, fd, pre, post = sink.c_spec()
        sid = self._add(s, due, fd, kind, flags, pre, post)
        if sid < 0 and fd >= 0:      # no descriptor left for the dup: Python writes this one
            sid = self._add(s, due, -1, kind, flags | F_PY, pre, post)
        if sid < 0:
            log.error("emulator: cannot queue a stream (out of memory); closing it")
            s.cancelled = True
            self._set_active(self.n_active - 1, due)
            sink.abort()
            return
        s.sid = sid
        sink.c_attach(self.em, sid)
        self.seqs[sid] = s

    def _add(self, s: Seq, due: int, fd: int, kind: int, flags: int, pre: bytes, post: bytes) -> int:
        return self.em.add(self.em.ptr, self.ring, due + self.itl_ns, fd, s.rid, 1, s.max_new, s.sink.last_ns,
                           kind, flags, self.counts.ptr, pre, len(pre), post, len(post))

    def _release(self, s: Seq) -> None:
        sid = s.sid
        self.em.release(self.em.ptr, sid)
        del self.seqs[sid]
        s.sid = -1
        s.sink.c_attach(None, -1)

    def _handed_over(self, code: int, o) -> None:
        s = self.seqs[o.sid]
        due = o.due
        s.generated = o.k
        sink = s.sink
        if code == EM_PARTIAL:       # counted and stamped in C; the rest waits in the transport
            sink.c_partial(o.last_ns, self.em.rest())
            return
        if code == EM_CANCELLED:     # popped for good: nothing of it is queued in C any more
            self._release(s)
            if not s.cancelled:      # C could not requeue it (out of memory)
                s.cancelled = True
                sink.abort()
            self._set_active(self.n_active - 1, due)
            return
        if s.cancelled:              # a fault ended it
            if o.last:
                self._release(s)
                self._set_active(self.n_active - 1, due)
            else:                    # C requeued it: its next turn drops it
                self.em.flag(self.em.ptr, o.sid, F_CANCEL)
            return
        sink.c_sync(o.last_ns)
        if o.last:
            self._release(s)
            self._finish(s, due)
        else:
            sink.token(s, due, False)


def make_replica(index: int, profile: Profile, gpu: SharedGpu, timer: Timer, stats=None, emitter=None,
                 counts=None):
    """``emitter`` (a :class:`harness.emulator.native.Emitter`, real time only) and ``counts`` (the
    replica's NativeCounts) put a fixed-timing replica's middle tokens on the C writer."""
    if isinstance(profile.timing, FixedTiming):
        if emitter is not None:
            return NativeFixedReplica(index, profile, gpu, timer, stats, emitter, counts)
        return FixedReplica(index, profile, gpu, timer, stats)
    return BatchingReplica(index, profile, gpu, timer, stats)
