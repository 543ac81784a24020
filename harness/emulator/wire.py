"""The bytes the emulator writes: TGI 3.x and OpenAI-compatible SSE events and JSON bodies.

Shapes follow TGI's router (``router/src/lib.rs``, ``server.rs``, ``chat.rs``): ``data: `` with a
space (axum 0.7's SSE writer; ``prefix`` picks the framing of another server), ``StreamResponse``
fields in serde order, ``details`` with
``input_length`` on the last event, completion chunks with ``finish_reason: ""`` until the last
one (which carries ``usage``), chat chunks with ``usage: null`` and a final usage-only chunk when
``stream_options.include_usage``, then ``data: [DONE]``.
Token events are built by concatenating pre-encoded fragments: this is the hot path.
"""

from __future__ import annotations

import time

import orjson

from harness.emulator.native import K_OPENAI, K_TGI
from harness.emulator.tokenizer import TEXT_JSON, TGI_TOKEN_JSON, TOKEN_ID_BASE, VOCAB, generated_text, token_id, \
    token_logprob, token_text, token_word

TGI_VERSION = "3.3.6"
FINGERPRINT = f"{TGI_VERSION}-native"
#: axum 0.7 (TGI >= 2.1, vLLM, SGLang): ``data: {...}``; axum 0.6 (TGI <= 2.0): ``data:{...}``
SPACED = b"data: "
COMPACT = b"data:"
_TGI_FIXED = len(b'{"index":,"token":,"generated_text":null,"details":null}\n\n')
_TGI_FRAG_LEN = tuple(len(f) for f in TGI_TOKEN_JSON)
_TEXT_LEN = tuple(len(t) for t in TEXT_JSON)


def done(prefix: bytes = SPACED) -> bytes:
    return prefix + b"[DONE]\n\n"


DONE = done()


def error_body(message: str, error_type: str) -> bytes:
    return orjson.dumps({"error": message, "error_type": error_type})


def sse(obj, prefix: bytes = SPACED) -> bytes:
    return prefix + orjson.dumps(obj) + b"\n\n"


def top_tokens(request_id: int, k: int, n: int) -> list[dict]:
    """The ``n`` most likely tokens at output position ``k`` (1-based): the chosen one first."""
    w = token_word(request_id, k - 1)
    out = []
    for j in range(n):
        v = (w + j * 13) % VOCAB
        out.append({"id": token_id(v), "text": token_text(v), "logprob": round(token_logprob(w) - 0.5 * j, 2),
                    "special": False})
    return out


class TgiStream:
    """``/generate_stream`` (and ``/`` with ``stream: true``)."""

    def __init__(self, request_id: int, input_tokens: int, details: bool, seed, prompt: str | None, *,
                 prefix: bytes = SPACED, finish: str = "length", top_n: int = 0):
        self.rid = request_id
        self.input_tokens = input_tokens
        self.details = details
        self.seed = seed
        self.prompt = prompt  # return_full_text
        self.prefix = prefix
        self.finish = finish
        self.top_n = top_n
        self.plain = top_n == 0      # middle tokens may take the pre-framed hot path
        self._fixed = _TGI_FIXED + len(prefix)
        self.c_parts = (K_TGI, prefix, b"")    # fastemit.c builds this class's chunk() itself

    def chunk(self, k: int) -> bytes:
        """A middle token's event, already framed as one HTTP chunk (the hot path)."""
        w = (self.rid * 31 + (k - 1) * 7) % VOCAB      # tokenizer.token_word, inlined
        n = self._fixed + _TGI_FRAG_LEN[w] + (k > 9) + (k > 99) + (k > 999) + (k > 9999) + 1
        if k > 99999:
            n += len(str(k)) - 5
        return b'%x\r\n%b{"index":%d,"token":%b,"generated_text":null,"details":null}\n\n\r\n' % (
            n, self.prefix, k, TGI_TOKEN_JSON[w])

    def token(self, k: int, last: bool, n: int) -> bytes:
        w = (self.rid * 31 + (k - 1) * 7) % VOCAB      # tokenizer.token_word, inlined
        top = b""
        if self.top_n:
            top = b',"top_tokens":' + orjson.dumps(top_tokens(self.rid, k, self.top_n))
        if not last:
            return b'%b{"index":%d,"token":%b%b,"generated_text":null,"details":null}\n\n' % (
                self.prefix, k, TGI_TOKEN_JSON[w], top)
        text = generated_text(self.rid, n)
        if self.prompt is not None:
            text = self.prompt + text
        det = orjson.dumps({"finish_reason": self.finish, "generated_tokens": n, "seed": self.seed,
                            "input_length": self.input_tokens}) if self.details else b"null"
        return b'%b{"index":%d,"token":%b%b,"generated_text":%b,"details":%b}\n\n' % (
            self.prefix, k, TGI_TOKEN_JSON[w], top, orjson.dumps(text), det)

    def error(self, message: str, error_type: str) -> bytes:
        return self.prefix + error_body(message, error_type) + b"\n\n"

    error_tail = b""


class _OpenAIStream:
    """What the two OpenAI streams share: a middle token is ``_pre + text + _post``; errors are
    TGI's OpenAI error event, then ``[DONE]``."""

    rid: int
    prefix: bytes
    _pre: bytes
    _post: bytes
    _fixed: int
    plain = True

    def chunk(self, k: int) -> bytes:
        """A middle token's event, already framed as one HTTP chunk (the hot path)."""
        w = (self.rid * 31 + (k - 1) * 7) % VOCAB
        return b"%x\r\n%b%b%b\r\n" % (self._fixed + _TEXT_LEN[w], self._pre, TEXT_JSON[w], self._post)

    def error(self, message: str, error_type: str) -> bytes:
        return openai_error_event(message, self.prefix)

    @property
    def error_tail(self) -> bytes:
        return done(self.prefix)

    @property
    def c_parts(self) -> tuple[int, bytes, bytes]:
        """fastemit.c builds chunk() from these."""
        return K_OPENAI, self._pre, self._post


class CompletionStream(_OpenAIStream):
    """``/v1/completions`` with ``stream: true``; ``index`` is the prompt's place in the request."""

    def __init__(self, request_id: int, input_tokens: int, model: str, *, prefix: bytes = SPACED,
                 finish: str = "length", index: int = 0, tail: bool = True):
        self.rid = request_id
        self.input_tokens = input_tokens
        self.prefix = prefix
        self.finish = finish
        self.index = index
        self.tail = tail               # the last prompt of the request closes with [DONE]
        self.created = int(time.time())
        m = orjson.dumps(model)
        self._pre = prefix + b'{"object":"text_completion","id":"","created":%d,"choices":[{"index":%d,"text":' % (
            self.created, index)
        self._post = b',"logprobs":null,"finish_reason":""}],"model":%b,"system_fingerprint":"%b"}\n\n' % (
            m, FINGERPRINT.encode())
        self._model = m
        self._fixed = len(self._pre) + len(self._post)

    def token(self, k: int, last: bool, n: int) -> bytes:
        w = token_word(self.rid, k - 1)
        if not last:
            return self._pre + TEXT_JSON[w] + self._post
        usage = orjson.dumps({"prompt_tokens": self.input_tokens, "completion_tokens": n,
                              "total_tokens": self.input_tokens + n})
        out = (self.prefix + b'{"object":"text_completion","id":"","created":%d,"model":%b,"system_fingerprint":"%b",'
               b'"choices":[{"index":%d,"text":%b,"logprobs":null,"finish_reason":"%b"}],"usage":%b}\n\n'
               % (self.created, self._model, FINGERPRINT.encode(), self.index, TEXT_JSON[w],
                  self.finish.encode(), usage))
        return out + done(self.prefix) if self.tail else out


def chat_logprobs(request_id: int, k: int, top: int) -> dict:
    """One token's ``logprobs`` entry of a chat choice (TGI's ``ChatCompletionLogprobs``)."""
    w = token_word(request_id, k - 1)
    alts = top_tokens(request_id, k, top) if top else []
    return {"token": token_text(w), "logprob": token_logprob(w),
            "top_logprobs": [{"token": t["text"], "logprob": t["logprob"]} for t in alts]}


class ChatStream(_OpenAIStream):
    """``/v1/chat/completions`` with ``stream: true``."""

    def __init__(self, request_id: int, input_tokens: int, model: str, include_usage: bool, *,
                 prefix: bytes = SPACED, finish: str = "length", logprobs: bool = False, top_logprobs: int = 0):
        self.rid = request_id
        self.input_tokens = input_tokens
        self.include_usage = include_usage
        self.prefix = prefix
        self.finish = finish
        self.logprobs = logprobs
        self.top_logprobs = top_logprobs
        self.plain = not logprobs
        self.created = int(time.time())
        self._head = prefix + b'{"object":"chat.completion.chunk","id":"","created":%d,"model":%b,' \
                              b'"system_fingerprint":"%b",' % (self.created, orjson.dumps(model), FINGERPRINT.encode())
        self._pre = self._head + b'"choices":[{"index":0,"delta":{"role":"assistant","content":'
        self._post = b'},"logprobs":null,"finish_reason":null}],"usage":null}\n\n'
        self._fixed = len(self._pre) + len(self._post)

    def _lp(self, k: int) -> bytes:
        if not self.logprobs:
            return b"null"
        return orjson.dumps({"content": [chat_logprobs(self.rid, k, self.top_logprobs)]})

    def token(self, k: int, last: bool, n: int) -> bytes:
        w = token_word(self.rid, k - 1)
        if not last:
            if not self.logprobs:
                return self._pre + TEXT_JSON[w] + self._post
            return self._pre + TEXT_JSON[w] + b'},"logprobs":%b,"finish_reason":null}],"usage":null}\n\n' % self._lp(k)
        out = self._pre + TEXT_JSON[w] + b'},"logprobs":%b,"finish_reason":"%b"}],"usage":null}\n\n' % (
            self._lp(k), self.finish.encode())
        if self.include_usage:
            out += self._head + b'"choices":[],"usage":%b}\n\n' % orjson.dumps(
                {"prompt_tokens": self.input_tokens, "completion_tokens": n,
                 "total_tokens": self.input_tokens + n})
        return out + done(self.prefix)


def openai_error_event(message: str, prefix: bytes = SPACED) -> bytes:
    """TGI's ``into_openai_event``: the status inside is always 422."""
    return sse({"error": {"message": message, "http_status_code": 422}}, prefix)


# -- whole (non-streaming) bodies ---------------------------------------------------------------
def tgi_tokens(request_id: int, n: int) -> list[dict]:
    out = []
    for k in range(n):
        w = token_word(request_id, k)
        out.append({"id": token_id(w), "text": token_text(w), "logprob": token_logprob(w), "special": False})
    return out


def prefill_tokens(inputs: str, input_tokens: int) -> list[dict]:
    """``decoder_input_details``: the (truncated) prompt's tokens; the first has no logprob."""
    words = inputs.split() or [inputs]
    words = words[len(words) - input_tokens:] if input_tokens <= len(words) else words
    out = []
    for i, word in enumerate(words):
        h = sum(word.encode()) % 997
        out.append({"id": TOKEN_ID_BASE + VOCAB + h, "text": word if i == 0 else " " + word,
                    "logprob": None if i == 0 else -round(0.5 + (h % 40) * 0.1, 2)})
    return out


def tgi_generate(request_id: int, n: int, details: bool, seed, prompt: str | None, *, finish: str = "length",
                 prefill: list | None = None, top_n: int = 0, best_of: list | None = None) -> dict:
    text = generated_text(request_id, n)
    if prompt is not None:
        text = prompt + text
    body: dict = {"generated_text": text}
    if details:
        d = {"finish_reason": finish, "generated_tokens": n, "seed": seed, "prefill": prefill or [],
             "tokens": tgi_tokens(request_id, n)}
        if best_of:
            d["best_of_sequences"] = best_of
        if top_n:
            d["top_tokens"] = [top_tokens(request_id, k, top_n) for k in range(1, n + 1)]
        body["details"] = d
    return body


def best_of_sequence(request_id: int, n: int, seed, prompt: str | None, finish: str, prefill: list) -> dict:
    text = generated_text(request_id, n)
    if prompt is not None:
        text = prompt + text
    return {"generated_text": text, "finish_reason": finish, "generated_tokens": n, "seed": seed,
            "prefill": prefill, "tokens": tgi_tokens(request_id, n)}


def completion(request_id: int, n: int, input_tokens: int, model: str, *, finish: str = "length") -> dict:
    return completions_body([(request_id, n, input_tokens, finish)], model)


def completions_body(parts: list[tuple[int, int, int, str]], model: str) -> dict:
    """One ``text_completion`` for every prompt of the request: (rid, tokens, input tokens, finish)."""
    prompt = sum(p[2] for p in parts)
    out = sum(p[1] for p in parts)
    return {"object": "text_completion", "id": "", "created": int(time.time()), "model": model,
            "system_fingerprint": FINGERPRINT,
            "choices": [{"index": i, "text": generated_text(rid, n), "logprobs": None, "finish_reason": fin}
                        for i, (rid, n, _, fin) in enumerate(parts)],
            "usage": {"prompt_tokens": prompt, "completion_tokens": out, "total_tokens": prompt + out}}


def chat_completion(request_id: int, n: int, input_tokens: int, model: str, *, finish: str = "length",
                    logprobs: bool = False, top_logprobs: int = 0) -> dict:
    lp = {"content": [chat_logprobs(request_id, k, top_logprobs) for k in range(1, n + 1)]} if logprobs else None
    return {"object": "chat.completion", "id": "", "created": int(time.time()), "model": model,
            "system_fingerprint": FINGERPRINT,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": generated_text(request_id, n)},
                         "logprobs": lp, "finish_reason": finish}],
            "usage": {"prompt_tokens": input_tokens, "completion_tokens": n, "total_tokens": input_tokens + n}}
