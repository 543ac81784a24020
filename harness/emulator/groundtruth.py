"""What the emulator really did, per replica: when each token left for the socket vs its schedule.

``lateness_us`` = (time ``transport.write`` returned) - (time the model scheduled the token);
``ttft_us``/``itl_us`` are measured between actual writes, from the moment the request was fully
read. The load generator's accuracy benchmark compares its own measurements with these.
``request_delay_us``: from the client's ``X-Sent-Ns`` header (its ``CLOCK_MONOTONIC`` when it sent,
on the same host) to the moment the request was fully read here, for the requests that carry it
(the load generator adds it with ``SLM_SENT_HEADER=1``, for diagnosis): how long a request took to
reach the emulator's parser, which its own TTFT cannot see.
``requests_peak_10ms``: the most requests read within one 10 ms bucket (of the monotonic clock).
A fixed-timing replica schedules every token from its request's arrival, so requests that
arrive together keep their tokens due together for the whole response: a closed loop that
bunched its requests asks for many times its mean token rate at those instants. Compare with
the mean, ``requests_received`` over the window.
"""

from __future__ import annotations

import time
from collections import deque

from harness.emulator.histogram import LogHistogram

HISTOGRAMS = ("ttft_us", "ttft_scheduled_us", "itl_us", "lateness_us", "e2e_us", "request_delay_us")
#: late writes closer than this to the previous one belong to its episode (fastemit.c: EPISODE_GAP_NS)
EPISODE_GAP_NS = 100_000_000
COUNTERS = ("requests_received", "requests_completed", "requests_rejected", "requests_cancelled",
            "requests_faulted", "tokens_sent", "tokens_buffered")
from harness.emulator.prefixcache import COUNTERS as _PREFIX   # noqa: E402
COUNTERS += _PREFIX


class GroundTruth:
    def __init__(self, replica: int):
        self.replica = replica
        self.native = None          # NativeCounts: what the C token writer counted, not yet folded
        self.reset()

    def fold(self) -> None:
        """Take in what the C token writer counted since the last fold (a summary does it)."""
        if self.native is not None:
            self.native.fold(self)

    def detach(self) -> None:
        """Fold the C side's counts in for good and free them (the emulator stops)."""
        if self.native is not None:
            self.fold()
            self.native.close()
            self.native = None

    def reset(self) -> None:
        self.since_ns = time.time_ns()
        self.since_mono_ns = time.monotonic_ns()
        self.requests_received = 0
        self.requests_completed = 0
        self.requests_rejected = 0
        self.requests_cancelled = 0
        self.requests_faulted = 0
        self.tokens_sent = 0
        self.tokens_buffered = 0    # token writes the client's full socket left in our buffer
        for k in _PREFIX:
            setattr(self, k, 0)
        self.requests_peak_10ms = 0
        self._bucket = -1           # the current 10 ms bucket of arrivals, and its count
        self._in_bucket = 0
        # cleared in place on reset: open streams keep references to the count lists
        for k in HISTOGRAMS:
            h = getattr(self, k, None)
            if h is None:
                setattr(self, k, LogHistogram())
            else:
                h.clear()
        # episodes of writes >= 16 ms late: [first write ns, last write ns, writes, worst us]
        self.spikes: deque = deque(maxlen=32)
        if self.native is not None:
            self.native.clear()

    def arrived(self, now_ns: int) -> None:
        """Count a request read at ``now_ns`` (monotonic) into the 10 ms arrival peak."""
        self.requests_received += 1
        b = now_ns // 10_000_000
        if b != self._bucket:
            self._bucket, self._in_bucket = b, 0
        self._in_bucket += 1
        if self._in_bucket > self.requests_peak_10ms:
            self.requests_peak_10ms = self._in_bucket

    def late(self, now_ns: int, lateness_us: int) -> None:
        """A write at least 16 ms behind its schedule: counted, and its episode kept for diagnosis."""
        self.lateness_us.record(lateness_us)
        if lateness_us <= 0:
            return
        sp = self.spikes
        if sp and now_ns - sp[-1][1] < EPISODE_GAP_NS:
            e = sp[-1]
            e[1] = now_ns
            e[2] += 1
            e[3] = max(e[3], lateness_us)
        else:
            sp.append([now_ns, now_ns, 1, lateness_us])

    def merge_episodes(self, eps: list[list[int]]) -> None:
        """Add episodes counted elsewhere (the C writer), joining those less than 100 ms apart."""
        merged: list[list[int]] = []
        for e in sorted(list(self.spikes) + eps):
            if merged and e[0] - merged[-1][1] < EPISODE_GAP_NS:
                m = merged[-1]
                m[1] = max(m[1], e[1])
                m[2] += e[2]
                m[3] = max(m[3], e[3])
            else:
                merged.append(list(e))
        self.spikes = deque(merged, maxlen=32)

    def summary(self) -> dict:
        self.fold()
        out = {"replica": self.replica, "since_ns": self.since_ns}
        for k in COUNTERS:
            out[k] = getattr(self, k)
        out["requests_peak_10ms"] = self.requests_peak_10ms
        for k in HISTOGRAMS:
            out[k] = getattr(self, k).summary()
        # the latest episodes of writes >= 16 ms late: start (ms after since_ns), length ms,
        # writes, worst lateness us
        if self.spikes:
            t0 = self.since_mono_ns
            out["late_episodes"] = [[round((a - t0) / 1e6, 1), round((b - a) / 1e6, 1), n, worst]
                                    for a, b, n, worst in self.spikes]
        return out


def merge_summaries(parts: list[GroundTruth]) -> dict:
    """All replicas together (histograms merged bucket by bucket)."""
    total = GroundTruth(-1)
    total.since_ns = min(p.since_ns for p in parts)
    for p in parts:
        p.fold()
        for k in COUNTERS:
            setattr(total, k, getattr(total, k) + getattr(p, k))
        for k in HISTOGRAMS:
            getattr(total, k).merge(getattr(p, k))
    total.requests_peak_10ms = max(p.requests_peak_10ms for p in parts)   # per replica: buckets are not shared
    s = total.summary()
    s.pop("replica")
    return s
