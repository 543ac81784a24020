"""Prompts from a JSONL file: one JSON object per line, bad lines reported with their number.

Besides the prompt (and optional output length) a row may carry ``"extra_body": {...}``, merged
into that request's JSON body: per-request sampling fields, or the emulator's fault knob
(``{"emulator_fault": "reset:3"}``) in tests.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import orjson

from harness.errors import InputError


@dataclass(slots=True)
class DatasetRow:
    prompt: str
    output_tokens: int | None
    extra_body: dict | None = None   # optional "extra_body" object: merged into the request body


def load_dataset(ds, seed: int) -> list[DatasetRow]:
    """Read ``ds`` (a scenario ``Dataset``); shuffle with ``seed`` when asked."""
    path = Path(ds.path)
    rows: list[DatasetRow] = []
    try:
        fh = path.open("rb")
    except OSError as e:
        raise InputError(f"cannot read dataset: {e.strerror}", file=str(path)) from None
    with fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError as e:
                raise InputError(f"not valid JSON ({e})", file=str(path), line=lineno) from None
            if not isinstance(obj, dict):
                raise InputError("each line must be a JSON object", file=str(path), line=lineno)
            prompt = obj.get(ds.prompt_field)
            if not isinstance(prompt, str) or not prompt:
                raise InputError("missing or empty prompt", file=str(path), line=lineno, field=ds.prompt_field)
            out = None
            if ds.output_tokens_field:
                out = obj.get(ds.output_tokens_field)
                if not isinstance(out, int) or isinstance(out, bool) or out < 1:
                    raise InputError("output tokens must be a positive integer", file=str(path),
                                     line=lineno, field=ds.output_tokens_field)
            extra = obj.get("extra_body")
            if extra is not None and not isinstance(extra, dict):
                raise InputError("extra_body must be a JSON object", file=str(path), line=lineno,
                                 field="extra_body")
            rows.append(DatasetRow(prompt, out, extra))
    if not rows:
        raise InputError("dataset has no rows", file=str(path))
    if ds.shuffle:
        random.Random(seed).shuffle(rows)
    return rows
