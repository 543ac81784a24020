"""Reading a local input file (a dataset, a trace): every problem is one :class:`InputError`
naming the file, the record (its line, or its index in a JSON array) and the field, exit code 2,
raised when the scenario is loaded, before any load is sent."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import orjson

from harness.errors import InputError


@contextmanager
def reading(path: Path, what: str):
    """Read ``path`` (a ``what``: "dataset", "trace") inside this block: a missing file, an
    unreadable one and text that is not UTF-8 each become one clear error."""
    if not path.is_file():
        raise InputError(f"cannot read {what}: no such file", file=str(path))
    try:
        yield
    except UnicodeDecodeError as e:
        raise InputError(f"not UTF-8 text ({e.reason} at byte {e.start})", file=str(path)) from None
    except OSError as e:
        raise InputError(f"cannot read {what}: {e.strerror}", file=str(path)) from None


def json_records(path: Path, *, array: bool = False) -> Iterator[tuple[int, object]]:
    """(line, value) per non-blank JSONL line; with ``array``, a file holding one JSON array
    gives (index, item) per item (1-based)."""
    with path.open("rb") as fh:
        if array:
            head = fh.read(4096).lstrip()
            fh.seek(0)
            if head.startswith(b"["):
                try:
                    data = orjson.loads(fh.read())
                except orjson.JSONDecodeError as e:
                    raise InputError(f"not valid JSON ({e})", file=str(path)) from None
                yield from enumerate(data, 1)
                return
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError as e:
                raise InputError(f"not valid JSON ({e})", file=str(path), line=lineno) from None
            yield lineno, obj


def json_objects(path: Path) -> Iterator[tuple[int, dict]]:
    """(line, object) per non-blank JSONL line, each of which must be a JSON object."""
    for lineno, obj in json_records(path):
        if not isinstance(obj, dict):
            raise InputError("each line must be a JSON object", file=str(path), line=lineno)
        yield lineno, obj
