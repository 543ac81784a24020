"""Argument types for every ``slm-harness`` command: bad values are refused while parsing.

argparse calls these before the command starts, so a level of ``inf``, ``--replicas 0``, a URL
with a port of ``notaport`` or ``--results`` pointing at a file ends in one line and exit code 2
before any replica is launched or any load is sent. Each type returns what the command already
expected (the text itself where the command parses it further), so a parser only gains a
``type=``. :class:`Parser` makes argparse's own errors one line too.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Callable

from harness.scenario.models import MAX_LEVEL, MAX_REPLICAS
from harness.urls import check_http_url, resolve_host

MAX_PROCESSES = 1024


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``slm-harness: error: --flag: why``), exit 2."""

    def error(self, message: str):  # noqa: D102 - argparse's hook
        message = re.sub(r"^argument ([^:]+): ", r"\1: ", message)
        self.exit(2, f"slm-harness: error: {message} (see `{self.prog} --help`)\n")


def _fail(message: str):
    raise argparse.ArgumentTypeError(message)


# -- numbers ------------------------------------------------------------------------------------
def _number(text: str, kind: type) -> float:
    try:
        value = kind(text)
    except (TypeError, ValueError):
        _fail(f"expected {'a whole number' if kind is int else 'a number'}, got {text!r}")
    if kind is float and not math.isfinite(value):
        _fail(f"expected a finite number, got {text!r}")
    return value


def int_range(lo: int, hi: int) -> Callable[[str], int]:
    """A whole number from ``lo`` to ``hi``."""
    def parse(text: str) -> int:
        v = int(_number(text, int))
        if not lo <= v <= hi:
            _fail(f"must be from {lo} to {hi}, got {v}")
        return v
    parse.__name__ = "whole number"
    return parse


def float_range(lo: float, hi: float, *, lo_open: bool = False) -> Callable[[str], float]:
    """A finite number in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``)."""
    def parse(text: str) -> float:
        v = _number(text, float)
        if v < lo or (lo_open and v == lo) or v > hi:
            _fail(f"must be {'above' if lo_open else 'at least'} {lo:g} and at most {hi:g}, got {text}")
        return v
    parse.__name__ = "number"
    return parse


replicas = int_range(1, MAX_REPLICAS)
processes = int_range(0, MAX_PROCESSES)
port = int_range(1, 65535)
port_or_zero = int_range(0, 65535)
seconds = float_range(0, 7 * 24 * 3600, lo_open=True)


def levels_text(text: str) -> str:
    """Comma-separated levels, each finite, above 0 and at most the schema's bound."""
    parts = [p.strip() for p in text.split(",")]
    if not text.strip() or any(not p for p in parts):
        _fail(f"expected numbers separated by commas, e.g. 8,32,128 (got {text!r})")
    for p in parts:
        v = _number(p, float)
        if not 0 < v <= MAX_LEVEL:
            _fail(f"each level must be above 0 and at most {MAX_LEVEL}, got {p}")
    return text


def gpus_text(text: str) -> str:
    """Comma-separated GPU indices (0, 1, ...)."""
    for p in text.split(","):
        if not p.strip().isdigit():
            _fail(f"expected GPU indices separated by commas, e.g. 0,1 (got {text!r})")
    return text


# -- addresses ------------------------------------------------------------------------------------
def url(text: str) -> str:
    """An http(s) base URL (checked in form only: its host may not exist yet, e.g. in compose)."""
    try:
        return check_http_url(text)
    except ValueError as e:
        _fail(str(e))


def urls_text(text: str) -> str:
    """Comma-separated replica URLs the run is about to load: well formed, and each host resolves
    from here (a typo in a host is bad input, not a replica that failed to come up)."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        _fail(f"expected URLs separated by commas (got {text!r})")
    for p in parts:
        try:
            resolve_host(check_http_url(p))
        except ValueError as e:
            _fail(str(e))
    return text


def host_port_text(text: str) -> str:
    """``HOST:PORT`` (HOST may be empty for 127.0.0.1)."""
    host, sep, p = text.rpartition(":")
    if not sep:
        _fail(f"expected HOST:PORT, got {text!r}")
    port_or_zero(p)
    if host and not re.fullmatch(r"[A-Za-z0-9_.\-\[\]:]+", host):
        _fail(f"{host!r} is not a host name or address")
    return text


# -- paths ------------------------------------------------------------------------------------------
def _nearest_existing(p: Path) -> Path:
    p = p.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _probe_writable(d: Path, shown: str) -> None:
    """Create and remove a scratch directory in ``d``: the only test that holds for root,
    read-only mounts and /proc alike."""
    try:
        tempfile.TemporaryDirectory(dir=d, prefix=".slm-harness-probe-").cleanup()
    except OSError as e:
        _fail(f"cannot write in {d} ({e.strerror or type(e).__name__}): {shown}")


def writable_dir(text: str) -> str:
    """A directory to create or write in: not a file, not under one, writable by this user."""
    p = Path(text)
    if p.exists() and not p.is_dir():
        _fail(f"is a file, not a directory: {text}")
    base = _nearest_existing(p)
    if not base.is_dir():
        _fail(f"{base} is a file, so {text} cannot be a directory")
    if str(base.resolve()).startswith(("/proc", "/sys", "/dev")):
        _fail(f"{text} is in a kernel file system, not a place for results")
    _probe_writable(base, text)
    return text


def writable_dir_path(text: str) -> Path:
    return Path(writable_dir(text))


def output_file(text: str) -> str:
    """A file to write at the end of a command: its directory must exist and be writable now,
    not after an hour of load."""
    p = Path(text)
    if not text or p.is_dir():
        _fail(f"is a directory, not a file: {text}")
    parent = p.absolute().parent
    if not parent.exists():
        _fail(f"directory {parent} does not exist (for {text})")
    if not parent.is_dir():
        _fail(f"{parent} is not a directory (for {text})")
    if str(parent.resolve()).startswith(("/proc", "/sys")):
        _fail(f"{text} is in a kernel file system")
    if p.exists() and not os.access(p, os.W_OK):
        _fail(f"cannot write {text} (permission denied)")
    _probe_writable(parent, text)
    return text


def existing_dir(text: str, what: str = "directory") -> str:
    """A directory that must already exist."""
    p = Path(text)
    if not p.exists():
        _fail(f"{what} not found: {text}")
    if not p.is_dir():
        _fail(f"is a file, not a {what}: {text}")
    return text


def run_dir(text: str) -> str:
    """A run directory to read or go on with."""
    return existing_dir(text, "run directory")


# -- before the load ---------------------------------------------------------------------------------
def preflight(scenario, path: str) -> None:
    """What ``run`` and ``sweep`` check once the scenario is loaded and before anything starts:
    credentials named but not set here (exit 2), and a one-line note on a default a user may not
    expect (no ``target:`` means the built-in emulator)."""
    from harness.scenario.preflight import check_environment, defaults_note

    check_environment(scenario, path)
    note = defaults_note(scenario)
    if note:
        print(f"slm-harness: {path}: {note}", file=sys.stderr)
