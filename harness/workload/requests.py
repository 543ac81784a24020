"""The stream of :class:`RequestSpec` a load generator process sends, reproducible from the seed.

Each generator process (worker ``index``) draws from its own ``Random(seed, index)`` stream, so a
run with the same seed and worker count sends the same prompts and lengths in the same order.
"""

from __future__ import annotations

import random

from harness.protocols.base import RequestSpec
from harness.workload.dataset import load_dataset
from harness.workload.lengths import length_sampler
from harness.workload.prompts import synthetic_prompt


class RequestFactory:
    """Draws the next request: prompt and output length from the scenario's workload."""

    def __init__(self, workload, stream: int = 0):
        self.rng = random.Random(f"{workload.seed}:{stream}")
        self._prompt_len = length_sampler(workload.prompt_tokens, self.rng)
        self._output_len = length_sampler(workload.output_tokens, self.rng)
        self._rows = load_dataset(workload.dataset, workload.seed) if workload.dataset else None
        self._pos = (stream * 7919) % len(self._rows) if self._rows else 0
        self._next_id = 0
        self._stream = stream
        sp = workload.shared_prefix
        # the same prefixes in every stream and worker: seeded by the workload's seed alone
        self._prefixes = [synthetic_prompt(sp.tokens, random.Random(f"prefix:{workload.seed}:{i}"))
                          for i in range(sp.count)] if sp else None
        self._prefix_tokens = sp.tokens if sp else 0

    def next(self) -> RequestSpec:
        spec = self._next()
        if self._prefixes:
            spec.prompt = self.rng.choice(self._prefixes) + " " + spec.prompt
            spec.input_tokens += self._prefix_tokens
        return spec

    def _next(self) -> RequestSpec:
        self._next_id += 1
        rid = (self._stream << 40) | self._next_id
        if self._rows:
            row = self._rows[self._pos]
            self._pos = (self._pos + 1) % len(self._rows)
            out = row.output_tokens or self._output_len()
            n_in = row.input_tokens if row.input_tokens is not None else len(row.prompt.split())
            return RequestSpec(row.prompt, n_in, out, rid, row.extra_body)
        n = self._prompt_len()
        return RequestSpec(synthetic_prompt(n, self.rng), n, self._output_len(), rid)
