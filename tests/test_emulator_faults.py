"""The fault-injection knob: each fault is what a client would see from a broken server."""

from __future__ import annotations

import asyncio
import socket
import time

import aiohttp
import orjson
import pytest

from tests.support.emulator import emulator, get_json, post

PROMPT = "a b c d"


@pytest.fixture(scope="module", params=["c-writer", "python"])
def url(request):
    """Every fault with both token writers: fastemit.c (faulted streams are handed back to Python
    token by token) and the Python drain (``SLM_NATIVE=0``)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("SLM_NATIVE", "1" if request.param == "c-writer" else "0")
    try:
        with emulator(1, "fixed-50ms-10ms") as reps:
            state = get_json(reps.urls[0] + "/emulator/ground_truth")
            assert state["writer"] == ("c" if request.param == "c-writer" else "python")
            yield reps.urls[0]
    finally:
        mp.undo()


def _raw_stream(url: str, fault: str, max_new: int = 10, timeout: float = 30.0,
                path: str = "/generate_stream", quiet_after: int | None = None,
                quiet_s: float = 0.6) -> tuple[bytes, str]:
    """Send one request on a raw socket; return (all bytes received, how it ended).

    ``timeout`` is generous: a loaded machine may hold a token for seconds. With ``quiet_after``,
    once that many events have arrived, ``quiet_s`` of silence ends the read ("timeout")."""
    host, port = url.removeprefix("http://").split(":")
    body = orjson.dumps({"inputs": PROMPT, "parameters": {"max_new_tokens": max_new}})
    req = (f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
           f"x-emulator-fault: {fault}\r\ncontent-length: {len(body)}\r\n\r\n").encode() + body
    s = socket.create_connection((host, int(port)))
    s.settimeout(quiet_s if quiet_after == 0 else timeout)
    s.sendall(req)
    data = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return data, "eof"
            data += chunk
            if data.endswith(b"0\r\n\r\n"):
                return data, "complete"
            if quiet_after is not None and len(_events(data)) >= quiet_after:
                s.settimeout(quiet_s)
    except ConnectionResetError:
        return data, "reset"
    except socket.timeout:
        return data, "timeout"
    finally:
        s.close()


def _events(data: bytes) -> list[bytes]:
    return [line[5:] for line in data.split(b"\n") if line.startswith(b"data:")]


def test_reset_after_n_tokens(url):
    data, how = _raw_stream(url, "reset:3")
    assert how == "reset"
    assert len(_events(data)) == 3


def test_close_mid_body(url):
    data, how = _raw_stream(url, "close:2")
    assert how == "eof" and len(_events(data)) == 2 and not data.endswith(b"0\r\n\r\n")


def test_sse_error_event(url):
    data, how = _raw_stream(url, "sse_error:4")
    ev = _events(data)
    assert how == "complete" and len(ev) == 5
    assert orjson.loads(ev[-1]) == {"error": "Request failed during generation: emulated fault",
                                    "error_type": "generation"}


def test_malformed_event(url):
    data, how = _raw_stream(url, "malformed:2")
    ev = _events(data)
    assert how == "complete" and len(ev) == 3
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(ev[-1])


def test_truncate_without_final_event(url):
    data, how = _raw_stream(url, "truncate:5", max_new=10)
    ev = [orjson.loads(e) for e in _events(data)]
    assert how == "complete" and len(ev) == 5 and all(e["generated_text"] is None for e in ev)


def test_stall_keeps_connection_silent(url):
    data, how = _raw_stream(url, "stall:2", quiet_after=2, quiet_s=0.6)
    assert how == "timeout" and len(_events(data)) == 2


def test_hang_sends_nothing(url):
    data, how = _raw_stream(url, "hang", quiet_after=0, quiet_s=0.5)
    assert how == "timeout" and data == b""


def test_delay_holds_then_bursts(url):
    async def go():
        async with aiohttp.ClientSession() as s:
            stamps = []
            t0 = time.perf_counter()
            async with s.post(url + "/generate_stream", headers={"X-Emulator-Fault": "delay:3:400"},
                              json={"inputs": PROMPT, "parameters": {"max_new_tokens": 8}}) as r:
                async for line in r.content:
                    if line.startswith(b"data:"):
                        stamps.append(time.perf_counter() - t0)
            return stamps
    t = asyncio.run(go())
    assert len(t) == 8
    gaps = [b - a for a, b in zip(t, t[1:])]
    assert max(gaps) > 0.3                  # the hold
    assert t[-1] > 0.4


@pytest.mark.parametrize("code,etype", [(429, "overloaded"), (422, "validation"), (424, "generation"),
                                        (500, "incomplete_generation"), (503, "healthcheck")])
def test_status_codes_with_tgi_bodies(url, code, etype):
    status, body = post(url + "/generate_stream", {"inputs": PROMPT}, {"X-Emulator-Fault": f"status:{code}"})
    assert status == code and orjson.loads(body)["error_type"] == etype


def test_fault_in_body_field_and_non_stream(url):
    status, body = post(url + "/generate", {"inputs": PROMPT, "parameters": {"max_new_tokens": 2},
                                            "emulator_fault": "malformed"})
    assert status == 200
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(body)
    data, how = _raw_stream(url, "reset", path="/generate")
    assert how == "reset" and data == b""


def test_bad_fault_spec_is_400(url):
    status, body = post(url + "/generate", {"inputs": PROMPT}, {"X-Emulator-Fault": "explode:1"})
    assert status == 400 and orjson.loads(body)["error_type"] == "emulator_fault"


def test_faults_counted_and_server_still_serves(url):
    gt = get_json(url + "/emulator/ground_truth")
    assert gt["total"]["requests_faulted"] >= 1
    status, body = post(url + "/generate", {"inputs": PROMPT, "parameters": {"max_new_tokens": 2}})
    assert status == 200 and len(orjson.loads(body)["generated_text"].split()) == 2


def test_sse_keep_alive_comments_while_silent(tmp_path):
    """TGI (axum) sends ``:`` comments on a silent stream; clients must skip them."""
    from text_generation import Client

    from tests.support.emulator import emulate_process, write_profile
    prof = write_profile(tmp_path, "slow-first", timing="  mode: fixed\n  ttft_ms: 1200\n  itl_ms: 5")
    with emulate_process(prof, "--keep-alive-s", "0.3") as u:
        data, how = _raw_stream(u, "truncate:1000", max_new=3)   # truncate after 1000: no effect
        assert how == "complete"
        assert data.count(b": \n\n") >= 2 and len(_events(data)) == 3
        events = list(Client(u, timeout=30).generate_stream("a b", max_new_tokens=3))
        assert len(events) == 3 and events[-1].details.generated_tokens == 3


def test_ground_truth_reset_mid_stream_keeps_counting(url):
    """A reset while streams are open: their later tokens land in the new counts.

    The reset is sent once every stream has received 10 tokens, and the bounds come from what the
    client had seen when it sent the reset and when the reset was answered, so a slow machine
    moves both sides together."""
    async def go():
        async with aiohttp.ClientSession() as s:
            from tests.support.emulator import stream_tgi
            seen = [[] for _ in range(4)]
            tasks = [asyncio.create_task(stream_tgi(s, url, PROMPT, 60, events=seen[i]))
                     for i in range(4)]
            while min(map(len, seen)) < 10:
                await asyncio.sleep(0.005)
            before = sum(map(len, seen))
            await (await s.post(url + "/emulator/ground_truth/reset")).read()
            after = sum(map(len, seen))
            return await asyncio.gather(*tasks), before, after
    results, before, after = asyncio.run(go())
    assert all(len(r["events"]) == 60 for r in results)
    assert after < 4 * 60, "the streams ended before the reset was answered"
    t = get_json(url + "/emulator/ground_truth")["total"]
    # Tokens the client had before sending the reset were sent before it. Tokens it had not yet
    # read when the reset was answered were mostly sent after it; a busy client may have left some
    # already sent in its socket buffers, hence the half.
    assert (4 * 60 - after) // 2 <= t["tokens_sent"] <= 4 * 60 - before
    assert t["lateness_us"]["count"] == t["tokens_sent"]
    assert t["itl_us"]["count"] == t["tokens_sent"]        # every counted token had a predecessor
    assert t["requests_completed"] == 4
