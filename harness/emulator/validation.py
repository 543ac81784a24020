"""TGI's request validation (``router/src/validation.rs``), in its order and with its messages.

The input of every generating route ends up here as TGI's ``GenerateParameters`` (the OpenAI
routes map their fields first, as ``server.rs`` does); the output is what the engine and the
encoders need: token counts, the stop position, what the response must carry.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import orjson

from harness.emulator.profile import Limits
from harness.emulator.tokenizer import count_tokens, token_text, token_word

#: TGI queues at most this many new tokens at once when a request gives no ``max_new_tokens``
DEFAULT_GENERATION_LENGTH = 1024


class Invalid(Exception):
    """A TGI ``ValidationError``: 422 ``Input validation error: ...`` (an SSE event on streams)."""


@dataclass
class Valid:
    inputs: str
    input_tokens: int
    max_new: int                  # tokens the engine generates (a stop sequence may end it sooner)
    chunk_new: int                # what TGI records in tgi_request_max_new_tokens
    sampling: bool
    seed: int | None              # echoed in details only when sampling
    details: bool
    decoder_input_details: bool
    top_n: int
    best_of: int
    stop: list[str] = field(default_factory=list)
    prompt: str | None = None     # return_full_text
    finish: str = "length"

    def resolve_stop(self, rid: int) -> None:
        """Where the deterministic output first ends with a stop sequence (TGI's
        ``StopSequenceCriteria``): generation ends there with ``stop_sequence``."""
        if not self.stop:
            return
        keep = max(len(s) for s in self.stop)
        text = ""
        for k in range(1, self.max_new + 1):
            text = (text + token_text(token_word(rid, k - 1)))[-keep:]
            if any(s and text.endswith(s) for s in self.stop):
                self.max_new, self.finish = k, "stop_sequence"
                return


def _sampling(p: dict) -> bool:
    return bool(p["do_sample"] or p["temperature"] is not None or p["top_k"] is not None
                or p["top_p"] is not None or p["typical_p"] is not None)


def _grammar(grammar) -> None:
    kind, value = grammar
    if kind in ("json", "json_object"):
        if isinstance(value, str):
            try:
                value = orjson.loads(value)
            except orjson.JSONDecodeError as e:
                raise Invalid(f"grammar is not valid: {e}") from None
        elif not isinstance(value, dict):
            raise Invalid("grammar is not supported")
        _schema(value)
    elif kind == "json_schema":
        _schema(value["schema"])


def _schema(schema) -> None:
    if not isinstance(schema, (dict, bool)):
        raise Invalid(f"grammar is not valid: {orjson.dumps(schema).decode()} is not of types \"boolean\", \"object\"")
    if isinstance(schema, dict):
        t = schema.get("type")
        if t is not None and not (isinstance(t, str) or isinstance(t, list)):
            raise Invalid(f"grammar is not valid: {orjson.dumps(t).decode()} is not valid under any of the schemas "
                          f"listed in the 'anyOf' keyword")
        props = schema.get("properties")
        if props is None:
            raise Invalid("grammar is not valid: Grammar must have a 'properties' field")
        if not isinstance(props, dict):
            raise Invalid(f"grammar is not valid: {orjson.dumps(props).decode()} is not of type \"object\"")


def validate(inputs: str, p: dict, limits: Limits, *, stream: bool) -> Valid:
    """``Validation::validate`` after the route's own checks (best_of range, streaming)."""
    best_of = p["best_of"] if p["best_of"] is not None else 1
    if best_of > 1:                                   # generate_best_of -> validate_best_of
        if stream:
            raise Invalid("`best_of` != 1 is not supported when streaming tokens")
        if limits.max_best_of == 1:
            raise Invalid("`best_of` != 1 is not allowed for this endpoint")
        if best_of > limits.max_best_of:
            raise Invalid(f"`best_of` must be > 0 and <= {limits.max_best_of}. Given: {best_of}")
    elif best_of != 1 and stream:
        raise Invalid("`best_of` != 1 is not supported when streaming tokens")
    if stream and p["decoder_input_details"]:
        raise Invalid("`decoder_input_details` == true is not supported when streaming tokens")
    sampling = _sampling(p)
    if best_of > 1 and not sampling:
        raise Invalid("you must use sampling when `best_of` is > 1")
    t = p["temperature"]
    if t is not None and t <= 0.0:
        raise Invalid("`temperature` must be strictly positive")
    rp = p["repetition_penalty"]
    if rp is not None and rp <= 0.0:
        raise Invalid("`repetition_penalty` must be strictly positive")
    fp = p["frequency_penalty"]
    if fp is not None and not -2.0 <= fp <= 2.0:
        raise Invalid("`frequency_penalty` must be >= -2.0 and <= 2.0")
    tp = p["top_p"]
    if tp is not None and (tp <= 0.0 or tp >= 1.0):
        raise Invalid("`top_p` must be > 0.0 and < 1.0")
    typ = p["typical_p"]
    if typ is not None and (typ <= 0.0 or typ >= 1.0):
        raise Invalid("`typical_p` must be > 0.0 and < 1.0")
    tk = p["top_k"]
    if tk is not None and tk <= 0:
        raise Invalid("`top_k` must be strictly positive")
    max_new = p["max_new_tokens"]
    if max_new == 0:
        raise Invalid("`max_new_tokens` must be strictly positive")
    stop = p["stop"]
    if len(stop) > limits.max_stop_sequences:
        raise Invalid(f"`stop` supports up to {limits.max_stop_sequences} stop sequences. Given: {len(stop)}")
    seed = p["seed"]
    if seed is None:
        seed = random.getrandbits(64)
    elif best_of > 1:
        raise Invalid("`seed` must not be set when `best_of` > 1")
    top_n = p["top_n_tokens"] or 0
    if top_n > limits.max_top_n_tokens:
        raise Invalid(f"`top_n_tokens` must be >= 0 and <= {limits.max_top_n_tokens}. Given: {top_n}")
    if inputs == "":
        raise Invalid("`inputs` cannot be empty")
    truncate = p["truncate"]
    if truncate is not None and (truncate == 0 or truncate > limits.max_input_tokens):
        raise Invalid(f"`truncate` must be strictly positive and less than {limits.max_input_tokens}. "
                      f"Given: {truncate}")
    n_in = count_tokens(inputs)
    if truncate is not None:
        n_in = min(n_in, truncate)
    if max_new is not None:
        chunk = min(max_new, DEFAULT_GENERATION_LENGTH)
        total_new = max_new
    else:
        total_new = max(0, limits.max_total_tokens - n_in)
        chunk = min(total_new, DEFAULT_GENERATION_LENGTH)
    if n_in + chunk > limits.max_total_tokens:
        raise Invalid(f"`inputs` tokens + `max_new_tokens` must be <= {limits.max_total_tokens}. "
                      f"Given: {n_in} `inputs` tokens and {chunk} `max_new_tokens`")
    if n_in > limits.max_input_tokens:
        raise Invalid(f"`inputs` must have less than {limits.max_input_tokens} tokens. Given: {n_in}")
    if total_new == 0:     # max_total_tokens is filled by the prompt alone
        raise Invalid(f"`inputs` tokens + `max_new_tokens` must be <= {limits.max_total_tokens}. "
                      f"Given: {n_in} `inputs` tokens and 1 `max_new_tokens`")
    if p["grammar"] is not None:
        _grammar(p["grammar"])
    return Valid(inputs=inputs, input_tokens=n_in, max_new=total_new, chunk_new=chunk, sampling=sampling,
                 seed=seed if sampling else None, details=p["details"] or p["decoder_input_details"],
                 decoder_input_details=p["decoder_input_details"], top_n=top_n, best_of=max(best_of, 1),
                 stop=list(stop), prompt=inputs if p["return_full_text"] else None)
