"""What every wire protocol gives the load generator: a request body and an event interpreter.

The stream reader calls :meth:`WireProtocol.event` once per SSE ``data:`` payload on the hot path,
so it returns a small tuple instead of an object: ``(kind, tokens, detail)``:

* ``TOKEN``  - ``tokens`` output tokens arrived in this event (usually 1; an OpenAI chunk may carry
  several characters of text but counts as one token until ``usage`` says otherwise);
* ``FINAL``  - the event that ends the generation; ``tokens`` as for TOKEN, ``detail`` is a
  :class:`Final` with the server's own counts and finish reason;
* ``IGNORE`` - a well-formed event that carries no output token (role chunk, usage-only chunk);
* ``DONE``   - OpenAI's ``[DONE]`` sentinel (the stream is over);
* ``ERROR``  - an event carrying ``{"error": ...}``; ``detail`` is the message;
* ``MALFORMED`` - not JSON, or not the protocol's shape; ``detail`` says why.
"""

from __future__ import annotations

from dataclasses import dataclass

TOKEN, FINAL, IGNORE, DONE, ERROR, MALFORMED = range(6)


@dataclass(slots=True)
class RequestSpec:
    """One request as the workload asks for it (protocol-neutral)."""

    prompt: str
    input_tokens: int            # the intended prompt length in tokens (server counts override)
    max_tokens: int
    request_id: int = 0
    extra_body: dict | None = None   # merged into the JSON body (dataset rows' "extra_body")
    session: int | None = None       # multi-turn sessions: the conversation and its turn
    turn: int | None = None


@dataclass(slots=True)
class Final:
    """What the last event of a generation tells: the server's own token counts and reason."""

    finish_reason: str | None = None
    output_tokens: int | None = None
    input_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class PlainShape:
    """What an event payload that is exactly one plain token looks like, checked without a JSON
    parse (the hot path: the C read pass, ``fastread.c``, applies the same five tests).

    A payload (the bytes after ``data:`` and one optional space) is a plain token when it starts
    with ``pre``, ends with ``suf``, contains ``need``, contains ``text`` followed by a byte that
    is not ``"`` (a non-empty JSON string), does not contain ``avoid``, and does not contain
    ``avoid_text`` followed by a byte that is not ``"``. Empty patterns are not tested. Inside a
    JSON string every ``"`` is escaped, so a pattern that begins and ends with a quote around a key
    only ever matches the document's own structure.
    """

    pre: bytes
    suf: bytes = b"}"
    need: bytes = b""
    text: bytes = b""
    avoid: bytes = b""
    avoid_text: bytes = b""

    def match(self, p: bytes) -> bool:
        if not (p.startswith(self.pre) and p.endswith(self.suf)):
            return False
        if self.need and self.need not in p:
            return False
        if self.text:
            i = p.find(self.text)
            if i < 0 or p[i + len(self.text):i + len(self.text) + 1] in (b'"', b""):
                return False
        if self.avoid and self.avoid in p:
            return False
        if self.avoid_text:
            i = p.find(self.avoid_text)
            if i >= 0 and p[i + len(self.avoid_text):i + len(self.avoid_text) + 1] != b'"':
                return False
        return True

    def patterns(self) -> tuple[bytes, ...]:
        """The six patterns in ``fastread.c``'s order."""
        return (self.pre, self.suf, self.need, self.text, self.avoid, self.avoid_text)


class WireProtocol:
    """Request construction and SSE event interpretation for one serving API."""

    name: str = ""
    path: str = ""
    #: True when a FINAL event may be followed by more events (OpenAI usage chunk, ``[DONE]``).
    final_then_done: bool = False
    #: the shape of an event that is one plain token (no JSON parse needed); None when every
    #: event must be parsed.
    plain_token: PlainShape | None = None

    def body(self, spec: RequestSpec) -> bytes:  # pragma: no cover - interface
        raise NotImplementedError

    def event(self, data: bytes):  # pragma: no cover - interface
        raise NotImplementedError

    def _decode(self, data: bytes, key: str):
        """``(obj, None)`` for a JSON object carrying ``key``; otherwise ``(None, result)`` with the
        event's result: ERROR for a server error object, MALFORMED for anything else."""
        import orjson

        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            return None, (MALFORMED, 0, "event is not JSON")
        if not isinstance(obj, dict):
            return None, (MALFORMED, 0, "event is not an object")
        if obj.get(key) is None:
            if "error" in obj:
                return None, (ERROR, 0, self.error_message(data))
            return None, (MALFORMED, 0, f"event has no {key}")
        return obj, None

    @staticmethod
    def error_message(body: bytes) -> str:
        """Short message from an error body (TGI/OpenAI JSON or text), never more than 200 chars."""
        import orjson

        try:
            obj = orjson.loads(body)
        except orjson.JSONDecodeError:
            return body[:200].decode("utf-8", "replace").strip()
        if isinstance(obj, dict):
            err = obj.get("error", obj.get("message", obj))
            if isinstance(err, dict):  # OpenAI: {"error": {"message": ..., "type": ...}}
                err = err.get("message", err)
            kind = obj.get("error_type")
            msg = str(err)
            return (f"{kind}: {msg}" if kind else msg)[:200]
        return str(obj)[:200]
