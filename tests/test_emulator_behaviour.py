"""Two replicas through real HTTP clients: counts and order, 422/429, /metrics under load,
interference between replicas, and throughput that saturates as concurrency grows."""

from __future__ import annotations

import asyncio
import json
import re
import statistics
import time

import aiohttp

from tests.support.emulator import emulator, get_json, get_text, post, stream_tgi, write_profile

PROMPT = "alpha beta gamma delta epsilon zeta eta theta"


def test_two_replicas_token_counts_and_order():
    async def go(urls):
        async with aiohttp.ClientSession() as s:
            jobs = [stream_tgi(s, urls[i % 2], PROMPT, 5 + i, ) for i in range(24)]
            return await asyncio.gather(*jobs)

    with emulator(2, "cpu-demo") as reps:
        results = asyncio.run(go(reps.urls))
        for i, r in enumerate(results):
            ev = r["events"]
            assert r["status"] == 200
            assert [e["index"] for e in ev] == list(range(1, 6 + i))
            assert all(e["generated_text"] is None for e in ev[:-1])
            assert ev[-1]["details"] == {"finish_reason": "length", "generated_tokens": 5 + i, "seed": None,
                                         "input_length": len(PROMPT.split())}
            assert ev[-1]["generated_text"] == "".join(e["token"]["text"] for e in ev)
            assert r["t"] == sorted(r["t"])
        gt = get_json(reps.urls[0] + "/emulator/ground_truth")
        assert gt["total"]["tokens_sent"] == sum(len(r["events"]) for r in results)
        assert gt["total"]["requests_completed"] == 24
        assert [p["requests_completed"] for p in gt["per_replica"]] == [12, 12]
        assert gt["total"]["itl_us"]["count"] == sum(len(r["events"]) - 1 for r in results)
        assert gt["total"]["lateness_us"]["count"] == gt["total"]["tokens_sent"]
        assert gt["total"]["tokens_buffered"] == 0      # these clients read every token at once


def test_validation_422_bodies(tmp_path):
    with emulator(2, "cpu-demo") as reps:
        info = get_json(reps.urls[1] + "/info")
        total = info["max_total_tokens"]
        # TGI 3.x checks the first 1024 new tokens (DEFAULT_GENERATION_LENGTH) against the total
        too_long = " ".join(["w"] * (total - 1000))
        status, body = post(reps.urls[1] + "/generate", {"inputs": too_long, "parameters": {"max_new_tokens": total}})
        assert status == 422
        assert json.loads(body) == {
            "error": f"Input validation error: `inputs` tokens + `max_new_tokens` must be <= {total}. "
                     f"Given: {total - 1000} `inputs` tokens and 1024 `max_new_tokens`",
            "error_type": "validation"}
        long_input = " ".join(["w"] * (info["max_input_tokens"] + 1))
        status, body = post(reps.urls[1] + "/generate", {"inputs": long_input, "parameters": {"max_new_tokens": 1}})
        assert status == 422 and json.loads(body)["error_type"] == "validation"
        assert "`inputs` must have less than" in json.loads(body)["error"]
        status, body = post(reps.urls[1] + "/generate", {"inputs": PROMPT, "parameters": {"max_new_tokens": 0}})
        assert status == 422 and "strictly positive" in json.loads(body)["error"]
        status, body = post(reps.urls[1] + "/v1/completions", {"prompt": PROMPT, "max_tokens": 3, "top_p": 1.0})
        assert status == 422 and json.loads(body)["error_type"] == "validation"
        # streams: 200, then TGI's error event
        r = asyncio.run(_one_stream(reps.urls[1], 0))
        assert r["status"] == 200 and r["events"][0]["error_type"] == "validation"
        metrics = get_text(reps.urls[1] + "/metrics")
        assert re.search(r'^tgi_request_failure\{err="validation"\} 5$', metrics, re.M)


async def _one_stream(url, max_new):
    async with aiohttp.ClientSession() as s:
        return await stream_tgi(s, url, PROMPT, max_new)


def test_overload_429_and_metrics_under_load(tmp_path):
    prof = write_profile(tmp_path, "small-cap", limits="  max_concurrent_requests: 4",
                         timing="  mode: fixed\n  ttft_ms: 20\n  itl_ms: 20")

    async def go(url):
        async with aiohttp.ClientSession() as s:
            seen = [[] for _ in range(4)]
            busy = [asyncio.create_task(stream_tgi(s, url, PROMPT, 60, events=seen[i]))
                    for i in range(4)]
            # all four admitted and in the batch: each has its first token (not a fixed sleep,
            # which a loaded machine stretches past the requests' arrival)
            deadline = time.monotonic() + 60
            while min(map(len, seen)) < 1:
                assert time.monotonic() < deadline, f"the four streams never all started: {seen}"
                await asyncio.sleep(0.005)
            during = get_text(url + "/metrics")
            async with s.post(url + "/generate", json={"inputs": PROMPT, "parameters": {"max_new_tokens": 2}}) as r:
                rejected = (r.status, await r.json())
            over_stream = await stream_tgi(s, url, PROMPT, 2)
            open_then = sum(len(x) < 60 for x in seen)
            done = await asyncio.gather(*busy)
            return during, (rejected, open_then), over_stream, done

    with emulator(2, prof) as reps:
        before = get_text(reps.urls[0] + "/metrics")
        during, (rejected, open_then), over_stream, done = asyncio.run(go(reps.urls[0]))
        after = get_text(reps.urls[0] + "/metrics")
        other = get_text(reps.urls[1] + "/metrics")

    def metric(text, name):
        m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
        return float(m.group(1)) if m else None

    assert rejected == (429, {"error": "Model is overloaded", "error_type": "overloaded"}), \
        (rejected, f"{open_then} of the 4 streams still open when the second overflow was answered")
    assert over_stream["status"] == 200
    assert over_stream["events"] == [{"error": "Model is overloaded", "error_type": "overloaded"}]
    assert all(len(d["events"]) == 60 for d in done)
    assert metric(before, "tgi_request_count") == 0
    assert metric(during, "tgi_batch_current_size") == 4
    assert metric(during, "tgi_request_count") == 4
    assert metric(after, "tgi_request_count") == 6
    assert metric(after, "tgi_request_success") == 4
    assert metric(after, 'tgi_request_failure{err="overloaded"}') == 2
    assert metric(after, "tgi_batch_current_size") == 0
    assert metric(after, "tgi_request_duration_count") == 4
    assert metric(after, "tgi_request_generated_tokens_sum") == 240
    # 20 ms + 59 x 20 ms each at least; at most what the clients saw, from before each request
    # was sent to its last token (server time that a loaded machine stretches, the clients too)
    seen_s = sum(d["t"][-1] for d in done)
    assert 4 * 1.2 < metric(after, "tgi_request_duration_sum") <= seen_s + 0.01, seen_s
    assert metric(other, "tgi_request_count") == 0                        # replicas keep their own


async def _closed_loop(urls: list[str], streams: int, seconds: float, max_new: int) -> dict:
    """`streams` closed-loop streams spread over `urls`; tokens/s and per-stream ITL as received."""
    t_end = time.perf_counter() + seconds
    tokens = 0
    itls: list[float] = []

    async def user(i, s):
        nonlocal tokens
        while time.perf_counter() < t_end:
            r = await stream_tgi(s, urls[i % len(urls)], PROMPT, max_new)
            tokens += len(r["events"])
            itls.extend(b - a for a, b in zip(r["t"], r["t"][1:]))

    t0 = time.perf_counter()
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as s:
        await asyncio.gather(*(user(i, s) for i in range(streams)))
    return {"tok_s": tokens / (time.perf_counter() - t0), "itl_ms": 1000 * statistics.median(itls)}


def test_interference_two_busy_replicas_slower_per_step(tmp_path):
    # GPU-heavy steps: 2 ms host + 10 ms GPU; a second busy replica shares the GPU.
    prof = write_profile(tmp_path, "gpu-heavy", timing="""  mode: roofline
  host_step_ms: 2
  gpu_step_ms: 10
  contention_cap: 0.9""")
    with emulator(2, prof) as reps:
        one = asyncio.run(_closed_loop(reps.urls[:1], 8, 2.5, 40))
        state_one = get_json(reps.urls[0] + "/emulator/state")
        both = asyncio.run(_closed_loop(reps.urls, 16, 2.5, 40))
        gpu = get_json(reps.urls[1] + "/emulator/gpu")
    # alone: ~12.3 ms per step; two busy replicas: ~21 ms (processor sharing of the GPU part)
    assert 10 < one["itl_ms"] < 16, one
    assert both["itl_ms"] > 1.4 * one["itl_ms"], (one, both)
    assert state_one["replicas"][1]["steps"] == 0
    assert gpu["emulated"] is True and gpu["replicas"] == 2 and gpu["energy_j"] > 0


def test_throughput_saturates_with_concurrency(tmp_path):
    # host work grows 0.5 ms per sequence: tokens/s -> 2000 as the batch grows.
    prof = write_profile(tmp_path, "host-bound", timing="""  mode: roofline
  host_step_ms: 5
  host_per_seq_ms: 0.5""", limits="  max_batch_prefill_tokens: 4096")
    with emulator(1, prof) as reps:
        x = {c: asyncio.run(_closed_loop(reps.urls, c, 2.0, 30))["tok_s"] for c in (1, 8, 32, 64)}
    assert x[8] > 3 * x[1], x
    assert x[32] > x[8], x
    assert x[64] < 1.3 * x[32], x          # the knee: doubling concurrency adds < 30%
    assert x[64] < 2000 * 1.05, x


def test_request_delay_from_the_clients_sent_header(monkeypatch):
    """A request carrying ``X-Sent-Ns`` (the client's CLOCK_MONOTONIC at its send, same host) is
    counted in ``request_delay_us``: the load generator's chained requests with SLM_SENT_HEADER=1
    (not the first, whose socket may still have to connect), and a hand-made one stamped 50 ms in
    the past. Requests without it are not counted."""
    from harness.loadgen.stream import Chain, StreamClient
    from harness.protocols import RequestSpec, protocol_for

    proto = protocol_for("tgi")
    left = [3]

    def nxt(_url):
        if not left[0]:
            return None
        left[0] -= 1
        spec = RequestSpec(PROMPT, 8, 3)
        return spec, proto.body(spec), None

    monkeypatch.setenv("SLM_SENT_HEADER", "1")
    with emulator(1, "cpu-demo") as reps:
        url = reps.urls[0]
        c = StreamClient(proto, request_timeout_s=30)
        chain = Chain(nxt)
        results = [c.send(url, RequestSpec(PROMPT, 8, 3), chain=chain)]
        while chain.pending is not None:
            results.append(c.wait(chain))
        c.close()
        assert len(results) == 4 and all(r.error_class is None and r.output_tokens == 3 for r in results)
        gt = get_json(url + "/emulator/ground_truth")["total"]["request_delay_us"]
        assert gt["count"] == 3 and 0 <= gt["max"] < 1_000_000, gt     # loopback: well under a second
        post(url + "/generate", {"inputs": PROMPT, "parameters": {"max_new_tokens": 2}},
             {"x-sent-ns": str(time.monotonic_ns() - 50_000_000)})
        post(url + "/generate", {"inputs": PROMPT, "parameters": {"max_new_tokens": 2}})   # no header
        gt = get_json(url + "/emulator/ground_truth")["total"]["request_delay_us"]
    assert gt["count"] == 4 and gt["max"] >= 50_000, gt


def test_arrival_peak_counts_the_busiest_10ms_of_requests():
    """``requests_peak_10ms`` is the most requests read in one 10 ms bucket: a bunch of requests
    (which keeps its tokens due together for a whole response) shows above the mean; the merged
    summary takes the busiest replica's peak, not a sum over buckets no two replicas share."""
    from harness.emulator.groundtruth import GroundTruth, merge_summaries

    a, b = GroundTruth(0), GroundTruth(1)
    t0 = 1_000_000_000_000
    for i in range(5):                     # one request every 20 ms: one per bucket
        a.arrived(t0 + i * 20_000_000)
    assert a.summary()["requests_peak_10ms"] == 1
    for i in range(7):                     # a bunch of 7 within 3 ms, then one in the next bucket
        a.arrived(t0 + 200_000_000 + i * 400_000)
    a.arrived(t0 + 212_000_000)
    b.arrived(t0)
    b.arrived(t0 + 1_000)
    s = a.summary()
    assert (s["requests_peak_10ms"], s["requests_received"]) == (7, 13)
    m = merge_summaries([a, b])
    assert (m["requests_peak_10ms"], m["requests_received"]) == (7, 15)
    a.reset()
    assert a.summary()["requests_peak_10ms"] == 0


def test_arrival_peak_is_served_with_the_ground_truth():
    """Over HTTP: after requests the ground truth carries a peak between 1 and the count."""
    with emulator(1, "cpu-demo") as reps:
        url = reps.urls[0]
        for _ in range(3):
            post(url + "/generate", {"inputs": PROMPT, "parameters": {"max_new_tokens": 2}})
        gt = get_json(url + "/emulator/ground_truth")["total"]
    assert gt["requests_received"] == 3 and 1 <= gt["requests_peak_10ms"] <= 3, gt
