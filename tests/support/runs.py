"""``slm-harness run`` end to end in its own process, and the run directory it writes."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from harness.records.rundir import read_table
from tests.support.processes import ROOT, bare_env


def write(tmp_path: Path, text: str, name: str = "s.yaml") -> str:
    """``text`` as the scenario file ``tmp_path/name``; its path."""
    f = tmp_path / name
    f.write_text(text)
    return str(f)


def run_cli(args, tmp_path: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """``slm-harness run ARGS`` into ``tmp_path/res`` with its summary in ``tmp_path/sum.json``,
    in a bare environment (PATH and PYTHONPATH only)."""
    return subprocess.run([sys.executable, "-m", "harness", "run", *args, "--results", str(tmp_path / "res"),
                           "--json", str(tmp_path / "sum.json")], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=bare_env())


def only_run(results: Path) -> Path:
    """The one run directory under ``results``."""
    (d,) = [p for p in results.iterdir() if p.is_dir()]
    return d


def run_dir(tmp_path: Path) -> Path:
    """The one run directory under ``tmp_path/res``."""
    return only_run(tmp_path / "res")


def measuring(results: Path, cell: str | None = None) -> Callable[[], bool]:
    """A predicate for ``wait_for``: True once the run under ``results`` has request rows of a
    measured window (of ``cell``, else of any cell) in its journal; a signal sent then meets a run
    inside a cell with rows written, however long a loaded machine took to get there."""
    def rows() -> bool:
        runs = [d for d in results.glob("*") if d.is_dir() and not d.is_symlink()]
        return bool(runs) and bool((read_table(runs[0], "requests", cell=cell).phase == "measure").any())
    return rows
