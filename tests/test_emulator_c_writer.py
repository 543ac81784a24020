"""The emulator's C token writer (fastemit.c) against real sockets: what it must never get wrong
that the Python writer got right by construction.

- A client that leaves mid-stream: the writer holds a dup() of the socket, so its next turn drops
  the stream and nothing lands on a newer connection that reused the descriptor number.
- A client that stops reading: the kernel takes part of a write, the rest is queued in the event
  loop, and every later byte of that stream follows it there, in order (``tokens_buffered``).
- The same workload gives the same ground truth with either writer.
"""

from __future__ import annotations

import socket
import time

import orjson
import pytest

from tests.support.emulator import emulate_process, emulator, get_json, post, write_profile

FIXED_1MS = """  mode: fixed
  ttft_ms: 5
  itl_ms: 1
"""


def _request(port: int, max_new: int, path: str = "/generate_stream") -> bytes:
    body = orjson.dumps({"inputs": "a b c", "parameters": {"max_new_tokens": max_new}})
    return (f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n").encode() + body


def _read_stream(s: socket.socket, timeout: float = 20.0) -> bytes:
    s.settimeout(timeout)
    data = b""
    while not data.endswith(b"\r\n0\r\n\r\n"):
        chunk = s.recv(1 << 20)
        assert chunk, "the emulator closed the connection mid-stream"
        data += chunk
    return data


def _events(data: bytes) -> list[dict]:
    return [orjson.loads(line[5:]) for line in data.split(b"\n") if line.startswith(b"data:")]


@pytest.fixture()
def fast(tmp_path):
    prof = write_profile(tmp_path, "fixed-1ms", timing=FIXED_1MS, limits="  max_concurrent_requests: 64")
    with emulator(1, prof) as reps:
        gt = get_json(reps.urls[0] + "/emulator/ground_truth")
        assert gt["writer"] == "c", "the C token writer did not build: is a C compiler (cc) installed?"
        yield reps.urls[0], int(reps.urls[0].rsplit(":", 1)[1])


def test_client_leaving_mid_stream_never_gets_its_tokens_onto_a_new_connection(fast):
    url, port = fast
    for _ in range(20):
        a = socket.create_connection(("127.0.0.1", port))
        a.sendall(_request(port, 400))
        a.settimeout(5)
        got = b""
        while got.count(b"data:") < 3:     # a few tokens, so the stream is queued in C
            got += a.recv(65536)
        a.close()                      # mid-stream: ~400 ms of tokens still to come
        b = socket.create_connection(("127.0.0.1", port))   # the emulator's side may reuse the fd
        b.sendall(_request(port, 30))
        ev = _events(_read_stream(b))
        b.close()
        assert [e["index"] for e in ev] == list(range(1, 31))
        assert ev[-1]["details"] is None and ev[-1]["generated_text"] is not None
    deadline = time.monotonic() + 30     # generous: a loaded machine notices the closes late
    while time.monotonic() < deadline:
        state = get_json(url + "/emulator/state")
        if state["replicas"][0]["active"] == 0:
            break
        time.sleep(0.05)
    assert state["replicas"][0]["active"] == 0        # every abandoned stream was dropped
    gt = get_json(url + "/emulator/ground_truth")["total"]
    assert gt["requests_cancelled"] == 20
    assert gt["requests_completed"] == 20


def test_client_that_stops_reading_gets_every_byte_in_order(tmp_path):
    # 16000 chat events (~5 MB) in 0.8 s: more than the emulator's socket buffer can hold
    # (tcp_wmem max 4 MB) while the client, with a 4 KB window, reads nothing
    n = 16000
    prof = write_profile(tmp_path, "fixed-fast", timing="  mode: fixed\n  ttft_ms: 5\n  itl_ms: 0.05\n",
                         max_total_tokens=20000)
    with emulator(1, prof) as reps:
        url = reps.urls[0]
        port = int(url.rsplit(":", 1)[1])
        assert get_json(url + "/emulator/ground_truth")["writer"] == "c"
        body = orjson.dumps({"messages": [{"role": "user", "content": "a b c"}], "max_tokens": n,
                             "stream": True})
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", port))
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                  b"content-length: %d\r\n\r\n%b" % (len(body), body))
        time.sleep(1.5)
        data = _read_stream(s)
        s.close()
        gt = get_json(url + "/emulator/ground_truth")["total"]
    ev = [orjson.loads(line[5:]) for line in data.split(b"\n")
          if line.startswith(b"data:") and line != b"data: [DONE]"]
    text = "".join(e["choices"][0]["delta"]["content"] for e in ev)
    assert len(ev) == n and len(text.split()) == n          # every token, none twice, none torn
    assert ev[-1]["choices"][0]["finish_reason"] == "length" and data.endswith(b"data: [DONE]\n\n\r\n0\r\n\r\n")
    assert gt["tokens_sent"] == n and gt["requests_completed"] == 1
    assert gt["tokens_buffered"] > 0              # the kernel did not take some writes at once
    assert gt["itl_us"]["count"] == n - 1 and gt["ttft_us"]["count"] == 1


@pytest.mark.parametrize("path", ["/generate_stream", "/v1/completions", "/v1/chat/completions", "/generate"])
def test_same_ground_truth_with_either_writer(tmp_path, monkeypatch, path):
    prof = write_profile(tmp_path, "fixed-1ms", timing=FIXED_1MS, limits="  max_concurrent_requests: 64")
    if path == "/generate_stream" or path == "/generate":
        body = {"inputs": "a b c", "parameters": {"max_new_tokens": 20}}
    elif path == "/v1/completions":
        body = {"prompt": "a b c", "max_tokens": 20, "stream": True}
    else:
        body = {"messages": [{"role": "user", "content": "a b c"}], "max_tokens": 20, "stream": True,
                "stream_options": {"include_usage": True}}
    seen = {}
    for writer in ("c", "python"):
        monkeypatch.setenv("SLM_NATIVE", "1" if writer == "c" else "0")
        with emulator(1, prof) as reps:
            url = reps.urls[0]
            bodies = []
            for _ in range(5):
                status, data = post(url + path, body)
                assert status == 200
                bodies.append(data)
            gt = get_json(url + "/emulator/ground_truth")
            assert gt["writer"] == writer
        t = gt["total"]
        seen[writer] = {"tokens_sent": t["tokens_sent"], "completed": t["requests_completed"],
                        "itl": t["itl_us"]["count"], "ttft": t["ttft_us"]["count"],
                        "lateness": t["lateness_us"]["count"], "bodies": [_strip(b) for b in bodies]}
    assert seen["c"] == seen["python"]
    assert seen["c"]["completed"] == 5 and seen["c"]["tokens_sent"] == 100


def _strip(body: bytes) -> list:
    """A response without what differs between two runs (the request id's words, timestamps)."""
    if body.startswith(b"{") or body.startswith(b"["):
        return ["whole", len(orjson.loads(body) if body.startswith(b"[") else orjson.loads(body))]
    out = []
    for line in body.split(b"\n"):
        if line.startswith(b"data:") and line != b"data: [DONE]":
            e = orjson.loads(line[5:])
            out.append(sorted(e))
    return out


@pytest.mark.parametrize("itl_ms,max_new,comments", [(400, 4, True), (100, 8, False)])
def test_keep_alive_comments_see_the_c_writers_tokens(tmp_path, itl_ms, max_new, comments):
    """A stream the C writer holds is silent to Python: its keep-alive check must read the C
    side's last write, so a comment goes out after 250 ms of real silence and never between
    tokens 100 ms apart."""
    prof = write_profile(tmp_path, "ka", timing=f"  mode: fixed\n  ttft_ms: 5\n  itl_ms: {itl_ms}\n")
    with emulate_process(prof, "--keep-alive-s", "0.25") as url:
        assert get_json(url + "/emulator/ground_truth")["writer"] == "c"
        port = int(url.rsplit(":", 1)[1])
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(_request(port, max_new))
        data = _read_stream(s)
        s.close()
    assert [e["index"] for e in _events(data)] == list(range(1, max_new + 1))
    n = data.count(b"\r\n: \n\n\r\n")     # axum 0.7 (TGI 3.x): an empty comment is ": "
    assert (n >= max_new - 1) if comments else (n == 0), data


def test_c_drain_writes_due_tokens_in_order_and_its_counts_fold_into_the_ground_truth():
    """em_drain against a socket pair, without a server: tokens due 20-18 ms ago are written in
    order, stamped late (a late episode), the last one is handed back to Python, and a summary
    folds the C side's counts in."""
    from harness.emulator import wire
    from harness.emulator.groundtruth import GroundTruth
    from harness.emulator.native import EM_CANCELLED, EM_PY, F_CANCEL, NEVER, load_emitter

    em = load_emitter()
    assert em is not None, "the C token writer did not build: is a C compiler (cc) installed?"
    gt = GroundTruth(0)
    gt.native = em.counts()
    a, b = socket.socketpair()
    try:
        ring = em.ring(1_000_000)                       # ITL 1 ms
        enc = wire.TgiStream(3, 2, False, None, None)
        kind, pre, post = enc.c_parts
        now = time.monotonic_ns()
        sid = em.add(em.ptr, ring, now - 20_000_000, a.fileno(), enc.rid, 1, 5, now - 21_000_000, kind, 0,
                     gt.native.ptr, pre, len(pre), post, len(post))
        assert sid >= 0
        code = em.drain(em.ptr, ring, NEVER, time.monotonic_ns() + 1_000_000_000, em.out_ref)
        assert (code, em.out.sid, em.out.k, em.out.last) == (EM_PY, sid, 5, 1)   # the last: Python's
        assert b.recv(65536) == enc.chunk(2) + enc.chunk(3) + enc.chunk(4)
        s = gt.summary()
        assert s["tokens_sent"] == 3 and s["itl_us"]["count"] == 3
        assert s["lateness_us"]["count"] == 3 and s["lateness_us"]["min"] >= 16384
        assert [e[2] for e in s["late_episodes"]] == [3]     # one episode of 3 late writes
        assert gt.summary()["tokens_sent"] == 3               # folded once, not twice
        em.release(em.ptr, sid)

        # a cancelled stream is handed back at its next turn, without a write
        sid = em.add(em.ptr, ring, time.monotonic_ns() - 1000, a.fileno(), enc.rid, 1, 5, 0, kind, 0,
                     gt.native.ptr, pre, len(pre), post, len(post))
        em.flag(em.ptr, sid, F_CANCEL)
        code = em.drain(em.ptr, ring, NEVER, time.monotonic_ns() + 1_000_000_000, em.out_ref)
        assert (code, em.out.sid) == (EM_CANCELLED, sid)
        em.release(em.ptr, sid)
        b.setblocking(False)
        with pytest.raises(BlockingIOError):
            b.recv(65536)
        assert gt.summary()["tokens_sent"] == 3
    finally:
        a.close()
        b.close()
        gt.detach()
        em.close()
