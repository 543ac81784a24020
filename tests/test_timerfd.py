"""The timerfd binding (harness/timerfd.py) on the real kernel: armed at an absolute
``CLOCK_MONOTONIC`` deadline its fd turns readable at that deadline and not before, reading
clears it, disarming cancels it, arming again replaces the deadline, a past deadline fires at
once, and close releases the fd. Lower bounds are strict (never readable before the deadline);
upper bounds are generous, so a loaded machine that wakes the test late does not fail it."""

from __future__ import annotations

import ctypes
import errno
import os
import select
import struct
import time

import pytest

from harness import timerfd
from harness.timerfd import TimerFd, open_timerfd, set_timer_slack

MS = 1_000_000
LATE_S = 2.0        # how late a wake-up may come on a starved host before the test calls it lost


def _readable(fd: int, timeout_s: float) -> bool:
    """Whether ``fd`` turns readable within ``timeout_s`` (0: right now)."""
    p = select.poll()
    p.register(fd, select.POLLIN)
    return bool(p.poll(timeout_s * 1000))


def _wait(t: TimerFd, deadline_ns: int) -> int:
    """Wait for ``t`` to fire; the monotonic time it was seen readable, checked against the
    deadline (never before it)."""
    assert _readable(t.fd, LATE_S + max(0, deadline_ns - time.monotonic_ns()) / 1e9), \
        "the timer did not fire"
    seen = time.monotonic_ns()
    assert seen >= deadline_ns, f"readable {(deadline_ns - seen) / 1e3:.0f} us before its deadline"
    return seen


def _not_yet(t: TimerFd, deadline_ns: int) -> None:
    """Right now ``t`` is not readable, unless the test was descheduled past ``deadline_ns``."""
    if _readable(t.fd, 0):
        assert time.monotonic_ns() >= deadline_ns, "readable before its deadline"


@pytest.fixture
def tfd():
    t = TimerFd()
    yield t
    try:
        t.close()
    except OSError:
        pass        # the test closed it itself


def test_an_armed_timer_fires_at_its_deadline_not_before_and_reading_clears_it(tfd):
    assert not _readable(tfd.fd, 0)                  # a new timer is disarmed
    deadline = time.monotonic_ns() + 40 * MS
    tfd.arm(deadline)
    _not_yet(tfd, deadline)
    _wait(tfd, deadline)
    assert _readable(tfd.fd, 0)                      # it stays readable until read
    # one-shot: the expiration count is one, and reading it clears the fd
    (count,) = struct.unpack("=Q", os.read(tfd.fd, 8))
    assert count == 1
    assert not _readable(tfd.fd, 0)
    with pytest.raises(BlockingIOError):             # non-blocking: nothing to read is EAGAIN
        os.read(tfd.fd, 8)
    # it does not fire again by itself (it_interval is zero)
    assert not _readable(tfd.fd, 0.05)


def test_clear_drops_the_expiration_and_is_harmless_with_nothing_to_read(tfd):
    tfd.clear()                                      # nothing pending: no error
    tfd.arm(time.monotonic_ns())
    assert _readable(tfd.fd, LATE_S)
    tfd.clear()
    assert not _readable(tfd.fd, 0)
    tfd.clear()


def test_disarm_cancels_the_deadline_and_a_pending_expiration(tfd):
    deadline = time.monotonic_ns() + 30 * MS
    tfd.arm(deadline)
    tfd.disarm()
    assert not _readable(tfd.fd, 0.1)                # well past the old deadline: never fired
    assert time.monotonic_ns() > deadline
    # fired but not read: disarming clears it too
    tfd.arm(time.monotonic_ns() - 1)
    assert _readable(tfd.fd, LATE_S)
    tfd.disarm()
    assert not _readable(tfd.fd, 0)
    tfd.disarm()                                     # disarming a disarmed timer is fine


def test_arming_again_replaces_the_deadline_and_resets_a_pending_expiration(tfd):
    # a far deadline replaced by a near one fires at the near one
    tfd.arm(time.monotonic_ns() + 3600 * 1_000_000_000)
    near = time.monotonic_ns() + 30 * MS
    tfd.arm(near)
    _wait(tfd, near)
    tfd.clear()
    # a near deadline replaced by a later one fires at the later one, not the near one
    first = time.monotonic_ns() + 20 * MS
    tfd.arm(first)
    later = time.monotonic_ns() + 80 * MS
    tfd.arm(later)
    _wait(tfd, later)
    # fired and not read, then armed at a future deadline: not readable until that one
    again = time.monotonic_ns() + 40 * MS
    tfd.arm(again)
    _not_yet(tfd, again)
    _wait(tfd, again)
    assert struct.unpack("=Q", os.read(tfd.fd, 8)) == (1,)


@pytest.mark.parametrize("deadline", ["a second ago", "now", "zero", "negative"])
def test_a_deadline_already_passed_fires_at_once(tfd, deadline):
    now = time.monotonic_ns()
    ns = {"a second ago": now - 1_000_000_000, "now": now, "zero": 0, "negative": -5}[deadline]
    t0 = time.monotonic()
    tfd.arm(ns)                                      # zero is not "disarm": it fires too
    assert _readable(tfd.fd, LATE_S)
    assert time.monotonic() - t0 < LATE_S
    assert struct.unpack("=Q", os.read(tfd.fd, 8)) == (1,)


def test_the_fd_is_non_blocking_and_close_on_exec_and_close_releases_it():
    t = TimerFd()
    fd = t.fd
    assert not os.get_blocking(fd) and not os.get_inheritable(fd)
    t.close()
    with pytest.raises(OSError) as e:                # the descriptor is gone
        os.fstat(fd)
    assert e.value.errno == errno.EBADF
    # closing twice is the OS's error on a closed descriptor, not a crash or a silent success
    with pytest.raises(OSError) as e:
        t.close()
    assert e.value.errno == errno.EBADF


def test_timers_are_independent():
    a, b = TimerFd(), TimerFd()
    try:
        assert a.fd != b.fd
        deadline = time.monotonic_ns() + 20 * MS
        a.arm(deadline)
        b.arm(time.monotonic_ns() + 3600 * 1_000_000_000)
        _wait(a, deadline)
        assert not _readable(b.fd, 0)
    finally:
        a.close()
        b.close()


def test_without_a_timerfd_the_constructor_raises_and_open_timerfd_says_none(monkeypatch):
    made = open_timerfd()
    assert isinstance(made, TimerFd)                 # Linux: the kernel has one
    made.close()
    monkeypatch.setattr(timerfd, "_libc", lambda: None)
    with pytest.raises(OSError, match="no timerfd"):
        TimerFd()
    assert open_timerfd() is None


def test_set_timer_slack_sets_the_threads_slack():
    prctl = ctypes.CDLL(None).prctl
    get = lambda: prctl(30, 0, 0, 0, 0)  # noqa: E731  PR_GET_TIMERSLACK
    before = get()
    assert before > 0
    try:
        assert set_timer_slack(1000) is True
        assert get() == 1000
    finally:
        assert set_timer_slack(before)
    assert get() == before
