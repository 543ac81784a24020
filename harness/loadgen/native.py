"""The reader's C pass (``fastread.c``): built with the machine's C compiler on first use, cached,
loaded through ctypes; None where it cannot be, and the reactor then reads in Python.

Why built here rather than shipped: the file is plain C with no Python API, so one build serves
every Python on the machine, and a source checkout on ``PYTHONPATH`` (the device scripts, the
compose image with a compiler) gets it without an install step. ``SLM_NATIVE=0`` turns it off
(A/B runs, or to rule it out); ``SLM_NATIVE_CACHE`` says where the built library goes (default
``$XDG_CACHE_HOME/slm-harness`` or ``~/.cache/slm-harness``).
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from functools import cache
from pathlib import Path

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


def _cache_dir() -> Path:
    d = os.environ.get("SLM_NATIVE_CACHE")
    if d:
        return Path(d)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "slm-harness"


def _build(src: bytes, target: Path) -> str | None:
    """Compile to ``target`` (atomically: concurrent processes may race); an error text or None."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        return "no C compiler (cc/gcc) on PATH"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
        os.close(fd)
    except OSError as e:
        return f"cannot write the build to {target.parent} ({e.strerror or e}); set SLM_NATIVE_CACHE"
    try:
        with tempfile.NamedTemporaryFile("wb", suffix=".c", delete=False) as f:
            f.write(src)
            csrc = f.name
        try:
            p = subprocess.run([cc, "-O2", "-shared", "-fPIC", "-o", tmp, csrc],
                               capture_output=True, text=True, timeout=120, check=False)
        finally:
            os.unlink(csrc)
        if p.returncode != 0:
            return f"{cc} failed: {p.stderr.strip()[-400:]}"
        os.chmod(tmp, 0o644)   # mkstemp's 0600 would keep it from other users (an image's own)
        os.replace(tmp, target)
        return None
    except (OSError, subprocess.SubprocessError) as e:
        return f"build failed: {e}"
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


_LOCK = threading.Lock()   # gevent-aware once patched: greenlets wait for one build, not start their own


def enabled() -> bool:
    """``SLM_NATIVE`` (read at each call, so a test or an A/B run can switch it per reader)."""
    return os.environ.get("SLM_NATIVE", "1").lower() not in ("0", "off", "no", "false")


def load():
    """The loaded library (functions typed), or None (then why is logged once)."""
    if not enabled() or not sys.platform.startswith("linux"):
        return None
    with _LOCK:
        return _load()


def library_name(src: bytes) -> str:
    """The built library's file name: keyed by the source, so an edited source is rebuilt."""
    return f"fastread-{hashlib.sha256(src).hexdigest()[:16]}.so"


def build_into(folder: str | os.PathLike) -> str | None:
    """Build the library into ``folder`` ahead of use (an image build: the image itself has no
    compiler, and reads it from ``SLM_NATIVE_CACHE``); the reason it could not, or None."""
    src = SOURCE.read_bytes()
    return _build(src, Path(folder) / library_name(src))


@cache
def _load():
    src = SOURCE.read_bytes()
    target = _cache_dir() / library_name(src)
    if not target.exists():
        why = _build(src, target)
        if why:
            log.info("C read pass unavailable (%s); the stream reader runs in Python (fine to a few hundred "
                     "streams per process; see docs/loadgen.md)", why)
            return None
    try:
        lib = ctypes.PyDLL(str(target))   # PyDLL keeps the GIL: no wait to get it back per pass
    except OSError as e:
        log.info("C read pass unavailable (%s); the stream reader runs in Python", e)
        return None
    vp, i32, i64, cp = ctypes.c_void_p, ctypes.c_int32, ctypes.c_int64, ctypes.c_char_p
    sigs = {"fr_new": (vp, [ctypes.c_int, cp, ctypes.c_int, cp, ctypes.c_int, cp, ctypes.c_int, ctypes.c_int]),
            "fr_free": (None, [vp]), "fr_buf": (vp, [vp]), "fr_outs": (vp, [vp]),
            "fr_oldest": (i64, [vp]), "fr_ready": (i32, [vp]), "fr_handled": (i64, [vp]),
            "fr_slot_of": (vp, [vp, ctypes.c_int]), "fr_enable": (None, [vp, ctypes.c_int, ctypes.c_int, i64]),
            "fr_pass": (ctypes.c_int, [vp]),
            "fr_itl_cap": (ctypes.c_int, []), "fr_slot_size": (ctypes.c_int, []),
            "fr_out_size": (ctypes.c_int, []), "fr_out_cap": (ctypes.c_int, [vp]),
            "fr_buf_cap": (ctypes.c_long, [vp])}
    for name, (res, args) in sigs.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args
    if (lib.fr_itl_cap(), lib.fr_slot_size(), lib.fr_out_size()) != (ITL_CAP, ctypes.sizeof(Slot),
                                                                     ctypes.sizeof(Out)):
        log.info("C read pass does not match its Python views; the stream reader runs in Python")
        return None
    return lib
