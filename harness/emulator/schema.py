"""Request bodies read the way TGI's router reads them: serde types, serde's error messages.

TGI deserializes each body into a Rust struct (``router/src/lib.rs``) through axum's ``Json``
extractor, so a wrong-typed field is a 422 whose text body is
``Failed to deserialize the JSON body into the target type: PATH: ERROR`` (``PATH`` as
serde_path_to_error writes it, ``ERROR`` as serde writes it). Here each struct is a table of
field types, and reading a body gives plain Python values or one :class:`DeserializeError` with
the same wording. Unknown fields are ignored, as serde does without ``deny_unknown_fields``.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import orjson

PREFIX = "Failed to deserialize the JSON body into the target type: "
_MISSING = object()


class DeserializeError(Exception):
    def __init__(self, message: str, path: str = ""):
        super().__init__(message)
        self.message = message
        self.path = path

    def text(self) -> str:
        return PREFIX + (f"{self.path}: {self.message}" if self.path else self.message)


def unexpected(v: Any) -> str:
    """serde's ``Unexpected`` for a JSON value."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return f"boolean `{'true' if v else 'false'}`"
    if isinstance(v, int):
        return f"integer `{v}`"
    if isinstance(v, float):
        return f"floating point `{v!r}`"
    if isinstance(v, str):
        return "string " + orjson.dumps(v).decode()
    if isinstance(v, list):
        return "sequence"
    return "map"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


Reader = Callable[[Any, str], Any]


def _invalid(v: Any, expected: str, path: str) -> DeserializeError:
    return DeserializeError(f"invalid type: {unexpected(v)}, expected {expected}", path)


def number(name: str) -> Reader:
    """f32 / f64: integers and floats both read."""
    def read(v, path):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise _invalid(v, name, path)
        return float(v)
    return read


def integer(name: str, lo: int, hi: int) -> Reader:
    def read(v, path):
        if isinstance(v, bool) or not isinstance(v, int):
            raise _invalid(v, name, path)
        if not lo <= v <= hi:
            raise DeserializeError(f"invalid value: {unexpected(v)}, expected {name}", path)
        return v
    return read


F32 = number("f32")
U32 = integer("u32", 0, 2**32 - 1)
U64 = integer("u64", 0, 2**64 - 1)
USIZE = integer("usize", 0, 2**64 - 1)
I32 = integer("i32", -2**31, 2**31 - 1)


def BOOL(v, path):
    if not isinstance(v, bool):
        raise _invalid(v, "a boolean", path)
    return v


def STR(v, path):
    if not isinstance(v, str):
        raise _invalid(v, "a string", path)
    return v


def ANY(v, path):
    return v


def seq(item: Reader) -> Reader:
    def read(v, path):
        if not isinstance(v, list):
            raise _invalid(v, "a sequence", path)
        return [item(x, f"{path}[{i}]") for i, x in enumerate(v)]
    return read


def option(inner: Reader) -> Reader:
    def read(v, path):
        return None if v is None else inner(v, path)
    return read


class Struct:
    """A serde struct: ``fields`` maps a JSON key to (reader, default); default ``_MISSING``
    makes the field required; a callable default is called."""

    def __init__(self, name: str, fields: dict[str, tuple[Reader, Any]], aliases: dict[str, str] | None = None):
        self.name = name
        self.fields = fields
        self.aliases = aliases or {}

    def __call__(self, v, path=""):
        if not isinstance(v, dict):
            raise _invalid(v, f"struct {self.name}", path)
        out = {}
        for alias, key in self.aliases.items():
            if alias in v and key not in v:
                v = dict(v)
                v[key] = v.pop(alias)
        for key, (reader, default) in self.fields.items():
            if key in v:
                out[key] = reader(v[key], _join(path, key))
            elif default is _MISSING:
                raise DeserializeError(f"missing field `{key}`", path)
            else:
                out[key] = default() if callable(default) else default
        return out


def untagged(name: str, *readers: Reader) -> Reader:
    def read(v, path):
        for r in readers:
            try:
                return r(v, path)
            except DeserializeError:
                continue
        raise DeserializeError(f"data did not match any variant of untagged enum {name}", path)
    return read


def tagged(name: str, tag: str, variants: dict[str, Reader], content: str | None = None) -> Reader:
    """serde's internally (``content`` None) or adjacently tagged enum."""
    names = ", ".join(f"`{k}`" for k in variants)

    def read(v, path):
        if not isinstance(v, dict):
            raise _invalid(v, f"internally tagged enum {name}" if content is None
                           else f"adjacently tagged enum {name}", path)
        if tag not in v:
            raise DeserializeError(f"missing field `{tag}`", path)
        t = v[tag]
        if not isinstance(t, str) or t not in variants:
            what = f"`{t}`" if isinstance(t, str) else unexpected(t)
            raise DeserializeError(f"unknown variant {what}, expected one of {names}", path)
        if content is None:
            return t, variants[t](v, path)
        if content not in v:
            raise DeserializeError(f"missing field `{content}`", path)
        return t, variants[t](v[content], _join(path, content))
    return read


# -- TGI's request types (router/src/lib.rs) ---------------------------------------------------
_json_schema = Struct("JsonSchemaConfig", {"name": (option(STR), None), "schema": (ANY, _MISSING)})
GRAMMAR = tagged("GrammarType", "type", {"json": ANY, "json_object": ANY, "regex": STR,
                                         "json_schema": _json_schema}, content="value")

GENERATE_PARAMETERS = Struct("GenerateParameters", {
    "best_of": (option(USIZE), None),
    "temperature": (option(F32), None),
    "repetition_penalty": (option(F32), None),
    "frequency_penalty": (option(F32), None),
    "top_k": (option(I32), None),
    "top_p": (option(F32), None),
    "typical_p": (option(F32), None),
    "do_sample": (BOOL, False),
    "max_new_tokens": (option(U32), None),
    "return_full_text": (option(BOOL), None),
    "stop": (seq(STR), list),
    "truncate": (option(USIZE), None),
    "watermark": (BOOL, False),
    "details": (BOOL, False),
    "decoder_input_details": (BOOL, False),
    "seed": (option(U64), None),
    "top_n_tokens": (option(U32), None),
    "grammar": (option(GRAMMAR), None),
    "adapter_id": (option(STR), None),
})


def default_parameters() -> dict:
    """TGI's ``default_parameters()``: what a body without ``parameters`` gets (sampling on)."""
    p = GENERATE_PARAMETERS({}, "")
    p["do_sample"] = True
    return p


GENERATE_REQUEST = Struct("GenerateRequest", {
    "inputs": (STR, _MISSING),
    "parameters": (GENERATE_PARAMETERS, default_parameters),
})
COMPAT_GENERATE_REQUEST = Struct("CompatGenerateRequest", {
    "inputs": (STR, _MISSING),
    "parameters": (GENERATE_PARAMETERS, default_parameters),
    "stream": (BOOL, False),
})


def _prompt(v, path):
    if isinstance(v, str):
        return [v]
    if isinstance(v, list) and all(isinstance(x, str) for x in v):
        if not v:
            raise DeserializeError("Empty array detected. Do not use an empty array for the prompt.", path)
        return v
    raise DeserializeError("data did not match any variant of untagged enum PromptDeserializer", path)


COMPLETION_REQUEST = Struct("CompletionRequest", {
    "model": (option(STR), None),
    "prompt": (_prompt, _MISSING),
    "max_tokens": (option(U32), None),
    "temperature": (option(F32), None),
    "top_p": (option(F32), None),
    "stream": (BOOL, False),
    "seed": (option(U64), None),
    "suffix": (option(STR), None),
    "repetition_penalty": (option(F32), None),
    "frequency_penalty": (option(F32), None),
    "stop": (option(seq(STR)), None),
})

_url = Struct("Url", {"url": (STR, _MISSING)})
_chunk = tagged("MessageChunk", "type", {
    "text": Struct("Text", {"text": (STR, _MISSING)}),
    "image_url": Struct("ImageUrl", {"image_url": (_url, _MISSING)})})
_content = untagged("MessageContent", STR, seq(_chunk))
_function = Struct("FunctionDefinition", {"description": (option(STR), None), "name": (STR, _MISSING),
                                          "arguments": (ANY, _MISSING)}, aliases={"parameters": "arguments"})
_tool_call = Struct("ToolCall", {"id": (STR, _MISSING), "type": (STR, _MISSING), "function": (_function, _MISSING)})
_body = untagged("MessageBody", Struct("Content", {"content": (_content, _MISSING)}),
                 Struct("Tool", {"tool_calls": (seq(_tool_call), _MISSING)}))


def _message(v, path):
    if not isinstance(v, dict):
        raise _invalid(v, "struct Message", path)
    if "role" not in v:
        raise DeserializeError("missing field `role`", path)
    role = STR(v["role"], _join(path, "role"))
    body = _body(v, path)
    name = option(STR)(v.get("name"), _join(path, "name"))
    return {"role": role, "name": name, **body}


_tool = Struct("Tool", {"type": (STR, _MISSING), "function": (_function, _MISSING)})
_stream_options = Struct("StreamOptions", {"include_usage": (BOOL, False)})


def _tool_choice(v, path):
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, dict):
        return v
    raise DeserializeError("data did not match any variant of untagged enum ToolTypeDeserializer", path)


CHAT_REQUEST = Struct("ChatRequest", {
    "model": (option(STR), None),
    "messages": (seq(_message), _MISSING),
    "frequency_penalty": (option(F32), None),
    "logit_bias": (option(seq(F32)), None),
    "logprobs": (option(BOOL), None),
    "top_logprobs": (option(U32), None),
    "max_tokens": (option(U32), None),
    "n": (option(U32), None),
    "presence_penalty": (option(F32), None),
    "stop": (option(seq(STR)), None),
    "stream": (BOOL, False),
    "seed": (option(U64), None),
    "temperature": (option(F32), None),
    "top_p": (option(F32), None),
    "tools": (option(seq(_tool)), None),
    "tool_prompt": (option(STR), None),
    "tool_choice": (_tool_choice, None),
    "response_format": (option(GRAMMAR), None),
    "stream_options": (_stream_options, lambda: {"include_usage": False}),
}, aliases={"max_completion_tokens": "max_tokens"})


def parse_json(body: bytes) -> Any:
    """The body as JSON, or serde_json's complaint (axum: 400 ``Failed to parse the request body
    as JSON``); NaN/Infinity are not JSON."""
    return orjson.loads(body)


def finite(x: float | None) -> bool:
    return x is None or math.isfinite(x)
