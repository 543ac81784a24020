"""The hot path's pre-framed chunks are byte-identical to framing the ordinary event."""

from __future__ import annotations

import orjson
import pytest

from harness.emulator import wire
from harness.emulator.histogram import LogHistogram
from harness.emulator.personality import PERSONALITIES


ENCODERS = [wire.TgiStream(5, 3, True, None, None), wire.CompletionStream(7, 3, "m"),
            wire.ChatStream(9, 3, "model/x", True), wire.TgiStream(5, 3, True, None, None, prefix=wire.COMPACT),
            wire.CompletionStream(7, 3, "m", prefix=wire.COMPACT, index=2),
            wire.ChatStream(9, 3, "model/x", True, prefix=wire.COMPACT),
            PERSONALITIES["vllm"].chat_stream(11, 3, "m", False, wire.SPACED, "length", False, 0),
            PERSONALITIES["openai"].completion_stream(12, 3, "m", wire.SPACED, "length", 1, 2)]


@pytest.mark.parametrize("enc", ENCODERS)
def test_chunk_equals_framed_event(enc):
    for k in (2, 9, 10, 99, 100, 999, 1000, 9999, 10000, 123456):
        event = enc.token(k, False, k)
        assert enc.chunk(k) == b"%x\r\n%b\r\n" % (len(event), event)
        assert event.startswith(enc.prefix + b"{") and event.endswith(b"}\n\n")
        orjson.loads(event[len(enc.prefix):])


@pytest.mark.parametrize("enc", ENCODERS + [wire.TgiStream(10**12 + 3, 3, False, 1, None)])
def test_c_writer_chunks_are_the_python_chunks(enc):
    """fastemit.c formats middle tokens itself: byte for byte what wire.py's chunk() gives."""
    import ctypes

    from harness.emulator.native import load_emitter
    em = load_emitter()
    assert em is not None, "the C token writer did not build: is a C compiler (cc) installed?"
    try:
        ring = em.ring(10_000_000)
        kind, pre, post = enc.c_parts
        sid = em.add(em.ptr, ring, 0, -1, enc.rid, 1, 1 << 30, 0, kind, 1, None, pre, len(pre), post, len(post))
        assert sid >= 0
        buf = ctypes.create_string_buffer(4096)
        for k in (2, 9, 10, 99, 100, 999, 1000, 9999, 10000, 123456):
            n = em.lib.em_format(em.ptr, sid, k, buf)
            assert buf.raw[:n] == enc.chunk(k), k
    finally:
        em.close()


def test_histogram_percentiles_and_merge():
    a, b = LogHistogram(), LogHistogram()
    for v in range(1, 1001):
        a.record(v)
    for v in (50_000, 60_000, -3):
        b.record(v)
    a.merge(b)
    s = a.summary()
    assert s["count"] == 1003 and s["negative"] == 1
    assert s["p50"] == 501 and s["min"] == 0 and s["max"] == 60_000
    assert abs(a.percentile(99.9) - 50_000) / 50_000 < 0.02
