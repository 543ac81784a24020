"""Trace replay: requests at the times and lengths a production trace recorded, open loop.

Three public formats are read from local files:

- Mooncake (JSONL): ``timestamp`` (ms), ``input_length``, ``output_length``, ``hash_ids`` (one id per
  prompt block of ``block_tokens``; equal ids are equal blocks, so requests that share leading ids
  share a prompt prefix, which a server's prefix cache can reuse);
- Azure LLM inference trace (CSV): ``TIMESTAMP`` (a date and time), ``ContextTokens``,
  ``GeneratedTokens``;
- BurstGPT (CSV): ``Timestamp`` (s), ``Request tokens``, ``Response tokens``; rows with 0 response
  tokens (failed requests in the trace) are skipped.

Each entry keeps its intended send time: its offset from the window's start divided by the
speed-up factor. Prompts are synthetic text of the recorded length (the emulator's token model:
one token per word); a Mooncake block's text follows from its hash id and the seed alone, so
every stream and worker writes the same block the same way.
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from pathlib import Path

from harness.errors import InputError
from harness.protocols.base import RequestSpec
from harness.workload.localfile import json_objects, reading
from harness.workload.prompts import synthetic_prompt

MAX_ENTRIES = 10_000_000


@dataclass(frozen=True, slots=True)
class TraceEntry:
    offset_s: float             # intended send time after the start of the replay
    input_tokens: int
    output_tokens: int
    hash_ids: tuple[int, ...] = ()


def _int(tr, rec, v, field, *, zero_ok=False):
    try:
        n = int(float(v)) if isinstance(v, str) else v
    except ValueError:
        n = None
    if isinstance(n, float) and n.is_integer():
        n = int(n)
    if not isinstance(n, int) or isinstance(n, bool) or n < (0 if zero_ok else 1) or n > 1_000_000:
        raise InputError(f"must be a whole number of tokens, {0 if zero_ok else 1}..1000000",
                         file=str(tr.path), line=rec, field=field)
    return n


def _time(tr, rec, v, field) -> float:
    try:
        t = float(v)
    except (TypeError, ValueError):
        t = float("nan")
    if isinstance(v, bool) or not (t == t) or abs(t) == float("inf") or t < 0:
        raise InputError("must be a finite, non-negative time", file=str(tr.path), line=rec, field=field)
    return t


def _mooncake(tr, path: Path) -> list[tuple[float, int, int, tuple]]:
    out = []
    for line, o in json_objects(path):
        ts = _time(tr, line, o.get("timestamp"), "timestamp") / 1000.0
        n_in = _int(tr, line, o.get("input_length"), "input_length")
        n_out = _int(tr, line, o.get("output_length"), "output_length")
        ids = o.get("hash_ids", [])
        if not isinstance(ids, list) or not all(isinstance(h, int) and not isinstance(h, bool) for h in ids):
            raise InputError("must be a list of integers", file=str(path), line=line, field="hash_ids")
        out.append((ts, n_in, n_out, tuple(ids)))
    return out


def _csv(tr, path: Path, cols: tuple[str, str, str]) -> list[tuple[float, int, int, tuple]]:
    t_col, in_col, out_col = cols
    out = []
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        have = [c.strip() for c in (reader.fieldnames or [])]
        reader.fieldnames = have
        for c in cols:
            if c not in have:
                raise InputError(f"no such column (the header has {', '.join(have) or 'nothing'})",
                                 file=str(path), line=1, field=c)
        stamps: list = []
        try:
            for row in reader:
                line = reader.line_num
                n_out = _int(tr, line, row[out_col], out_col, zero_ok=tr.format == "burstgpt")
                n_in = _int(tr, line, row[in_col], in_col)
                if n_out == 0:
                    continue   # a request that failed in the traced system
                if tr.format == "azure":
                    stamps.append((line, row[t_col]))
                    ts = 0.0
                else:
                    ts = _time(tr, line, row[t_col], t_col)
                out.append((ts, n_in, n_out, ()))
        except csv.Error as e:
            raise InputError(f"not valid CSV ({e})", file=str(path), line=reader.line_num) from None
    if tr.format == "azure":
        import pandas as pd

        parsed = pd.to_datetime(pd.Series([s for _, s in stamps]), errors="coerce", format="mixed")
        for (line, raw), t in zip(stamps, parsed):
            if pd.isna(t):
                raise InputError(f"not a date and time: {raw[:40]!r}", file=str(path), line=line, field=t_col)
        secs = [(t.value / 1e9) for t in parsed]
        out = [(s, a, b, h) for s, (_, a, b, h) in zip(secs, out)]
    return out


def load_trace(tr) -> list[TraceEntry]:
    """Read ``tr`` (a scenario ``Trace``): its entries in the time window, sorted by time, with
    offsets from the window's start divided by the speed-up."""
    path = Path(tr.path)
    with reading(path, "trace"):
        if tr.format == "mooncake":
            raw = _mooncake(tr, path)
        elif tr.format == "azure":
            raw = _csv(tr, path, ("TIMESTAMP", "ContextTokens", "GeneratedTokens"))
        else:
            raw = _csv(tr, path, ("Timestamp", "Request tokens", "Response tokens"))
    if not raw:
        raise InputError("trace has no requests", file=str(path))
    if len(raw) > MAX_ENTRIES:
        raise InputError(f"trace has more than {MAX_ENTRIES} requests", file=str(path))
    raw.sort(key=lambda r: r[0])
    t0 = raw[0][0]
    lo = t0 + tr.start_s
    hi = t0 + tr.end_s if tr.end_s is not None else float("inf")
    out = [TraceEntry((ts - lo) / tr.speedup, a, b, h) for ts, a, b, h in raw if lo <= ts < hi]
    if not out:
        raise InputError(f"no request inside the window {tr.start_s:g}..{tr.end_s if tr.end_s is not None else 'end'} s",
                         file=str(path))
    return out


class TraceFactory:
    """The requests of one replay stream, in trace order: entries ``k, k+share, ...``.

    ``next()`` returns them in order (and wraps around: the load generator draws one request
    ahead, which a finished stream then never sends)."""

    def __init__(self, tr, entries: list[TraceEntry], seed: int, k: int, share: int):
        self.tr = tr
        self.entries = entries[k::share]
        self.seed = seed
        self.rng = random.Random(f"trace:{seed}:{k}")
        self._blocks: dict[int, list[str]] = {}
        self._i = 0
        self._k = k

    def _block(self, h: int) -> list[str]:
        b = self._blocks.get(h)
        if b is None:
            b = self._blocks[h] = synthetic_prompt(self.tr.block_tokens,
                                                   random.Random(f"block:{self.seed}:{h}")).split()
        return b

    def prompt(self, e: TraceEntry) -> str:
        words: list[str] = []
        for h in e.hash_ids:
            if len(words) >= e.input_tokens:
                break
            words.extend(self._block(h))
        words = words[:e.input_tokens]
        if len(words) < e.input_tokens:
            words.extend(synthetic_prompt(e.input_tokens - len(words), self.rng).split())
        return " ".join(words)

    def next(self) -> RequestSpec:
        e = self.entries[self._i % len(self.entries)]
        self._i += 1
        rid = ((self._k + 1) << 40) | self._i
        return RequestSpec(self.prompt(e), e.input_tokens, e.output_tokens, rid)
