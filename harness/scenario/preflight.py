"""What a valid scenario still needs from the host it runs on (variables, files, DNS, programs),
checked before any load.

The file can be right and the run still doomed: a ``token_env`` naming a variable that is not set
here would make every store write fail (and cost a 30 s timeout) without ever saying why. These
checks name the variable (never its value) at the line that names it. ``validate``, ``run`` and
``sweep`` all call them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import yaml

from harness.errors import InputError, InputErrors
from harness.scenario.loader import _field_path, _Loader, _locate
from harness.scenario.models import Scenario


def _line(file: str | None, loc: tuple) -> int | None:
    try:
        root = yaml.compose(Path(file).read_text(), Loader=_Loader)
    except Exception:  # noqa: BLE001 - the file was readable a moment ago; a line is a courtesy
        return None
    return _locate(root, loc)[0]


def environment_problems(scenario: Scenario) -> list[tuple[tuple, str]]:
    """(location, message) for each host that does not resolve from here, a replica program
    that is not here, and each credential the scenario names but this machine lacks."""
    from harness.urls import resolve_host

    out: list[tuple[tuple, str]] = []
    launcher = scenario.target.launcher
    for i, url in enumerate(getattr(launcher, "urls", None) or []):
        try:
            resolve_host(url)
        except ValueError as e:
            out.append((("target", "launcher", "urls", i), str(e)))
    command = getattr(launcher, "command", None)
    path = getattr(launcher, "env", {}).get("PATH", os.environ.get("PATH"))
    if command and "{" not in command[0] and shutil.which(command[0], path=path) is None:
        out.append((("target", "launcher", "command", 0),
                    f"program not found: {command[0]} (not a file, or not on PATH here)"))
    cfg = scenario.store.influxdb
    if cfg is None:
        return out
    try:
        resolve_host(cfg.url)
    except ValueError as e:
        out.append((("store", "influxdb", "url"), str(e)))
    base = ("store", "influxdb")
    token_file_ok = bool(cfg.token_file) and Path(cfg.token_file).is_file()
    if cfg.token_file and not token_file_ok:
        out.append((base + ("token_file",), f"token file not found: {cfg.token_file}"))
    if "token_env" in cfg.model_fields_set and not os.environ.get(cfg.token_env) and not token_file_ok:
        out.append((base + ("token_env",),
                    f"environment variable {cfg.token_env} is not set (it should hold the "
                    "InfluxDB token; or give token_file)"))
    for key in ("username_env", "password_env"):
        name = getattr(cfg, key)
        if name and not os.environ.get(name):
            out.append((base + (key,), f"environment variable {name} is not set"))
    return out


def check_environment(scenario: Scenario, file: str | os.PathLike | None) -> None:
    """Raise :class:`InputError` (exit 2) naming every credential variable that is not set."""
    problems = environment_problems(scenario)
    if problems:
        f = str(file) if file is not None else None
        raise InputErrors([InputError(msg, file=f, line=_line(f, loc) if f else None,
                                      field=_field_path(loc)) for loc, msg in problems])


def defaults_note(scenario: Scenario) -> str:
    """One line when the scenario leans on a default a user may not expect (no ``target:``)."""
    if "target" not in scenario.model_fields_set:
        return (f"no target: in the file, so it runs against the built-in emulator on this machine "
                f"(profile {scenario.target.launcher.profile}, protocol {scenario.target.protocol})")
    return ""
