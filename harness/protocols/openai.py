"""OpenAI ``/v1/completions`` and ``/v1/chat/completions`` streaming (``stream: true``).

Chunks carry ``choices[0].text`` (completions) or ``choices[0].delta.content`` (chat); the chunk
with ``finish_reason`` ends the generation; with ``stream_options.include_usage`` a last chunk
carries ``usage`` (exact token counts, which override chunk counting); ``data: [DONE]`` closes.
"""

from __future__ import annotations

import orjson

from harness.protocols.base import (DONE, FINAL, IGNORE, TOKEN, Final, RequestSpec,
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
        reason = c.get("finish_reason")
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

    @staticmethod
    def _text(choice: dict) -> str:
        return choice.get("text") or ""

    def body(self, spec: RequestSpec) -> bytes:
        return orjson.dumps({**self._params, "prompt": spec.prompt, "max_tokens": spec.max_tokens,
                             **(spec.extra_body or {})})


class ChatProtocol(_OpenAIBase):
    name = "openai-chat"
    path = "/v1/chat/completions"

    @staticmethod
    def _text(choice: dict) -> str:
        delta = choice.get("delta") or {}
        return delta.get("content") or ""

    def body(self, spec: RequestSpec) -> bytes:
        msgs = [{"role": "system", "content": self._system}] if self._system else []
        msgs.append({"role": "user", "content": spec.prompt})
        return orjson.dumps({**self._params, "messages": msgs, "max_tokens": spec.max_tokens,
                             **(spec.extra_body or {})})
