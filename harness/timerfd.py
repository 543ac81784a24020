"""A Linux timerfd on ``CLOCK_MONOTONIC``, armed at absolute nanosecond deadlines.

Event loops (libev's under gevent, asyncio's) wait in ``epoll_wait``, whose timeout is whole
milliseconds and rounded up, so a timer of theirs fires up to a millisecond late. A timerfd armed
at an absolute deadline becomes readable within microseconds of it; a loop that watches its fd
wakes on time. The emulator's token timer and the load generator's send clock both arm one at
every due time, so the libc functions are bound once per process and each timer keeps one
``itimerspec`` of its own: arming is a ``divmod`` and one ctypes call.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
from time import CLOCK_MONOTONIC

_TFD_TIMER_ABSTIME = 1
_PR_SET_TIMERSLACK = 29
_NS = 1_000_000_000


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """The C library, where it has ``timerfd_create``/``timerfd_settime``; else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        lib = ctypes.CDLL(None, use_errno=True)
        create, settime = lib.timerfd_create, lib.timerfd_settime
    except (OSError, AttributeError):
        return None
    create.argtypes = [ctypes.c_int, ctypes.c_int]
    create.restype = settime.restype = ctypes.c_int
    # no argtypes for timerfd_settime: its arguments (two ints, a byref, None) convert as they
    # are, and a declared signature costs a few hundred ns a call to check them
    return lib


class TimerFd:
    """One non-blocking, close-on-exec ``CLOCK_MONOTONIC`` timerfd, one-shot at absolute times.

    Raises :class:`OSError` where the system has no timerfd (not Linux), so callers can fall
    back to their event loop's own timers. Watch :attr:`fd` for reading: it becomes readable at
    the armed deadline and stays so until :meth:`clear` or the next :meth:`arm`/:meth:`disarm`
    (setting the timer resets its expiration count)."""

    __slots__ = ("fd", "_settime", "_spec", "_value", "_ref")

    def __init__(self) -> None:
        lib = _libc()
        if lib is None:
            raise OSError("no timerfd in this C library")
        fd = lib.timerfd_create(CLOCK_MONOTONIC, os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create failed")
        self.fd: int = fd
        self._settime = lib.timerfd_settime
        self._spec = _Itimerspec()           # it_interval stays zero: one-shot
        self._value = self._spec.it_value    # a view into _spec, made once
        self._ref = ctypes.byref(self._spec)

    def arm(self, deadline_ns: int) -> None:
        """Fire once at ``deadline_ns`` on ``CLOCK_MONOTONIC`` (``time.monotonic_ns``); a past
        deadline fires at once. Replaces any earlier deadline."""
        v = self._value
        v.tv_sec, v.tv_nsec = divmod(max(1, deadline_ns), _NS)    # zero would disarm it
        if self._settime(self.fd, _TFD_TIMER_ABSTIME, self._ref, None) != 0:
            raise OSError(ctypes.get_errno(), "timerfd_settime failed")

    def disarm(self) -> None:
        """Cancel the armed deadline (and clear a pending expiration)."""
        v = self._value
        v.tv_sec = v.tv_nsec = 0
        if self._settime(self.fd, 0, self._ref, None) != 0:
            raise OSError(ctypes.get_errno(), "timerfd_settime failed")

    def clear(self) -> None:
        """Read (and drop) the expiration count, so the fd is no longer readable; nothing to read
        (armed again since it fired) is fine."""
        try:
            os.read(self.fd, 8)
        except BlockingIOError:
            pass

    def close(self) -> None:
        os.close(self.fd)


def open_timerfd() -> TimerFd | None:
    """A new :class:`TimerFd`, or None where this system has none (the caller then uses its event
    loop's own timers)."""
    try:
        return TimerFd()
    except OSError:
        return None


def set_timer_slack(ns: int) -> bool:
    """Set the calling thread's timer slack (``PR_SET_TIMERSLACK``): the kernel may defer a
    timer's wake-up by up to it (50 us by default) to batch wake-ups. False where not supported."""
    try:
        return ctypes.CDLL(None).prctl(_PR_SET_TIMERSLACK, ctypes.c_ulong(ns), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False
