"""Per replica, when each generating request was read and what it asked for: the ground truth that
a replay's arrival times, a conversation's growing prompts and a prefix cache's savings are checked
against (``GET /emulator/arrivals``).

Entries are ``[wall-clock ns when read, input tokens, tokens prefilled after the prefix cache,
max new tokens]``; the newest :data:`MAX_ENTRIES` are kept, and a ground-truth reset starts a new
log (it follows the ground truth's ``since_ns``).
"""

from __future__ import annotations

import time
from collections import deque

MAX_ENTRIES = 200_000


def _log(gt) -> deque:
    log = getattr(gt, "arrival_log", None)
    if log is None or getattr(gt, "arrival_log_since", None) != gt.since_ns:
        log = gt.arrival_log = deque(maxlen=MAX_ENTRIES)
        gt.arrival_log_since = gt.since_ns
    return log


def record(gt, seqs: list) -> None:
    """Log ``seqs`` (just read, about to be submitted) on their replica's ground truth ``gt``."""
    log = _log(gt)
    now = time.time_ns()
    for s in seqs:
        log.append((now, s.input_tokens, s.prefill_left, s.max_new))


def snapshot(gt) -> dict:
    return {"replica": gt.replica, "since_ns": gt.since_ns,
            "fields": ["read_ns", "input_tokens", "prefill_tokens", "max_new_tokens"],
            "arrivals": [list(e) for e in _log(gt)]}
