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
        message = re.sub(r"^argument ([^:]+): ",
                         lambda m: max(m.group(1).split("/"), key=len) + ": ", message)
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
    """Comma-separated replica URLs the run is about to load: well formed now, and (checked by
    :func:`check_args` before the command runs) each host resolves from here: a typo in a host
    is bad input, not a replica that failed to come up."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        _fail(f"expected URLs separated by commas (got {text!r})")
    for p in parts:
        url(p)
    return _ResolvableUrls(text)


def host_port_text(text: str) -> str:
    """``HOST:PORT`` (HOST may be empty for 127.0.0.1)."""
    host, sep, p = text.rpartition(":")
    if not sep:
        _fail(f"expected HOST:PORT, got {text!r}")
    port_or_zero(p)
    if host and not re.fullmatch(r"[A-Za-z0-9_.\-\[\]:]+", host):
        _fail(f"{host!r} is not a host name or address")
    return text


def split_host_port(text: str, field: str) -> tuple[str, int]:
    """``HOST:PORT`` as (host, port), an empty HOST meaning 127.0.0.1; a bad one is bad input
    for ``field``."""
    from harness.errors import InputError

    host, _, port = text.rpartition(":")
    try:
        return (host or "127.0.0.1", int(port))
    except ValueError:
        raise InputError(f"expected HOST:PORT (got {text!r})", field=field) from None


# -- checks that need this machine ---------------------------------------------------------------
class Deferred(str):
    """Text whose check needs this machine (files, permissions, DNS). Parsing stays pure (the docs
    test parses every command they show); :func:`check_args` runs these checks right before the
    command starts, still before any replica is launched or any load is sent."""

    def check(self) -> None:
        raise NotImplementedError


class _ResolvableUrls(Deferred):
    def check(self) -> None:
        for p in (p.strip() for p in self.split(",") if p.strip()):
            try:
                resolve_host(p)
            except ValueError as e:
                _fail(str(e))


def _nearest_existing(p: Path) -> Path:
    p = p.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _in_kernel_fs(p: Path) -> bool:
    parts = p.resolve().parts
    return len(parts) > 1 and parts[1] in ("proc", "sys")


def _probe_writable(d: Path, shown: str) -> None:
    """Create and remove a scratch directory in ``d``: the one test that holds for root,
    read-only mounts and /proc alike."""
    try:
        tempfile.TemporaryDirectory(dir=d, prefix=".slm-harness-probe-").cleanup()
    except OSError as e:
        _fail(f"cannot write in {d} ({e.strerror or type(e).__name__}): {shown}")


class _WritableDir(Deferred):
    def check(self) -> None:
        p = Path(self)
        if p.exists() and not p.is_dir():
            _fail(f"is a file, not a directory: {self}")
        base = _nearest_existing(p)
        if not base.is_dir():
            _fail(f"{base} is a file, so {self} cannot be a directory")
        if _in_kernel_fs(base):
            _fail(f"{self} is in a kernel file system, not a place for results")
        _probe_writable(base, self)


class _OutputFile(Deferred):
    def check(self) -> None:
        p = Path(self)
        if p.is_dir():
            _fail(f"is a directory, not a file: {self}")
        parent = p.absolute().parent
        if not parent.exists():
            _fail(f"directory {parent} does not exist (for {self})")
        if not parent.is_dir():
            _fail(f"{parent} is not a directory (for {self})")
        if _in_kernel_fs(parent):
            _fail(f"{self} is in a kernel file system")
        if p.exists() and not os.access(p, os.W_OK):
            _fail(f"cannot write {self} (permission denied)")
        _probe_writable(parent, self)


class _ExistingDir(Deferred):
    what = "directory"

    def check(self) -> None:
        p = Path(self)
        if not p.exists():
            _fail(f"{self.what} not found: {self}")
        if not p.is_dir():
            _fail(f"is a file, not a {self.what}: {self}")


class _RunDir(_ExistingDir):
    what = "run directory"


class _ExistingFile(Deferred):
    def check(self) -> None:
        p = Path(self)
        if not p.exists():
            _fail(f"file not found: {self}")
        if p.is_dir():
            _fail(f"is a directory, not a file: {self}")
        if not os.access(p, os.R_OK):
            _fail(f"cannot read {self} (permission denied)")


def writable_dir(text: str) -> str:
    """A directory to create or write in: not a file, not under one, writable by this user."""
    if not text:
        _fail("expected a directory")
    return _WritableDir(text)


def output_file(text: str) -> str:
    """A file written at the end of a command: its directory must exist and be writable before
    the command starts, not after an hour of load."""
    if not text:
        _fail("expected a file name")
    return _OutputFile(text)


def existing_dir(text: str) -> str:
    """A directory that must already exist."""
    return _ExistingDir(text)


def run_dir(text: str) -> str:
    """A run directory to read or go on with."""
    return _RunDir(text)


def existing_file(text: str) -> str:
    """A file to read (a certificate, a key)."""
    return _ExistingFile(text)


def _flags(parser: argparse.ArgumentParser, out: dict[str, str]) -> dict[str, str]:
    for action in parser._actions:  # noqa: SLF001 - argparse has no public walk
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            for sub in action.choices.values():
                _flags(sub, out)
        else:
            out.setdefault(action.dest, max(action.option_strings, key=len) if action.option_strings
                           else (action.metavar or action.dest.upper()))
    return out


def check_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Run every :class:`Deferred` check of the parsed arguments; the first failure is an
    :class:`InputError` naming the flag (exit 2)."""
    from harness.errors import InputError

    names = None
    for dest, value in vars(args).items():
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, Deferred):
                try:
                    v.check()
                except argparse.ArgumentTypeError as e:
                    names = names or _flags(parser, {})
                    raise InputError(str(e), field=names.get(dest, dest)) from None


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


def scenario_to_run(path: str, repeats: int | None):
    """The scenario ``run`` and ``sweep`` execute: loaded, checked by :func:`preflight`, with
    ``--repeats N`` (each cell N times, interleaved) in place of load.repeats."""
    from harness.scenario.loader import load_scenario

    scenario = load_scenario(path)
    preflight(scenario, path)
    if repeats:
        scenario = scenario.model_copy(
            update={"load": scenario.load.model_copy(update={"repeats": repeats})})
    return scenario
