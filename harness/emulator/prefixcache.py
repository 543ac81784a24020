"""A prefix cache per replica, as TGI 3.x and vLLM keep one: a prompt whose leading blocks were
prefilled before skips their prefill.

Prompts are cut into blocks of :data:`BLOCK_TOKENS` tokens (the emulator's tokens are words); each
block is keyed by a hash chained over every block before it, so a block hits only when the whole
prefix up to it matches. Only full blocks are cached, at least one token is always prefilled, and
the least recently used blocks are evicted beyond :data:`CAPACITY_BLOCKS`. The ground truth counts
lookups, hits (requests with at least one cached block), hit tokens and prompt tokens, so a
workload with shared prefixes, or sessions kept on one replica, shows what the cache saved.
"""

from __future__ import annotations

from collections import OrderedDict

BLOCK_TOKENS = 16
CAPACITY_BLOCKS = 16384

#: ground-truth counters this module adds (summed over replicas like the others)
COUNTERS = ("prefix_lookups", "prefix_hits", "prefix_hit_tokens", "prefix_prompt_tokens")


class PrefixCache:
    def __init__(self, capacity_blocks: int = CAPACITY_BLOCKS, block: int = BLOCK_TOKENS):
        self.capacity = capacity_blocks
        self.block = block
        self.blocks: OrderedDict[int, None] = OrderedDict()

    def match(self, text: str) -> int:
        """Tokens of ``text``'s prefix already cached; caches every full block of ``text``."""
        words = text.split()
        b = self.block
        h = 0
        hit = 0
        matching = True
        blocks = self.blocks
        for i in range(0, len(words) - b + 1, b):
            h = hash((h, tuple(words[i:i + b])))
            if matching and h in blocks:
                blocks.move_to_end(h)
                hit += b
                continue
            matching = False
            blocks[h] = None
        while len(blocks) > self.capacity:
            blocks.popitem(last=False)
        return hit


def apply(gt, texts: list[str], seqs: list) -> None:
    """Before ``seqs`` are submitted to a replica: look each prompt up in that replica's cache
    (kept on its ground truth ``gt``) and shorten its prefill by the cached tokens."""
    cache = getattr(gt, "prefix_cache", None)
    if cache is None:
        cache = gt.prefix_cache = PrefixCache()
    for text, s in zip(texts, seqs):
        hit = min(cache.match(text), max(0, s.input_tokens - 1))
        gt.prefix_lookups += 1
        gt.prefix_prompt_tokens += s.input_tokens
        if hit:
            gt.prefix_hits += 1
            gt.prefix_hit_tokens += hit
            s.prefill_left = s.input_tokens - hit
