"""How N replicas of one server split one GPU's memory, by the servers' own sizing rules.

TGI (v3.3.7) sizes its KV cache once, at warm-up, from the free memory of the WHOLE GPU
(``server/text_generation_server/models/flash_causal_lm.py`` ``warmup`` and
``utils/import_utils.py`` ``get_cuda_free_memory``)::

    kv_i = max(0, free_i - (1 - f_i) * total),   f_i = CUDA_MEMORY_FRACTION_i * TGI_WIGGLE_ROOM

``free_i`` is measured after replica i has loaded its weights and run its warm-up prefill, so it
already excludes what earlier replicas took. With replicas started one after another, each
after the previous is healthy, and every started replica holding the same footprint ``M``
(its non-KV memory plus its KV cache), equal budgets need ``f_i = i * M / total``: the fractions
grow in equal steps, and the last replica's fraction is the whole set's share of the GPU. So
``CUDA_MEMORY_FRACTION_i = share * i / N``. The derivation, with the source lines, is in
docs/stack.md. :func:`simulate_tgi_start` replays the rule for any start order, which is how
the tests check the arithmetic and how the emulator sizes its replicas.
"""

from __future__ import annotations

import json
import logging
import re
import urllib.error
import urllib.request
from dataclasses import dataclass

log = logging.getLogger(__name__)

TGI_WIGGLE_ROOM = 0.90        # models/globals.py: float(os.getenv("TGI_WIGGLE_ROOM", "0.90"))
GPU_MEMORY_SHARE = 0.9        # default CUDA_MEMORY_FRACTION of the last replica (the whole set)
BUDGET_SPREAD_WARN = 0.10     # warn when replicas' KV budgets differ by more than this


def _floor4(x: float) -> float:
    return int(x * 10_000 + 1e-9) / 10_000


def staggered_fractions(replicas: int, share: float = GPU_MEMORY_SHARE) -> list[float]:
    """``--cuda-memory-fraction`` of replica 1..N for sequential start: ``share * i / N``.

    Rounded down to 4 decimals (the last one is ``share`` itself)."""
    if replicas < 1:
        raise ValueError("replicas must be >= 1")
    if not 0 < share <= 1:
        raise ValueError("share must be in (0, 1]")
    return [_floor4(share * i / replicas) for i in range(1, replicas + 1)]


def even_fractions(replicas: int, share: float = GPU_MEMORY_SHARE) -> list[float]:
    """The naive split ``share / N`` each: right for vLLM's per-instance limit, wrong for TGI."""
    if replicas < 1:
        raise ValueError("replicas must be >= 1")
    return [_floor4(share / replicas)] * replicas


def tgi_warmup_tokens(max_batch_prefill_tokens: int, max_input_tokens: int,
                      max_total_tokens: int) -> int:
    """KV tokens of TGI's warm-up batch: requests of up to ``max_input_tokens`` prompt tokens until
    ``max_batch_prefill_tokens`` are reached, each with ``max_total_tokens - truncate`` new
    tokens (backends/v3/src/client/grpc_client.rs ``warmup``), so each holds ``max_total_tokens``.
    TGI adds these blocks to the budget: a replica left no free memory still gets them."""
    requests = -(-max_batch_prefill_tokens // max(1, min(max_input_tokens,
                                                         max_batch_prefill_tokens)))
    return requests * max_total_tokens


def tgi_kv_bytes(free_bytes: float, total_bytes: float, cuda_memory_fraction: float,
                 wiggle_room: float = TGI_WIGGLE_ROOM) -> int:
    """TGI's ``get_free_memory(device, MEMORY_FRACTION * TGI_WIGGLE_ROOM)``: KV bytes it takes."""
    f = cuda_memory_fraction * wiggle_room
    return int(max(0.0, free_bytes - (1.0 - f) * total_bytes))


@dataclass(frozen=True)
class ReplicaMemory:
    """What one replica holds besides its KV cache (bytes)."""

    resident: int             # weights, CUDA context, CUDA graphs: held from warm-up on
    transient: int = 0        # warm-up prefill activations: held while free memory is measured
    warmup_tokens: int = 0    # KV blocks of the warm-up batch (TGI adds them to the budget)


def simulate_tgi_start(total_bytes: int, fractions: list[float], mem: ReplicaMemory,
                       kv_bytes_per_token: int, *, order: list[int] | None = None,
                       loaded_first: bool = False, used_bytes: int = 0) -> list[int]:
    """KV budgets in tokens of replicas warmed up in ``order`` (default 0..N-1), by TGI's rule.

    ``loaded_first``: every replica has loaded its weights before the first one measures (all
    started at once); otherwise each loads just before it measures (one after another).
    ``used_bytes``: memory other processes hold on the GPU.
    """
    n = len(fractions)
    order = list(range(n)) if order is None else order
    used = used_bytes + (n * mem.resident if loaded_first else 0)
    budgets = [0] * n
    for i in order:
        if not loaded_first:
            used += mem.resident
        warm = mem.warmup_tokens * kv_bytes_per_token
        free = total_bytes - used - warm - mem.transient
        kv = tgi_kv_bytes(free, total_bytes, fractions[i])
        tokens = kv // kv_bytes_per_token + mem.warmup_tokens
        budgets[i] = tokens
        used += tokens * kv_bytes_per_token
    return budgets


def budget_spread(budgets: list[int | None]) -> float | None:
    """(max - min) / max of the known budgets; None when fewer than two are known."""
    known = [b for b in budgets if b is not None]
    if len(known) < 2 or max(known) <= 0:
        return None
    return (max(known) - min(known)) / max(known)


# ------------------------------------------------------------------------------------------------
# reading a running replica's budget
# ------------------------------------------------------------------------------------------------
_GAUGES = ("tgi_batch_max_total_tokens",)
_VLLM_BLOCKS = re.compile(r'^vllm:cache_config_info\{([^}]*)\}', re.M)


def _get(url: str, timeout_s: float) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as r:
            return r.read() if r.status == 200 else None
    except (urllib.error.URLError, OSError, ValueError):
        return None


def parse_budget_metrics(text: str) -> int | None:
    """KV budget in tokens from Prometheus text: TGI's gauge, or vLLM's blocks x block size."""
    for line in text.splitlines():
        for g in _GAUGES:
            if line.startswith(g + " ") or line.startswith(g + "{"):
                try:
                    return int(float(line.rsplit(" ", 1)[1]))
                except ValueError:
                    return None
    m = _VLLM_BLOCKS.search(text)
    if m:
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        try:
            return int(labels["num_gpu_blocks"]) * int(labels["block_size"])
        except (KeyError, ValueError):
            return None
    return None


_LOG_LINES = (re.compile(r"Setting max batch total tokens to (\d+)"),     # TGI's router
              re.compile(r"GPU KV cache size: ([\d,]+) tokens"))              # vLLM


def budget_from_log(text: str) -> int | None:
    """The last KV budget a server logged (TGI's router, vLLM, the emulator), or None."""
    found = None
    for line in text.splitlines():
        for pat in _LOG_LINES:
            m = pat.search(line)
            if m:
                found = int(m.group(1).replace(",", ""))
    return found


def read_kv_budget(url: str, timeout_s: float = 3.0) -> int | None:
    """A replica's KV budget in tokens: ``/info`` ``max_batch_total_tokens`` (the emulator, TGI
    builds that expose it), else the ``/metrics`` gauge TGI sets at warm-up
    (``tgi_batch_max_total_tokens``, backends/v3/src/lib.rs) or vLLM's ``cache_config_info``."""
    base = url.rstrip("/")
    body = _get(base + "/info", timeout_s)
    if body:
        try:
            v = json.loads(body).get("max_batch_total_tokens")
            if isinstance(v, int) and v > 0:
                return v
        except (ValueError, AttributeError):
            pass
    text = _get(base + "/metrics", timeout_s)
    return parse_budget_metrics(text.decode(errors="replace")) if text else None


def check_budgets(urls: list[str], warn_spread: float = BUDGET_SPREAD_WARN,
                  echo=print, logs=None) -> dict:
    """Read every replica's KV budget; warn loudly (console and log) when they differ too much.

    ``logs(i)``: replica i's log text, read when its HTTP endpoints tell nothing (the log line).
    Returns ``{"kv_budgets": [...], "kv_budget_spread": x, "kv_budget_warning": str | None}``
    for the manifest and the report.
    """
    budgets = [read_kv_budget(u) for u in urls]
    if logs is not None:
        budgets = [b if b is not None else budget_from_log(logs(i) or "")
                   for i, b in enumerate(budgets)]
    spread = budget_spread(budgets)
    warning = None
    if spread is not None and spread > warn_spread:
        warning = (f"WARNING: replica KV budgets differ by {spread:.0%} (> {warn_spread:.0%}): "
                   f"{budgets} tokens; replicas with a small budget batch fewer requests. Start "
                   "replicas one after another with staggered memory fractions (docs/stack.md).")
        log.warning(warning)
        if echo is not None:
            bar = "!" * 78
            echo(f"{bar}\n{warning}\n{bar}")
    return {"kv_budgets": budgets, "kv_budget_spread": spread, "kv_budget_warning": warning}


def kv_budget_fields(manifest: dict, replicas: int, extra: dict) -> dict:
    """Manifest fields for the budgets a launcher read (``Replicas.extra``), per replica count:
    ``{"kv_budgets": {"N": {budgets, spread, warning}}}``; nothing when none was read."""
    if "kv_budgets" not in extra:
        return {}
    entry = {"budgets": extra["kv_budgets"], "spread": extra.get("kv_budget_spread"),
             "warning": extra.get("kv_budget_warning")}
    return {"kv_budgets": {**manifest.get("kv_budgets", {}), str(replicas): entry}}
