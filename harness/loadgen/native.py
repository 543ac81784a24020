"""The reader's C pass (``fastread.c``): built with the machine's C compiler on first use, cached,
loaded through ctypes (:mod:`harness.cbuild`); None where it cannot be, and the reactor then reads
in Python. ``SLM_NATIVE=0`` turns it off.
"""

from __future__ import annotations

import ctypes
import logging
from functools import cache
from pathlib import Path

from harness import cbuild

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("fastread.c")


class Out(ctypes.Structure):
    """One read the C pass leaves to Python (``fr_out``)."""

    _fields_ = [("fd", ctypes.c_int32), ("len", ctypes.c_int32), ("off", ctypes.c_int64), ("t", ctypes.c_int64)]


ITL_CAP = 512   # fastread.c's ITL_CAP (checked when the library loads)


class Slot(ctypes.Structure):
    """One socket's in-place state (``fr_slot``)."""

    _fields_ = [("first", ctypes.c_int64), ("last", ctypes.c_int64), ("tokens", ctypes.c_int32),
                ("n_itl", ctypes.c_int32), ("on", ctypes.c_int32), ("has_first", ctypes.c_int32),
                ("itl", ctypes.c_int64 * ITL_CAP)]


def enabled() -> bool:
    return cbuild.enabled()


def load():
    """The loaded library (functions typed), or None (then why is logged once)."""
    if not enabled():
        return None
    return _load()


@cache
def _load():
    lib = cbuild.open_library(SOURCE, "C read pass")
    if lib is None:
        return None
    vp, i32, i64, cp = ctypes.c_void_p, ctypes.c_int32, ctypes.c_int64, ctypes.c_char_p
    cbuild.type_functions(lib, {
        "fr_new": (vp, [ctypes.c_int] + [cp, ctypes.c_int] * 6 + [ctypes.c_int]),
        "fr_free": (None, [vp]), "fr_buf": (vp, [vp]), "fr_outs": (vp, [vp]),
        "fr_oldest": (i64, [vp]), "fr_ready": (i32, [vp]), "fr_handled": (i64, [vp]),
        "fr_max_call": (i64, [vp]), "fr_set_timing": (None, [vp, ctypes.c_int]),
        "fr_slot_of": (vp, [vp, ctypes.c_int]), "fr_enable": (None, [vp, ctypes.c_int, ctypes.c_int, i64]),
        "fr_pass": (ctypes.c_int, [vp]), "fr_match": (ctypes.c_int, [vp, cp, ctypes.c_int]),
        "fr_itl_cap": (ctypes.c_int, []), "fr_slot_size": (ctypes.c_int, []),
        "fr_out_size": (ctypes.c_int, []), "fr_out_cap": (ctypes.c_int, [vp]),
        "fr_buf_cap": (ctypes.c_long, [vp])})
    if (lib.fr_itl_cap(), lib.fr_slot_size(), lib.fr_out_size()) != (ITL_CAP, ctypes.sizeof(Slot),
                                                                     ctypes.sizeof(Out)):
        log.info("C read pass does not match its Python views; the stream reader runs in Python")
        return None
    return lib
