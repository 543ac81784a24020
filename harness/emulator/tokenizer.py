"""The emulator's tokenizer: one token per whitespace-separated word.

Real tokenizers give ~1.3 tokens per English word; the emulator needs only a count that a client
can predict exactly (``len(text.split())``) and output text whose token count is its length.
Output tokens are words from a fixed vocabulary, each written with a leading space, so a stream of
N tokens decodes to N words.
"""

from __future__ import annotations

import orjson

WORDS = (
    "the of and to in is that it for on was with as be by at this from or an are not have but had "
    "they which one you were all we can her has there been if more when will would who so no time "
    "model token batch replica power energy latency stream server queue step decode prefill cache "
    "memory bandwidth kernel graph engine load level cell sweep window sample answer question small "
    "language light fast slow first last next each other some any many few over under between into "
    "after before while because where about"
).split()
VOCAB = len(WORDS)
TOKEN_ID_BASE = 1000


def count_tokens(text: str) -> int:
    return len(text.split())


def token_word(request_id: int, k: int) -> int:
    """Which vocabulary word is the k-th (0-based) output token of a request (deterministic)."""
    return (request_id * 31 + k * 7) % VOCAB


def token_text(w: int) -> str:
    return " " + WORDS[w]


def token_id(w: int) -> int:
    return TOKEN_ID_BASE + w


def token_logprob(w: int) -> float:
    return -round(0.05 + (w % 17) * 0.07, 2)


# Pre-encoded JSON fragments, one per vocabulary word: the hot path only concatenates bytes.
TGI_TOKEN_JSON = tuple(
    orjson.dumps({"id": token_id(w), "text": token_text(w), "logprob": token_logprob(w), "special": False})
    for w in range(VOCAB))
TEXT_JSON = tuple(orjson.dumps(token_text(w)) for w in range(VOCAB))


_SPACED = tuple(" " + w for w in WORDS)


def generated_text(request_id: int, n: int) -> str:
    base = request_id * 31
    return "".join([_SPACED[(base + k * 7) % VOCAB] for k in range(n)])
