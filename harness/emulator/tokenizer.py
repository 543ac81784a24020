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
    """Words; a non-empty text without any (only whitespace) is still one token, as TGI's
    tokenizers give it at least one."""
    return len(text.split()) or (1 if text else 0)


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


def simple_tokens(text: str) -> list[dict]:
    """TGI's ``/tokenize`` answer: each token's id, text and character span."""
    import re
    out = []
    for m in re.finditer(r"\S+", text):
        h = sum(m.group().encode()) % 997
        out.append({"id": TOKEN_ID_BASE + VOCAB + h, "text": m.group(), "start": m.start(), "stop": m.end()})
    if not out and text:
        out.append({"id": TOKEN_ID_BASE + VOCAB, "text": text, "start": 0, "stop": len(text)})
    return out


def _content_text(message: dict) -> str:
    content = message.get("content")
    if content is None:          # a tool-call message: TGI templates the calls as JSON
        return orjson.dumps(message.get("tool_calls") or []).decode()
    if isinstance(content, str):
        return content
    parts = []
    for kind, chunk in content:
        parts.append(chunk["text"] if kind == "text" else f"![]({chunk['image_url']['url']})")
    return "".join(parts)


def chat_template(messages: list[dict], spec) -> str:
    """The prompt a chat request becomes: ChatML-like markers, as many tokens per message
    (``chat_tokens_per_message``) and for the reply (``chat_tokens_generation_prompt``) as the
    profile says, so ``count_tokens`` of it is the request's input length."""
    words: list[str] = []
    per = spec.chat_tokens_per_message
    for m in messages:
        head = ["<|im_start|>" + m["role"]] + ["<|im_sep|>"] * max(0, per - 2)
        words += head[:max(0, per - 1)] + _content_text(m).split() + (["<|im_end|>"] if per >= 1 else [])
    gen = spec.chat_tokens_generation_prompt
    words += (["<|im_start|>assistant"] + ["<|im_sep|>"] * max(0, gen - 1))[:gen]
    return " ".join(words)
