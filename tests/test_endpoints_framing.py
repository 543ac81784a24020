"""Every SSE framing real servers send, read exactly by both stream readers over a real socket.

TGI writes ``data:{`` (axum); vLLM, SGLang and OpenAI write ``data: {``; proxies may turn line
ends into CRLF; servers send ``:`` comments and keep-alive lines. The event payloads below are
the shapes those servers send (role chunks with empty content, ``finish_reason`` of null or "",
a usage-only chunk, ``[DONE]``). Whatever the framing, the counts, times and finish reason must
be the same, and the plain token events must take the fast path (the C pass in place) in both
framings with LF line ends.
"""

from __future__ import annotations

import time

import orjson
import pytest

from harness.loadgen.reactor import Reactor
from harness.loadgen.stream import StreamResult, _Response
from harness.protocols import FINAL, IGNORE, TOKEN, protocol_for

HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
N = 6   # tokens per stream


def _j(obj) -> bytes:
    return orjson.dumps(obj)


def _vllm_chat() -> list[bytes]:
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    out = [_j({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                    "logprobs": None, "finish_reason": None}]})]
    out += [_j({**base, "choices": [{"index": 0, "delta": {"content": f" w{k}"}, "logprobs": None,
                                     "finish_reason": None}]}) for k in range(N - 1)]
    out.append(_j({**base, "choices": [{"index": 0, "delta": {"content": " end"}, "logprobs": None,
                                        "finish_reason": "stop", "stop_reason": None}]}))
    out.append(_j({**base, "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": N, "total_tokens": 7 + N}}))
    return out + [b"[DONE]"]


def _openai_chat() -> list[bytes]:
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-x",
            "service_tier": "default", "system_fingerprint": "fp_1"}
    out = [_j({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "", "refusal": None},
                                    "logprobs": None, "finish_reason": None}], "usage": None, "obfuscation": "ab"})]
    out += [_j({**base, "choices": [{"index": 0, "delta": {"content": f" \"w{k}\" finish_reason"},
                                     "logprobs": None, "finish_reason": None}], "usage": None, "obfuscation": "c"})
            for k in range(N)]
    out.append(_j({**base, "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}],
                   "usage": None}))
    out.append(_j({**base, "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": N, "total_tokens": 7 + N}}))
    return out + [b"[DONE]"]


def _sglang_chat() -> list[bytes]:
    base = {"id": "1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    def ch(content, reason):
        return _j({**base, "choices": [{"index": 0, "delta": {"role": None, "content": content,
                                                               "reasoning_content": None, "tool_calls": None},
                                        "logprobs": None, "finish_reason": reason, "matched_stop": None}],
                   "usage": None})
    out = [ch(f" w{k}", None) for k in range(N - 1)] + [ch(" end", "length")]
    out.append(_j({**base, "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": N, "total_tokens": 7 + N}}))
    return out + [b"[DONE]"]


def _llamacpp_chat() -> list[bytes]:
    """llama.cpp's server: choices first, finish_reason before delta, usage in the last chunk."""
    def ch(delta, reason, **extra):
        return _j({"choices": [{"finish_reason": reason, "index": 0, "delta": delta}], "created": 1, "id": "c",
                   "model": "m", "system_fingerprint": "b1", "object": "chat.completion.chunk", **extra})
    out = [ch({"role": "assistant", "content": None}, None)]
    out += [ch({"content": f" w{k}"}, None) for k in range(N)]
    out.append(ch({}, "stop", usage={"completion_tokens": N, "prompt_tokens": 7, "total_tokens": 7 + N}))
    return out + [b"[DONE]"]


def _vllm_completions() -> list[bytes]:
    base = {"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "m"}
    out = [_j({**base, "choices": [{"index": 0, "text": f" w{k}", "logprobs": None, "finish_reason": None,
                                    "stop_reason": None}], "usage": None}) for k in range(N - 1)]
    out.append(_j({**base, "choices": [{"index": 0, "text": " end", "logprobs": None, "finish_reason": "length",
                                        "stop_reason": None}], "usage": None}))
    out.append(_j({**base, "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": N, "total_tokens": 7 + N}}))
    return out + [b"[DONE]"]


def _tgi_completions() -> list[bytes]:
    """TGI's /v1/completions: finish_reason "" until the last chunk, which carries usage."""
    base = {"object": "text_completion", "id": "", "created": 1}
    out = [_j({**base, "choices": [{"index": 0, "text": f" w{k}", "logprobs": None, "finish_reason": ""}],
               "model": "m"}) for k in range(N - 1)]
    out.append(_j({**base, "model": "m", "choices": [{"index": 0, "text": " end", "logprobs": None,
                                                      "finish_reason": "length"}],
                   "usage": {"prompt_tokens": 7, "completion_tokens": N, "total_tokens": 7 + N}}))
    return out + [b"[DONE]"]


def _tgi_native() -> list[bytes]:
    out = [_j({"index": k, "token": {"id": k, "text": " w", "logprob": -0.1, "special": False},
               "generated_text": None, "details": None}) for k in range(1, N)]
    out.append(_j({"index": N, "token": {"id": N, "text": " w", "logprob": -0.1, "special": False},
                   "generated_text": " w" * N,
                   "details": {"finish_reason": "eos_token", "generated_tokens": N, "seed": None, "input_length": 7}}))
    return out


# (name, protocol, payloads, finish reason, plain token events)
SERVERS = [
    ("vllm-chat", "openai-chat", _vllm_chat, "stop", N - 1),
    ("openai-chat", "openai-chat", _openai_chat, "stop", N),
    ("sglang-chat", "openai-chat", _sglang_chat, "length", N - 1),
    ("llamacpp-chat", "openai-chat", _llamacpp_chat, "stop", N),
    ("vllm-completions", "openai-completions", _vllm_completions, "length", N - 1),
    ("tgi-completions", "openai-completions", _tgi_completions, "length", N - 1),
    ("tgi", "tgi", _tgi_native, "eos_token", N - 1),
]


def _frame(payloads: list[bytes], space: bool, crlf: bool, comments: bool) -> list[bytes]:
    """One HTTP chunk per event (as every server here writes them), comments between."""
    nl = b"\r\n" if crlf else b"\n"
    events = []
    if comments:
        events.append(b": connected" + nl + b"retry: 3000" + nl + nl)
    for i, p in enumerate(payloads):
        if comments and i % 2:
            events.append(b":" + nl + nl)                     # a bare keep-alive line
            events.append(b": ping - 2026-12-06" + nl + nl)   # a comment with text
        events.append(b"data:" + (b" " if space else b"") + p + nl + nl)
    return [b"%x\r\n%b\r\n" % (len(e), e) for e in events]


class _Waiter:
    def __init__(self):
        self.done = False

    def set(self, v=None):
        self.done = True


def _read(cli, peer, proto, reads: list[bytes]):
    """Send each piece as its own read and let the reactor parse it: (response, tokens in place)."""
    p = protocol_for(proto)
    r = Reactor(p.plain_token)
    resp = _Response(StreamResult("u", 0), p, _Waiter())
    try:
        r.add(cli, resp)
        for d in reads:
            peer.send(d)
            time.sleep(0.002)
            r.pass_ns = 0
            r.pump()
        in_place = r._lib.fr_handled(r._fr) if r.native else 0
    finally:
        r.close()
    return resp, in_place


@pytest.mark.parametrize("comments", [False, True], ids=["plain", "comments"])
@pytest.mark.parametrize("crlf", [False, True], ids=["lf", "crlf"])
@pytest.mark.parametrize("space", [False, True], ids=["data:{", "data: {"])
@pytest.mark.parametrize("name,proto,make,reason,plain", SERVERS, ids=[s[0] for s in SERVERS])
def test_each_framing_reads_exactly(tcp_pair, reader, name, proto, make, reason, plain, space, crlf, comments):
    cli, peer = tcp_pair
    chunks = _frame(make(), space, crlf, comments)
    resp, in_place = _read(cli, peer, proto, [HEAD, *chunks, b"0\r\n\r\n"])
    assert resp.waiter.done
    assert resp.close_out() is True            # clean: the socket may be reused
    res = resp.res
    assert res.error_class is None, res.error
    assert res.output_tokens == N and res.finish_reason == reason
    assert res.input_tokens == 7
    assert res.events == N                     # one event per token in every corpus
    assert len(res.itl_ns) == N - 1 and sum(res.itl_ns) == res.end_pc - res.first_pc
    assert min(res.itl_ns) > 0                 # each token its own read: its own stamp
    if reader == "c-pass":
        # LF framings: every plain token event is taken in place, with or without the space;
        # CRLF ones are read by the Python parser (exact, slower)
        assert in_place == (0 if crlf else plain), in_place


@pytest.mark.parametrize("name,proto,make,reason,plain", SERVERS, ids=[s[0] for s in SERVERS])
def test_a_whole_stream_in_one_read_and_split_everywhere_parse_alike(name, proto, make, reason, plain):
    chunks = _frame(make(), True, True, True)
    wire = HEAD + b"".join(chunks) + b"0\r\n\r\n"
    for cut in (None, *range(1, len(wire), 37)):
        resp = _Response(StreamResult("u", 0), protocol_for(proto), _Waiter())
        pieces = [wire] if cut is None else [wire[:cut], wire[cut:]]
        ends = [resp.feed(d, 1000 * (i + 1)) for i, d in enumerate(pieces)]
        assert ends[-1] is True and resp.close_out() is True, cut
        assert resp.res.output_tokens == N and resp.res.finish_reason == reason, cut


@pytest.mark.parametrize("name,proto,make,reason,plain", SERVERS, ids=[s[0] for s in SERVERS])
def test_the_fast_shape_never_disagrees_with_the_json_parse(name, proto, make, reason, plain):
    """An event the shape test calls a plain token is one the full parse calls exactly one token,
    and the corpora's plain token events all pass the shape test."""
    p = protocol_for(proto)
    fast = 0
    for payload in make():
        if p.plain_token.match(payload):
            fast += 1
            obj = orjson.loads(payload)
            if proto == "tgi":
                assert obj["generated_text"] is None and obj["details"] is None
            else:
                (c,) = obj["choices"]
                text = c["text"] if proto == "openai-completions" else c["delta"]["content"]
                assert text and not c["finish_reason"] and not isinstance(obj.get("usage"), dict)
        kind = p.event(payload)[0]
        assert kind in (TOKEN, FINAL, IGNORE) or payload == b"[DONE]"
    assert fast == plain


def test_usage_after_the_finish_chunk_keeps_the_finish_reason():
    """vLLM/OpenAI send finish_reason in one chunk and usage in the next: both are kept."""
    chunks = _frame(_openai_chat(), True, False, False)
    resp = _Response(StreamResult("u", 0), protocol_for("openai-chat"), _Waiter())
    for i, d in enumerate([HEAD, *chunks, b"0\r\n\r\n"]):
        resp.feed(d, 1000 * (i + 1))
    resp.close_out()
    assert resp.res.finish_reason == "stop" and resp.res.output_tokens == N and resp.res.input_tokens == 7


def test_tgi_completions_empty_finish_reason_is_not_the_end():
    p = protocol_for("openai-completions")
    mid = _tgi_completions()[0]
    assert p.event(mid)[0] == TOKEN
    from harness.protocols.base import PlainShape
    assert isinstance(p.plain_token, PlainShape) and p.plain_token.match(mid)


@pytest.mark.parametrize("proto", ["tgi", "openai-completions", "openai-chat"])
def test_c_and_python_shape_tests_agree_on_random_payloads(proto):
    """fastread.c's shape test and PlainShape.match give the same answer on payloads built from
    the patterns themselves, quotes, escapes and noise (both readers must take the same events
    as plain tokens)."""
    import random

    from harness.loadgen import native

    lib = native.load()
    assert lib is not None, "the C reader did not build: is a C compiler (cc) installed?"
    shape = protocol_for(proto).plain_token
    pats = [x for x in shape.patterns() if x]
    frags = pats + [b'"', b'\\"', b"x", b"null", b'""', b"{", b"}", b",", b":", b" ", b'"content":""',
                    b'"finish_reason":"stop"', b'"usage":null']
    ctx = lib.fr_new(-1, *[a for pat in shape.patterns() for a in (pat, len(pat))], 1)
    rng = random.Random(7)
    try:
        matched = 0
        for _ in range(20000):
            payload = b"".join(rng.choice(frags) for _ in range(rng.randint(0, 12)))
            if rng.random() < 0.5:
                payload = shape.pre + payload + shape.suf
            py = shape.match(payload)
            c = bool(lib.fr_match(ctx, payload, len(payload)))
            assert py == c, payload
            matched += py
        assert matched > 100   # the corpus reaches the interesting side too
    finally:
        lib.fr_free(ctx)
