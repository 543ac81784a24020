"""A circuit breaker per replica on top of the replica picker.

Why: least-outstanding balancing sends the next request to the replica with the fewest requests
in flight. A replica that fails at once (500, reset, refused) always has none in flight, so it
draws nearly all the load; a stopped replica draws streams again each time its hung ones time
out. The breaker opens after ``failures`` consecutive failed requests to a replica: it gets no
new request for ``open_s``; then one probe request (half-open); the probe's success closes it,
its failure opens it again for twice as long (up to ``max_open_s``). When every replica is open
the load still goes out (and its failures are recorded): a breaker never stops a run.

Failures: the classes that say the replica is broken (refused, reset, timeout, 5xx, an SSE error,
a malformed or incomplete stream); 4xx and 429 (overloaded) are answers, not faults. A timeout
opens the breaker at once: each one held a stream for the whole request timeout (a stopped
replica), which is too dear to wait for ``failures`` of them.
"""

from __future__ import annotations

import logging
import time

from harness.loadgen.replicas import ReplicaPicker

log = logging.getLogger(__name__)

FAILURES = frozenset({"connect", "reset", "timeout", "http_5xx", "sse_error", "malformed",
                      "incomplete"})


class _State:
    __slots__ = ("state", "fails", "until", "pause", "probing", "trips", "probes", "opened_at",
                 "open_s")

    def __init__(self):
        self.state = "closed"      # closed | open | half-open
        self.fails = 0
        self.until = 0.0
        self.pause = 0.0
        self.probing = False
        self.trips = 0             # times it opened (a failed probe opens it again: counted)
        self.probes = 0
        self.opened_at = 0.0
        self.open_s = 0.0          # time spent open or half-open so far


class BreakerPicker(ReplicaPicker):
    """:class:`ReplicaPicker` that leaves out replicas whose breaker is open."""

    def __init__(self, urls: list[str], policy: str = "least-outstanding", *, failures: int = 5,
                 open_s: float = 1.0, max_open_s: float = 30.0, clock=time.monotonic):
        super().__init__(urls, policy)
        self.failures = failures
        self.open_s = open_s
        self.max_open_s = max_open_s
        self.clock = clock
        self.breakers = {u: _State() for u in self.urls}

    # -- the picker's choices ---------------------------------------------------------------
    def _allowed(self, u: str, now: float) -> bool:
        b = self.breakers[u]
        if b.state == "closed":
            return True
        if b.state == "open" and now >= b.until:
            b.state = "half-open"
            b.probing = False
        return b.state == "half-open" and not b.probing

    def _choices(self) -> list[str]:
        urls = super()._choices()
        if len(self.urls) == 1:
            return urls
        now = self.clock()
        ok = [u for u in urls if self._allowed(u, now)]
        return ok or urls

    def left_out(self) -> list[str]:
        """The replicas a request sent now cannot go to because their breaker is open (or its
        probe is out); none when that is every replica (the load then goes out anyway)."""
        if len(self.urls) == 1:
            return []
        now = self.clock()
        out = [u for u, b in self.breakers.items()
               if not (b.state == "closed" or (b.state == "open" and now >= b.until)
                       or (b.state == "half-open" and not b.probing))]
        return out if len(out) < len(self.urls) else []

    def _sent(self, url: str) -> None:
        b = self.breakers[url]
        if b.state == "half-open" and not b.probing:
            b.probing = True
            b.probes += 1

    def acquire(self) -> str:
        url = super().acquire()
        self._sent(url)
        return url

    def prefers(self, url: str) -> bool:
        ok = super().prefers(url)
        if ok:
            self._sent(url)
        return ok

    # -- outcomes ---------------------------------------------------------------------------
    def outcome(self, url: str, error_class: str | None) -> bool:
        """Count one finished request to ``url``; True when this outcome opened its breaker."""
        b = self.breakers.get(url)
        if b is None:
            return False
        now = self.clock()
        if error_class not in FAILURES:
            if b.state != "closed":
                b.open_s += now - b.opened_at
                log.info("replica %s: breaker closed (a request succeeded)", url)
            b.state, b.fails, b.pause, b.probing = "closed", 0, 0.0, False
            return False
        if b.state == "half-open" and b.probing:
            b.pause = min(max(b.pause, self.open_s) * 2, self.max_open_s)
            b.state, b.until, b.probing = "open", now + b.pause, False
            b.trips += 1
            return True
        if b.state != "closed":
            return False                # a request sent before it opened, failing late
        b.fails += 1
        if b.fails < self.failures and error_class != "timeout":
            return False
        b.pause = self.open_s
        b.state, b.until, b.opened_at, b.fails = "open", now + b.pause, now, 0
        b.trips += 1
        log.info("replica %s: breaker open for %.1f s after %d failures (%s)", url, b.pause,
                 self.failures, error_class)
        return True

    def stats(self) -> dict[str, dict]:
        now = self.clock()
        return {u: {"state": b.state, "trips": b.trips, "probes": b.probes,
                    "open_s": round(b.open_s + (now - b.opened_at if b.state != "closed" else 0), 3)}
                for u, b in self.breakers.items()}


def picker_for(urls: list[str], target) -> ReplicaPicker:
    """The scenario target's picker: with its breaker (default) or the naive one."""
    br = getattr(target, "breaker", None)
    if br is None or not br.enabled:
        return ReplicaPicker(urls, target.balance)
    return BreakerPicker(urls, target.balance, failures=br.failures, open_s=br.open_s,
                         max_open_s=br.max_open_s)
