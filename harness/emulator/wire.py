"""The bytes the emulator writes: TGI 3.x and OpenAI-compatible SSE events and JSON bodies.

Shapes follow TGI's router (``router/src/lib.rs``, ``server.rs``, ``chat.rs``): ``data:`` without a
space (axum's SSE writer), ``StreamResponse`` fields in serde order, ``details`` with
``input_length`` on the last event, completion chunks with ``finish_reason: ""`` until the last
one (which carries ``usage``), chat chunks with ``usage: null`` and a final usage-only chunk when
``stream_options.include_usage``, then ``data:[DONE]``.
Token events are built by concatenating pre-encoded fragments: this is the hot path.
"""

from __future__ import annotations

import time

import orjson

from harness.emulator.native import K_OPENAI, K_TGI
from harness.emulator.tokenizer import TEXT_JSON, TGI_TOKEN_JSON, VOCAB, generated_text, token_id, token_logprob, \
    token_text, token_word

TGI_VERSION = "3.3.6"
FINGERPRINT = f"{TGI_VERSION}-native"
DONE = b"data:[DONE]\n\n"
_TGI_FIXED = len(b'data:{"index":,"token":,"generated_text":null,"details":null}\n\n')
_TGI_FRAG_LEN = tuple(len(f) for f in TGI_TOKEN_JSON)
_TEXT_LEN = tuple(len(t) for t in TEXT_JSON)


def error_body(message: str, error_type: str) -> bytes:
    return orjson.dumps({"error": message, "error_type": error_type})


def sse(obj) -> bytes:
    return b"data:" + orjson.dumps(obj) + b"\n\n"


class TgiStream:
    """``/generate_stream`` (and ``/`` with ``stream: true``)."""

    c_parts = (K_TGI, b"", b"")    # fastemit.c builds this class's chunk() itself

    def __init__(self, request_id: int, input_tokens: int, details: bool, seed, prompt: str | None):
        self.rid = request_id
        self.input_tokens = input_tokens
        self.details = details
        self.seed = seed
        self.prompt = prompt  # return_full_text

    def chunk(self, k: int) -> bytes:
        """A middle token's event, already framed as one HTTP chunk (the hot path)."""
        w = (self.rid * 31 + (k - 1) * 7) % VOCAB      # tokenizer.token_word, inlined
        n = _TGI_FIXED + _TGI_FRAG_LEN[w] + (k > 9) + (k > 99) + (k > 999) + (k > 9999) + 1
        if k > 99999:
            n += len(str(k)) - 5
        return b'%x\r\ndata:{"index":%d,"token":%b,"generated_text":null,"details":null}\n\n\r\n' % (
            n, k, TGI_TOKEN_JSON[w])

    def token(self, k: int, last: bool, n: int) -> bytes:
        w = (self.rid * 31 + (k - 1) * 7) % VOCAB      # tokenizer.token_word, inlined
        if not last:
            return b'data:{"index":%d,"token":%b,"generated_text":null,"details":null}\n\n' % (k, TGI_TOKEN_JSON[w])
        text = generated_text(self.rid, n)
        if self.prompt is not None:
            text = self.prompt + text
        det = orjson.dumps({"finish_reason": "length", "generated_tokens": n, "seed": self.seed,
                            "input_length": self.input_tokens}) if self.details else b"null"
        return b'data:{"index":%d,"token":%b,"generated_text":%b,"details":%b}\n\n' % (
            k, TGI_TOKEN_JSON[w], orjson.dumps(text), det)

    @staticmethod
    def error(message: str, error_type: str) -> bytes:
        return b"data:" + error_body(message, error_type) + b"\n\n"

    error_tail = b""


class _OpenAIStream:
    """What the two OpenAI streams share: a middle token is ``_pre + text + _post``; errors are
    TGI's OpenAI error event, then ``[DONE]``."""

    rid: int
    _pre: bytes
    _post: bytes
    _fixed: int

    def chunk(self, k: int) -> bytes:
        """A middle token's event, already framed as one HTTP chunk (the hot path)."""
        w = (self.rid * 31 + (k - 1) * 7) % VOCAB
        return b"%x\r\n%b%b%b\r\n" % (self._fixed + _TEXT_LEN[w], self._pre, TEXT_JSON[w], self._post)

    @staticmethod
    def error(message: str, error_type: str) -> bytes:
        return openai_error_event(message)

    error_tail = DONE

    @property
    def c_parts(self) -> tuple[int, bytes, bytes]:
        """fastemit.c builds chunk() from these."""
        return K_OPENAI, self._pre, self._post


class CompletionStream(_OpenAIStream):
    """``/v1/completions`` with ``stream: true``."""

    def __init__(self, request_id: int, input_tokens: int, model: str, space: bool = False):
        self.rid = request_id
        self.input_tokens = input_tokens
        self.created = int(time.time())
        m = orjson.dumps(model)
        self._data = b"data: " if space else b"data:"   # vLLM/SGLang/OpenAI framing, or TGI's
        self._pre = self._data + b'{"object":"text_completion","id":"","created":%d,"choices":[{"index":0,"text":' % self.created
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
        return (self._data + b'{"object":"text_completion","id":"","created":%d,"model":%b,"system_fingerprint":"%b",'
                b'"choices":[{"index":0,"text":%b,"logprobs":null,"finish_reason":"length"}],"usage":%b}\n\n'
                % (self.created, self._model, FINGERPRINT.encode(), TEXT_JSON[w], usage)) + DONE



class ChatStream(_OpenAIStream):
    """``/v1/chat/completions`` with ``stream: true``."""

    def __init__(self, request_id: int, input_tokens: int, model: str, include_usage: bool, space: bool = False):
        self.rid = request_id
        self.input_tokens = input_tokens
        self.include_usage = include_usage
        self.created = int(time.time())
        self._head = (b"data: " if space else b"data:") + b'{"object":"chat.completion.chunk","id":"","created":%d,"model":%b,' \
                     b'"system_fingerprint":"%b",' % (self.created, orjson.dumps(model), FINGERPRINT.encode())
        self._pre = self._head + b'"choices":[{"index":0,"delta":{"role":"assistant","content":'
        self._post = b'},"logprobs":null,"finish_reason":null}],"usage":null}\n\n'
        self._fixed = len(self._pre) + len(self._post)

    def token(self, k: int, last: bool, n: int) -> bytes:
        w = token_word(self.rid, k - 1)
        if not last:
            return self._pre + TEXT_JSON[w] + self._post
        out = self._pre + TEXT_JSON[w] + b'},"logprobs":null,"finish_reason":"length"}],"usage":null}\n\n'
        if self.include_usage:
            out += self._head + b'"choices":[],"usage":%b}\n\n' % orjson.dumps(
                {"prompt_tokens": self.input_tokens, "completion_tokens": n,
                 "total_tokens": self.input_tokens + n})
        return out + DONE



def openai_error_event(message: str) -> bytes:
    """TGI's ``into_openai_event``: the status inside is always 422."""
    return sse({"error": {"message": message, "http_status_code": 422}})


# -- whole (non-streaming) bodies ---------------------------------------------------------------
def tgi_tokens(request_id: int, n: int) -> list[dict]:
    out = []
    for k in range(n):
        w = token_word(request_id, k)
        out.append({"id": token_id(w), "text": token_text(w), "logprob": token_logprob(w), "special": False})
    return out


def tgi_generate(request_id: int, n: int, details: bool, seed, prompt: str | None) -> dict:
    text = generated_text(request_id, n)
    if prompt is not None:
        text = prompt + text
    body: dict = {"generated_text": text}
    if details:
        body["details"] = {"finish_reason": "length", "generated_tokens": n, "seed": seed, "prefill": [],
                           "tokens": tgi_tokens(request_id, n)}
    return body


def completion(request_id: int, n: int, input_tokens: int, model: str) -> dict:
    return {"object": "text_completion", "id": "", "created": int(time.time()), "model": model,
            "system_fingerprint": FINGERPRINT,
            "choices": [{"index": 0, "text": generated_text(request_id, n), "logprobs": None,
                         "finish_reason": "length"}],
            "usage": {"prompt_tokens": input_tokens, "completion_tokens": n, "total_tokens": input_tokens + n}}


def chat_completion(request_id: int, n: int, input_tokens: int, model: str) -> dict:
    return {"object": "chat.completion", "id": "", "created": int(time.time()), "model": model,
            "system_fingerprint": FINGERPRINT,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": generated_text(request_id, n)},
                         "logprobs": None, "finish_reason": "length"}],
            "usage": {"prompt_tokens": input_tokens, "completion_tokens": n, "total_tokens": input_tokens + n}}
