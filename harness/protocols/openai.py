"""OpenAI ``/v1/completions`` and ``/v1/chat/completions`` streaming (``stream: true``).

Chunks carry ``choices[0].text`` (completions) or ``choices[0].delta.content`` (chat); the chunk
with a ``finish_reason`` ends the generation (TGI sends ``""`` on the chunks before it, vLLM and
SGLang ``null``); with ``stream_options.include_usage`` a last chunk carries ``usage`` (the
server's exact token counts, which override chunk counting); ``data: [DONE]`` closes. vLLM, SGLang
and OpenAI frame events as ``data: {`` (with a space), TGI as ``data:{``: both are read alike.
"""

from __future__ import annotations

import orjson

from harness.protocols.base import (DONE, FINAL, IGNORE, TOKEN, Final, PlainShape, RequestSpec,
                                    WireProtocol)


class _OpenAIBase(WireProtocol):
    final_then_done = True

    def __init__(self, model: str = "", sampling=None, system_prompt: str | None = None):
        params: dict = {"model": model, "stream": True, "stream_options": {"include_usage": True}}
        if sampling is not None:
            for key in ("temperature", "top_p"):
                v = getattr(sampling, key, None)
                if v is not None:
                    params[key] = v
            if sampling.stop:
                params["stop"] = list(sampling.stop)
            if sampling.ignore_eos:
                params["ignore_eos"] = True
        self._params = params
        self._system = system_prompt

    def event(self, data: bytes):
        if self.plain_token.match(data):   # one token mid-stream: no JSON parse
            return TOKEN, 1, None
        if data == b"[DONE]":
            return DONE, 0, None
        obj, problem = self._decode(data, "choices")
        if problem is not None:
            return problem
        choices = obj["choices"]
        usage = obj.get("usage")
        if not choices:
            if isinstance(usage, dict):
                return FINAL, 0, Final(output_tokens=usage.get("completion_tokens"),
                                       input_tokens=usage.get("prompt_tokens"))
            return IGNORE, 0, None
        c = choices[0]
        text = self._text(c)
        n = 1 if text else 0
        reason = c.get("finish_reason") or None   # TGI: "" until the last chunk
        if reason is not None or isinstance(usage, dict):
            fin = Final(finish_reason=reason)
            if isinstance(usage, dict):
                fin.output_tokens = usage.get("completion_tokens")
                fin.input_tokens = usage.get("prompt_tokens")
            return FINAL, n, fin
        return (TOKEN, 1, None) if n else (IGNORE, 0, None)


class CompletionsProtocol(_OpenAIBase):
    name = "openai-completions"
    path = "/v1/completions"
    # a chunk with non-empty text, a finish_reason of null or "" and no usage object
    plain_token = PlainShape(b"{", b"}", need=b'"finish_reason":', text=b'"text":"', avoid=b'"usage":{',
                             avoid_text=b'"finish_reason":"')

    @staticmethod
    def _text(choice: dict) -> str:
        return choice.get("text") or ""

    def body(self, spec: RequestSpec) -> bytes:
        return orjson.dumps({**self._params, "prompt": spec.prompt, "max_tokens": spec.max_tokens,
                             **(spec.extra_body or {})})


class ChatProtocol(_OpenAIBase):
    name = "openai-chat"
    path = "/v1/chat/completions"
    # a chunk whose delta has non-empty content, with finish_reason null and no usage object
    plain_token = PlainShape(b"{", b"}", need=b'"finish_reason":null', text=b'"content":"',
                             avoid=b'"usage":{')

    @staticmethod
    def _text(choice: dict) -> str:
        delta = choice.get("delta") or {}
        return delta.get("content") or ""

    def body(self, spec: RequestSpec) -> bytes:
        msgs = [{"role": "system", "content": self._system}] if self._system else []
        msgs.append({"role": "user", "content": spec.prompt})
        return orjson.dumps({**self._params, "messages": msgs, "max_tokens": spec.max_tokens,
                             **(spec.extra_body or {})})
