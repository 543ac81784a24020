"""Building the C helpers (harness/cbuild.py; the reader's pass in harness/loadgen/native.py): when
one cannot be built, the reason is given and that part runs in Python; nothing raises."""

from __future__ import annotations

from harness import cbuild
from harness.loadgen import native


def test_the_c_pass_builds_here():
    """CI installs a C compiler (scripts/install-test-deps.sh): the C pass must build and load."""
    lib = native.load()
    assert lib is not None
    assert lib.fr_pass.restype is not None            # functions typed, ready to call


def test_build_compiles_into_the_cache_and_reports_compiler_errors(tmp_path):
    target = tmp_path / "cache" / "fastread-test.so"
    assert cbuild.build(native.SOURCE.read_bytes(), target) is None
    assert target.exists() and target.stat().st_size > 1000
    assert target.stat().st_mode & 0o777 == 0o644          # readable by other users (an image's)
    why = cbuild.build(b"this is not C;", tmp_path / "bad.so")
    assert why is not None and "failed" in why
    assert not (tmp_path / "bad.so").exists()
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".so"] == []   # no temporary left


def test_no_compiler_or_no_writable_cache_gives_a_reason(tmp_path, monkeypatch):
    monkeypatch.setenv("CC", "/nonexistent/cc")
    why = cbuild.build(native.SOURCE.read_bytes(), tmp_path / "x.so")
    assert why is not None and "/nonexistent/cc" in why
    monkeypatch.delenv("CC")
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder should be")   # unwritable even for root
    why = cbuild.build(native.SOURCE.read_bytes(), blocker / "x.so")
    assert why is not None and "SLM_NATIVE_CACHE" in why


def test_switched_off_by_environment(monkeypatch):
    monkeypatch.setenv("SLM_NATIVE", "0")
    assert native.enabled() is False and native.load() is None
    monkeypatch.setenv("SLM_NATIVE", "1")
    assert native.enabled() is True and native.load() is not None
