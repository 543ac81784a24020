"""Which real server the emulator stands in for: the bytes and routes that differ between them.

``--server tgi`` (the default) is TGI 3.x's router: ``data: `` framing (axum 0.7), ``tgi_*``
metrics, ``/info`` and TGI's native routes, ``{"error", "error_type"}`` bodies. ``vllm`` is vLLM's
OpenAI server: ``vllm:*`` metrics, no ``/info``, 400 ``{"object": "error", ...}`` bodies, a first
chat chunk that carries only the role, and usage only when ``stream_options.include_usage``.
``openai`` is a plain OpenAI-compatible server: no metrics, OpenAI's ``{"error": {...}}`` bodies.
The engine, timing and ground truth are the same for all three. docs/servers.md says which
framing each real server sends.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import orjson

from harness.emulator import schema, wire
from harness.emulator.validation import Invalid

SERVERS = ("tgi", "vllm", "openai")


@dataclass(frozen=True)
class Personality:
    name: str
    prefix: bytes                   # SSE ``data:`` framing
    keep_alive: bytes | None        # SSE comment on a silent stream (None: the server sends none)
    metrics: str                    # "tgi" | "vllm" | "none"
    tgi_routes: bool                # /info, /generate, /generate_stream, /, /tokenize, ...
    version: str = wire.TGI_VERSION

    # -- errors ---------------------------------------------------------------------------------
    @property
    def deserialize_ctype(self) -> bytes:
        return b"text/plain; charset=utf-8" if self.name == "tgi" else b"application/json"

    def deserialize_error(self, e: schema.DeserializeError) -> bytes:
        """A body of the wrong shape: axum's text (TGI) or a 400 JSON error (the others)."""
        if self.name == "tgi":
            return e.text().encode()
        where = f"{e.path}: " if e.path else ""
        return self.error_body(400, where + e.message, "BadRequestError")

    def error_body(self, status: int, message: str, error_type: str) -> bytes:
        if self.name == "tgi":
            return wire.error_body(message, error_type)
        if self.name == "vllm":
            return orjson.dumps({"object": "error", "message": message, "type": "BadRequestError", "param": None,
                                 "code": self.error_status(status)})
        return orjson.dumps({"error": {"message": message, "type": "invalid_request_error", "param": None,
                                       "code": None}})

    def error_status(self, status: int) -> int:
        """TGI answers validation errors 422; vLLM and OpenAI 400 (overload stays 429)."""
        return 400 if status == 422 and self.name != "tgi" else status

    # -- OpenAI routes --------------------------------------------------------------------------
    def models(self, profile) -> dict:
        mid = profile.model.id
        if self.name == "tgi":
            return {"object": "list", "data": [{"id": mid, "object": "model", "created": 0, "owned_by": mid}]}
        card = {"id": mid, "object": "model", "created": int(time.time()), "owned_by": self.name}
        if self.name == "vllm":
            card.update(root=mid, parent=None, max_model_len=profile.limits.max_total_tokens)
        return {"object": "list", "data": [card]}

    def check_openai(self, r: dict, limits) -> None:
        """The ranges vLLM / OpenAI enforce themselves (TGI's own checks follow for TGI)."""
        if self.name == "tgi":
            return
        t = r.get("temperature")
        if t is not None and not 0.0 <= t <= 2.0:
            raise Invalid(f"temperature must be in [0, 2], got {t}.")
        p = r.get("top_p")
        if p is not None and not 0.0 < p <= 1.0:
            raise Invalid(f"top_p must be in (0, 1], got {p}.")
        for k in ("frequency_penalty", "presence_penalty"):
            v = r.get(k)
            if v is not None and not -2.0 <= v <= 2.0:
                raise Invalid(f"{k} must be in [-2, 2], got {v}.")
        m = r.get("max_tokens")
        if m is not None and m < 1:
            raise Invalid(f"max_tokens must be at least 1, got {m}.")

    def completion_stream(self, rid: int, n_in: int, model: str, prefix: bytes, finish: str, index: int, n: int):
        if self.name == "tgi":
            return wire.CompletionStream(rid, n_in, model, prefix=prefix, finish=finish, index=index, tail=n == 1)
        return OpenAICompletionStream(rid, n_in, model, prefix=prefix, finish=finish, index=index, tail=n == 1)

    def chat_stream(self, rid: int, n_in: int, model: str, include_usage: bool, prefix: bytes, finish: str,
                    logprobs: bool, top: int):
        if self.name == "tgi":
            return wire.ChatStream(rid, n_in, model, include_usage, prefix=prefix, finish=finish, logprobs=logprobs,
                                   top_logprobs=top)
        return OpenAIChatStream(rid, n_in, model, include_usage, prefix=prefix, finish=finish, logprobs=logprobs,
                                top_logprobs=top, extra=self.name == "vllm")


class OpenAICompletionStream(wire.CompletionStream):
    """vLLM / OpenAI completions: ``finish_reason: null`` until the last chunk, an id, no usage
    unless asked (``include_usage`` is not modelled for completions: the last chunk has none)."""

    def __init__(self, rid, n_in, model, **kw):
        super().__init__(rid, n_in, model, **kw)
        m = orjson.dumps(model)
        self._pre = self.prefix + b'{"id":"cmpl-%d","object":"text_completion","created":%d,"model":%b,' \
                                  b'"choices":[{"index":%d,"text":' % (rid, self.created, m, self.index)
        self._post = b',"logprobs":null,"finish_reason":null}]}\n\n'
        self._fixed = len(self._pre) + len(self._post)

    def token(self, k: int, last: bool, n: int) -> bytes:
        w = wire.token_word(self.rid, k - 1)
        if not last:
            return self._pre + wire.TEXT_JSON[w] + self._post
        out = self._pre + wire.TEXT_JSON[w] + b',"logprobs":null,"finish_reason":"%b"}]}\n\n' % self.finish.encode()
        return out + wire.done(self.prefix) if self.tail else out

    def error(self, message: str, error_type: str) -> bytes:
        return wire.sse({"error": {"object": "error", "message": message, "type": "BadRequestError",
                                   "param": None, "code": 400}}, self.prefix)


class OpenAIChatStream(wire.ChatStream):
    """vLLM / OpenAI chat: the first chunk carries only the role, later deltas only content; the
    usage chunk (``choices: []``) only with ``include_usage``; vLLM adds ``stop_reason``."""

    def __init__(self, rid, n_in, model, include_usage, *, extra: bool, **kw):
        super().__init__(rid, n_in, model, include_usage, **kw)
        self._head = self.prefix + b'{"id":"chatcmpl-%d","object":"chat.completion.chunk","created":%d,"model":%b,' % (
            rid, self.created, orjson.dumps(model))
        self._pre = self._head + b'"choices":[{"index":0,"delta":{"content":'
        self._stop = b',"stop_reason":null' if extra else b""
        self._post = b'},"logprobs":null,"finish_reason":null%b}]}\n\n' % self._stop
        self._fixed = len(self._pre) + len(self._post)
        self._role = self._head + b'"choices":[{"index":0,"delta":{"role":"assistant","content":""},' \
                                  b'"logprobs":null,"finish_reason":null}]}\n\n'

    def token(self, k: int, last: bool, n: int) -> bytes:
        w = wire.token_word(self.rid, k - 1)
        lead = self._role if k == 1 else b""
        lp = self._lp(k)
        if not last:
            return lead + self._pre + wire.TEXT_JSON[w] + b'},"logprobs":%b,"finish_reason":null%b}]}\n\n' % (
                lp, self._stop)
        out = lead + self._pre + wire.TEXT_JSON[w] + b'},"logprobs":%b,"finish_reason":"%b"%b}]}\n\n' % (
            lp, self.finish.encode(), self._stop)
        if self.include_usage:
            out += self._head + b'"choices":[],"usage":%b}\n\n' % orjson.dumps(
                {"prompt_tokens": self.input_tokens, "completion_tokens": n, "total_tokens": self.input_tokens + n})
        return out + wire.done(self.prefix)

    def error(self, message: str, error_type: str) -> bytes:
        return wire.sse({"error": {"object": "error", "message": message, "type": "BadRequestError",
                                   "param": None, "code": 400}}, self.prefix)


TGI = Personality("tgi", wire.SPACED, b": \n\n", "tgi", True)
VLLM = Personality("vllm", wire.SPACED, None, "vllm", False, version="0.10.1")
OPENAI = Personality("openai", wire.SPACED, None, "none", False, version="1")
PERSONALITIES = {"tgi": TGI, "vllm": VLLM, "openai": OPENAI}
