"""The project's plain-C helpers: built with the machine's C compiler on first use, cached, loaded
through ctypes; None where they cannot be, and the Python code they speed up runs instead.

Two sources: ``loadgen/fastread.c`` (the stream reader's read pass) and ``emulator/fastemit.c``
(the emulator's token writer). Why built here rather than shipped: the files are plain C with no
Python API, so one build serves every Python on the machine, and a source checkout on
``PYTHONPATH`` (the device scripts, a container with a compiler) gets them without an install
step. ``SLM_NATIVE=0`` turns them off (A/B runs, or to rule them out); ``SLM_NATIVE_CACHE`` says
where the built libraries go (default ``$XDG_CACHE_HOME/slm-harness`` or ``~/.cache/slm-harness``).
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
from pathlib import Path

log = logging.getLogger(__name__)

_HERE = Path(__file__).parent
#: Every C source of the package: what ``build_into`` builds ahead of use (an image build).
SOURCES = (_HERE / "loadgen" / "fastread.c", _HERE / "emulator" / "fastemit.c")


def cache_dir() -> Path:
    d = os.environ.get("SLM_NATIVE_CACHE")
    if d:
        return Path(d)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "slm-harness"


def build(src: bytes, target: Path) -> str | None:
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
    """``SLM_NATIVE`` (read at each call, so a test or an A/B run can switch it per process part)."""
    return os.environ.get("SLM_NATIVE", "1").lower() not in ("0", "off", "no", "false")


def library_name(source: Path, src: bytes) -> str:
    """The built library's file name: keyed by the source, so an edited source is rebuilt."""
    return f"{source.stem}-{hashlib.sha256(src).hexdigest()[:16]}.so"


def build_into(folder: str | os.PathLike) -> str | None:
    """Build every library into ``folder`` ahead of use (an image build: the image itself has no
    compiler, and reads them from ``SLM_NATIVE_CACHE``); the reasons it could not, or None."""
    why = []
    for source in SOURCES:
        src = source.read_bytes()
        w = build(src, Path(folder) / library_name(source, src))
        if w:
            why.append(f"{source.name}: {w}")
    return "; ".join(why) or None


def open_library(source: Path, what: str):
    """Build (once per source version) and load ``source``; None where it cannot be, with the
    reason logged at INFO (``what`` names the part that falls back to Python)."""
    if not enabled() or not sys.platform.startswith("linux"):
        return None
    with _LOCK:
        src = source.read_bytes()
        target = cache_dir() / library_name(source, src)
        if not target.exists():
            why = build(src, target)
            if why:
                log.info("%s unavailable (%s); it runs in Python (see docs/loadgen.md)", what, why)
                return None
        try:
            return ctypes.PyDLL(str(target))   # PyDLL keeps the GIL: no wait to get it back per call
        except OSError as e:
            log.info("%s unavailable (%s); it runs in Python", what, e)
            return None


def type_functions(lib, sigs: dict) -> None:
    """Set ``restype``/``argtypes`` from ``{name: (restype, [argtypes])}``."""
    for name, (res, args) in sigs.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args
