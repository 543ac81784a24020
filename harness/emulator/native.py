"""The emulator's C token writer (``fastemit.c``): loaded through :mod:`harness.cbuild`, or None
(no compiler, ``SLM_NATIVE=0``), and then fixed-timing replicas write every token in Python.

:class:`Emitter` is one process's writer: the vocabulary, one FIFO per replica, the streams it
writes. :class:`NativeCounts` is one replica's ground truth on the C side, folded into
:class:`harness.emulator.groundtruth.GroundTruth` whenever a summary is asked for.
"""

from __future__ import annotations

import ctypes
import logging
from functools import cache
from pathlib import Path

from harness import cbuild
from harness.emulator import histogram
from harness.emulator.tokenizer import TEXT_JSON, TGI_TOKEN_JSON, VOCAB

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("fastemit.c")

# em_drain's answers (fastemit.c)
EM_FIRST, EM_IDLE, EM_SLICE, EM_PY, EM_CANCELLED, EM_PARTIAL = range(6)
# stream kinds and flags
K_TGI, K_OPENAI, K_SILENT = 0, 1, 2
F_PY, F_CANCEL = 1, 2
NEVER = (1 << 63) - 1


class Out(ctypes.Structure):
    """What ``em_drain`` leaves to Python (``em_out``)."""

    _fields_ = [("sid", ctypes.c_int32), ("k", ctypes.c_int32), ("last", ctypes.c_int32),
                ("rest_len", ctypes.c_int32), ("due", ctypes.c_int64), ("last_ns", ctypes.c_int64)]


class _Hist(ctypes.Structure):
    _fields_ = [("counts", ctypes.c_uint64 * histogram.SIZE), ("max", ctypes.c_int64),
                ("negative", ctypes.c_int64)]


class _Gt(ctypes.Structure):
    """One replica's C-side ground truth (``em_gt``)."""

    _fields_ = [("lat", _Hist), ("itl", _Hist), ("tokens_sent", ctypes.c_int64),
                ("tokens_buffered", ctypes.c_int64), ("ep", (ctypes.c_int64 * 4) * 32),
                ("ep_n", ctypes.c_int32), ("ep_next", ctypes.c_int32)]


@cache
def _load():
    lib = cbuild.open_library(SOURCE, "C token writer")
    if lib is None:
        return None
    vp, i32, i64, u64, cp = ctypes.c_void_p, ctypes.c_int32, ctypes.c_int64, ctypes.c_uint64, ctypes.c_char_p
    cbuild.type_functions(lib, {
        "em_new": (vp, [cp, vp, cp, vp, i32]), "em_free": (None, [vp]),
        "em_gt_new": (vp, []), "em_gt_free": (None, [vp]), "em_gt_clear": (None, [vp]),
        "em_ring_new": (i32, [vp, i64]), "em_head": (i64, [vp, i32]),
        "em_add": (i32, [vp, i32, i64, ctypes.c_int, u64, i32, i32, i64, i32, i32, vp, cp, i32, cp, i32]),
        "em_flag": (None, [vp, i32, i32]), "em_last_ns": (i64, [vp, i32]), "em_release": (None, [vp, i32]),
        "em_rest": (vp, [vp]), "em_drain": (ctypes.c_int, [vp, i32, i64, i64, vp]),
        "em_format": (i32, [vp, i32, i32, cp]),
        "em_sizeof_gt": (i32, []), "em_sizeof_out": (i32, []), "em_hsize": (i32, [])})
    if (lib.em_hsize(), lib.em_sizeof_gt(), lib.em_sizeof_out()) != (histogram.SIZE, ctypes.sizeof(_Gt),
                                                                     ctypes.sizeof(Out)):
        log.info("C token writer does not match its Python views; the emulator writes in Python")
        return None
    return lib


def _table(frags) -> tuple[bytes, ctypes.Array]:
    offs = (ctypes.c_int32 * (len(frags) + 1))()
    n = 0
    for i, f in enumerate(frags):
        offs[i] = n
        n += len(f)
    offs[len(frags)] = n
    return b"".join(frags), offs


class NativeCounts:
    """One replica's ground-truth counters written by C; ``fold`` moves them into Python's."""

    def __init__(self, lib):
        self.lib = lib
        self.ptr = lib.em_gt_new()
        if not self.ptr:
            raise MemoryError("fastemit: no memory for a replica's ground truth")
        self.view = _Gt.from_address(self.ptr)

    def fold(self, gt) -> None:
        """Add the C side's counts to ``gt`` (a GroundTruth) and zero them here."""
        v = self.view
        if not v.tokens_sent:       # every count here comes with a write: nothing new
            return
        for h, c in ((gt.lateness_us, v.lat), (gt.itl_us, v.itl)):
            counts = h.counts
            for i, n in enumerate(memoryview(c.counts).cast("B").cast("Q")):
                if n:
                    counts[i] += n
            if c.max > h.max:
                h.max = c.max
            h.negative += c.negative
        gt.tokens_sent += v.tokens_sent
        gt.tokens_buffered += v.tokens_buffered
        n, nxt = v.ep_n, v.ep_next
        if n:
            eps = [list(v.ep[(nxt - n + i) % 32]) for i in range(n)]
            gt.merge_episodes(eps)
        self.lib.em_gt_clear(self.ptr)

    def clear(self) -> None:
        self.lib.em_gt_clear(self.ptr)

    def close(self) -> None:
        if self.ptr:
            self.lib.em_gt_free(self.ptr)
            self.ptr = None
            self.view = None


class Emitter:
    """One process's C token writer (see fastemit.c for what it does and what it leaves to Python)."""

    def __init__(self, lib):
        self.lib = lib
        tgi, tgi_off = _table(TGI_TOKEN_JSON)
        text, text_off = _table(TEXT_JSON)
        self.ptr = lib.em_new(tgi, tgi_off, text, text_off, VOCAB)
        if not self.ptr:
            raise MemoryError("fastemit: no memory for the writer")
        self.out = Out()
        self.out_ref = ctypes.byref(self.out)
        self.drain = lib.em_drain
        self.head = lib.em_head
        self.add = lib.em_add
        self.release = lib.em_release
        self.flag = lib.em_flag

    def counts(self) -> NativeCounts:
        return NativeCounts(self.lib)

    def ring(self, itl_ns: int) -> int:
        r = self.lib.em_ring_new(self.ptr, itl_ns)
        if r < 0:
            raise MemoryError("fastemit: no memory for a replica's queue")
        return r

    def rest(self) -> bytes:
        """The bytes of the last EM_PARTIAL that the kernel did not take."""
        return ctypes.string_at(self.lib.em_rest(self.ptr), self.out.rest_len)

    def last_ns(self, sid: int) -> int:
        return self.lib.em_last_ns(self.ptr, sid)

    def close(self) -> None:
        if self.ptr:
            self.lib.em_free(self.ptr)   # closes the sockets' dups of streams still queued
            self.ptr = None


def load_emitter() -> Emitter | None:
    """A new writer, or None where the C side cannot be had (logged once, at INFO)."""
    if not cbuild.enabled():
        return None
    lib = _load()
    return Emitter(lib) if lib is not None else None
