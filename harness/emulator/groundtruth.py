"""What the emulator really did, per replica: when each token left for the socket vs its schedule.

``lateness_us`` = (time ``transport.write`` returned) - (time the model scheduled the token);
``ttft_us``/``itl_us`` are measured between actual writes, from the moment the request was fully
read. The load generator's accuracy benchmark compares its own measurements with these.
"""

from __future__ import annotations

import time

from harness.emulator.histogram import LogHistogram

COUNTERS = ("requests_received", "requests_completed", "requests_rejected", "requests_cancelled",
            "requests_faulted", "tokens_sent")


class GroundTruth:
    def __init__(self, replica: int):
        self.replica = replica
        self.reset()

    def reset(self) -> None:
        self.since_ns = time.time_ns()
        self.requests_received = 0
        self.requests_completed = 0
        self.requests_rejected = 0
        self.requests_cancelled = 0
        self.requests_faulted = 0
        self.tokens_sent = 0
        self.ttft_us = LogHistogram()
        self.ttft_scheduled_us = LogHistogram()
        self.itl_us = LogHistogram()
        self.lateness_us = LogHistogram()
        self.e2e_us = LogHistogram()

    def summary(self) -> dict:
        out = {"replica": self.replica, "since_ns": self.since_ns}
        for k in COUNTERS:
            out[k] = getattr(self, k)
        for k in ("ttft_us", "ttft_scheduled_us", "itl_us", "lateness_us", "e2e_us"):
            out[k] = getattr(self, k).summary()
        return out


def merge_summaries(parts: list[GroundTruth]) -> dict:
    """All replicas together (histograms merged bucket by bucket)."""
    total = GroundTruth(-1)
    total.since_ns = min(p.since_ns for p in parts)
    for p in parts:
        for k in COUNTERS:
            setattr(total, k, getattr(total, k) + getattr(p, k))
        for k in ("ttft_us", "ttft_scheduled_us", "itl_us", "lateness_us", "e2e_us"):
            getattr(total, k).merge(getattr(p, k))
    s = total.summary()
    s.pop("replica")
    return s
