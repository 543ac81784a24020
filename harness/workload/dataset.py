"""Prompts from local files: JSONL objects, ShareGPT-style conversations, CSV or Parquet columns.

Users of this field are often air-gapped: nothing is downloaded. Lengths are measured with a
local ``tokenizer.json`` (Hugging Face ``tokenizers``) when the scenario names one, else with the
emulator's token model (one token per word). Every malformed record is one :class:`InputError`
naming the file, the record (its line in JSONL and CSV, its 1-based index in a JSON array or a
Parquet file) and the field, raised when the scenario is loaded, before any load is sent.

Besides the prompt (and optional output length) a JSONL row may carry ``"extra_body": {...}``,
merged into that request's JSON body: per-request sampling fields, or the emulator's fault knob
(``{"emulator_fault": "reset:3"}``) in tests.
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from harness.errors import InputError
from harness.workload.localfile import json_records, reading


@dataclass(slots=True)
class DatasetRow:
    prompt: str
    output_tokens: int | None
    extra_body: dict | None = None   # optional "extra_body" object: merged into the request body
    input_tokens: int | None = None  # the prompt's length in tokens (the dataset's tokenizer)


#: one raw record: (its line or index, the prompt, output tokens, output text, extra_body)
_Raw = tuple[int, str, "int | None", "str | None", "dict | None"]


def token_counter(path: str | None) -> Callable[[list[str]], list[int]]:
    """Counts tokens of a batch of texts: a local ``tokenizer.json``, or the emulator's words."""
    if not path:
        from harness.emulator.tokenizer import count_tokens

        return lambda texts: [count_tokens(t) for t in texts]
    try:
        from tokenizers import Tokenizer
    except ImportError:   # pragma: no cover - a dependency of the package
        raise InputError("the 'tokenizers' package is needed to read a tokenizer.json",
                         file=path) from None
    try:
        tok = Tokenizer.from_file(path)
    except Exception as e:   # the library raises plain Exception for a bad file
        raise InputError(f"not a tokenizer.json ({str(e)[:120]})", file=path) from None
    return lambda texts: [len(e.ids) for e in tok.encode_batch(texts, add_special_tokens=False)]


def _err(ds, rec: int, msg: str, field: str | None = None) -> InputError:
    return InputError(msg, file=str(ds.path), line=rec, field=field)


def _positive_int(ds, rec, v, field):
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, str) and v.strip().isdigit():
        v = int(v.strip())
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise _err(ds, rec, "output tokens must be a positive integer", field)
    return v


def _from_mapping(ds, rec: int, obj) -> _Raw:
    """A JSONL object, a CSV row or a Parquet row: the configured fields."""
    prompt = obj.get(ds.prompt_field)
    if not isinstance(prompt, str) or not prompt.strip():
        raise _err(ds, rec, "missing or empty prompt", ds.prompt_field)
    out = text = None
    if ds.output_tokens_field:
        out = _positive_int(ds, rec, obj.get(ds.output_tokens_field), ds.output_tokens_field)
    if ds.output_field:
        text = obj.get(ds.output_field)
        if not isinstance(text, str) or not text.strip():
            raise _err(ds, rec, "missing or empty output text", ds.output_field)
    extra = obj.get("extra_body")
    if extra is not None and not isinstance(extra, dict):
        raise _err(ds, rec, "extra_body must be a JSON object", "extra_body")
    return rec, prompt, out, text, extra


_HUMAN = {"human", "user"}
_BOT = {"gpt", "assistant", "chatgpt", "bard", "bing", "model"}


def _from_conversation(ds, rec: int, obj) -> _Raw | None:
    """The first human turn and the reply after it; None for a record without such a pair
    (ShareGPT dumps hold many; vLLM skips them too)."""
    if not isinstance(obj, dict):
        raise _err(ds, rec, "each record must be a JSON object")
    key = "conversations" if "conversations" in obj else "messages" if "messages" in obj else None
    if key is None:
        raise _err(ds, rec, "missing 'conversations' (or 'messages') list", "conversations")
    turns = obj[key]
    if not isinstance(turns, list):
        raise _err(ds, rec, "must be a list of turns", key)
    said: list[tuple[str, str]] = []
    for i, t in enumerate(turns):
        where = f"{key}[{i}]"
        if not isinstance(t, dict):
            raise _err(ds, rec, "each turn must be an object", where)
        who = t.get("from", t.get("role"))
        text = t.get("value", t.get("content"))
        if not isinstance(who, str):
            raise _err(ds, rec, "missing speaker ('from' or 'role')", where)
        if not isinstance(text, str):
            raise _err(ds, rec, "missing text ('value' or 'content')", where)
        said.append((who.lower(), text))
    for i in range(len(said) - 1):
        if said[i][0] in _HUMAN and said[i + 1][0] in _BOT and said[i][1].strip() and said[i + 1][1].strip():
            return rec, said[i][1], None, said[i + 1][1], None
    return None


def _read(ds, path: Path) -> list[_Raw]:
    raws: list[_Raw] = []
    if ds.format in ("jsonl", "sharegpt"):
        for rec, obj in json_records(path, array=ds.format == "sharegpt"):
            if ds.format == "sharegpt":
                r = _from_conversation(ds, rec, obj)
                if r is not None:
                    raws.append(r)
                continue
            if not isinstance(obj, dict):
                raise _err(ds, rec, "each line must be a JSON object")
            raws.append(_from_mapping(ds, rec, obj))
    elif ds.format == "csv":
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            cols = reader.fieldnames or []
            for col in (ds.prompt_field, ds.output_tokens_field, ds.output_field):
                if col and col not in cols:
                    raise _err(ds, 1, f"no such column (the header has {', '.join(cols) or 'nothing'})", col)
            try:
                for row in reader:
                    raws.append(_from_mapping(ds, reader.line_num, row))
            except csv.Error as e:
                raise _err(ds, reader.line_num, f"not valid CSV ({e})") from None
    else:   # parquet
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except Exception as e:   # pyarrow's errors for a file that is not Parquet vary
            raise InputError(f"not a Parquet file ({str(e)[:120]})", file=str(path)) from None
        for col in (ds.prompt_field, ds.output_tokens_field, ds.output_field):
            if col and col not in table.column_names:
                raise _err(ds, None, f"no such column (the file has {', '.join(table.column_names)})", col)
        for i, row in enumerate(table.to_pylist(), 1):
            raws.append(_from_mapping(ds, i, row))
    return raws


def load_dataset(ds, seed: int) -> list[DatasetRow]:
    """Read ``ds`` (a scenario ``Dataset``): measure lengths, filter, sample and shuffle with ``seed``."""
    path = Path(ds.path)
    with reading(path, "dataset"):
        raws = _read(ds, path)
    if not raws:
        raise InputError("dataset has no usable records", file=str(path))
    count = token_counter(ds.tokenizer)
    n_in = count([r[1] for r in raws])
    texts = [r[3] for r in raws]
    n_text = count([t for t in texts if t is not None])
    it = iter(n_text)
    rows: list[DatasetRow] = []
    for (rec, prompt, out, text, extra), n in zip(raws, n_in):
        if text is not None:
            out = max(1, next(it))
        if ds.min_prompt_tokens and n < ds.min_prompt_tokens or ds.max_prompt_tokens and n > ds.max_prompt_tokens:
            continue
        if out is not None and (ds.min_output_tokens and out < ds.min_output_tokens
                                or ds.max_output_tokens and out > ds.max_output_tokens):
            continue
        rows.append(DatasetRow(prompt, out, extra, n))
    if not rows:
        raise InputError(f"no record of {len(raws)} is inside the length filters", file=str(path))
    rng = random.Random(seed)
    if ds.sample is not None and ds.sample < len(rows):
        rows = rng.sample(rows, ds.sample)
    elif ds.shuffle:
        rng.shuffle(rows)
    return rows
