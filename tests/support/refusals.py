"""Bad-input tables: scenario files a user gets wrong, each written to a file and refused by
``slm-harness validate`` with exit code 2 and one line, ``FILE:LINE: field.path: message``.

A table's rows are ``(case name, YAML text, line, field path or None, fragment of the message)``;
``field`` is None where the file has no field to name (invalid YAML, not a mapping)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.cli import main

ErrorCase = tuple[str, str, int, str | None, str]


def error_table(cases: list[ErrorCase]):
    """``pytest.mark.parametrize`` over a table, each case named by its first column."""
    return pytest.mark.parametrize("name,text,line,field,fragment", cases, ids=[c[0] for c in cases])


def write_case(tmp_path: Path, name: str, text: str) -> Path:
    """``text`` as the scenario file ``tmp_path/NAME.yaml``."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


def assert_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, text: str,
                   line: int, field: str | None, fragment: str) -> None:
    """Write the case, validate it through the command line's ``main``: exit code 2, no
    traceback, one line that names the file and line (and the field), and holds ``fragment``."""
    path = write_case(tmp_path, name, text)
    rc = main(["validate", str(path)])
    out = capsys.readouterr()
    err = out.err.strip()
    assert rc == 2, out
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err  # one problem in each of these files, so one line
    prefix = f"slm-harness: error: {path}:{line}: "
    assert err.startswith(prefix), err
    if field is not None:
        assert err.startswith(prefix + field + ": "), err
    assert fragment in err, err
