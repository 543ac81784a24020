"""Synthetic prompts of a given length in tokens.

Without the served model's tokenizer the harness builds prompts from short, common English words
that single-token BPE vocabularies (GPT-2, Llama, SmolLM) keep whole, each preceded by a space,
so ``n`` words are close to ``n`` tokens; the emulator counts whitespace-separated words. A
random start and stride per prompt keep prompts distinct so prefix caches do not flatter a run.
"""

from __future__ import annotations

import random

WORDS = ("the of and to in is was for on are with as it be at by this had not but from or have an they "
         "which one you were all we her she there would their will when who him been has more if no out "
         "so said what up its about than into them can only other new some could time these two may then "
         "do first any my now such like our over man me even most made after also did many before must "
         "through back years where much your way well down should because each just those people how too "
         "little state good very make world still own see men work long get here between both life being "
         "under never day same another know while last might us great old year off come since against go "
         "came right used take three").split()


def synthetic_prompt(n_tokens: int, rng: random.Random) -> str:
    """``n_tokens`` words chosen deterministically from ``rng``."""
    k = len(WORDS)
    start = rng.randrange(k)
    stride = rng.randrange(1, k - 1)
    while k % stride == 0 or stride % k == 0:
        stride += 1
    return " ".join(WORDS[(start + i * stride) % k] for i in range(max(1, n_tokens)))
