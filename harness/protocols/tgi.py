"""HF TGI ``POST /generate_stream``: one SSE event per token, the last one with ``details``.

Event shape (TGI router): ``{"index":i,"token":{"id","text","logprob","special"},
"generated_text":null|str,"details":null|{"finish_reason","generated_tokens","seed"}}``;
errors are ``{"error": "...", "error_type": "..."}`` either as the HTTP body or as an event.
"""

from __future__ import annotations

import orjson

from harness.protocols.base import FINAL, TOKEN, Final, PlainShape, RequestSpec, WireProtocol


class TgiProtocol(WireProtocol):
    name = "tgi"
    path = "/generate_stream"
    plain_token = PlainShape(b'{"index":', b"}", need=b'"generated_text":null')

    def __init__(self, model: str = "", sampling=None):
        params: dict = {"details": True}
        if sampling is not None:
            for key in ("temperature", "top_p", "top_k", "repetition_penalty"):
                v = getattr(sampling, key, None)
                if v is not None:
                    params[key] = v
            if getattr(sampling, "temperature", None):
                params["do_sample"] = True
            if sampling.stop:
                params["stop"] = list(sampling.stop)
        self._params = params

    def body(self, spec: RequestSpec) -> bytes:
        body = {"inputs": spec.prompt, "parameters": {**self._params, "max_new_tokens": spec.max_tokens}}
        if spec.extra_body:
            body.update(spec.extra_body)
        return orjson.dumps(body)

    def event(self, data: bytes):
        # Hot path: a token event that is not the last is recognised without a JSON parse (it
        # must still open and close as an object and carry TGI's null generated_text), which
        # halves the per-token cost; the final event, errors and anything unusual are parsed.
        if data[:9] == b'{"index":' and data[-1:] == b"}" and b'"generated_text":null' in data:
            return TOKEN, 1, None
        obj, problem = self._decode(data, "token")
        if problem is not None:
            return problem
        details = obj.get("details")
        if details is not None or obj.get("generated_text") is not None:
            fin = Final()
            if isinstance(details, dict):
                fin.finish_reason = details.get("finish_reason")
                fin.output_tokens = details.get("generated_tokens")
                prefill = details.get("prefill")
                if prefill:
                    fin.input_tokens = len(prefill)
                elif isinstance(details.get("input_length"), int):
                    fin.input_tokens = details["input_length"]
            return FINAL, 1, fin
        return TOKEN, 1, None
