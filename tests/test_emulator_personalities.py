"""``slm-harness emulate --server vllm|openai`` (and ``--sse-compact``): the bytes, routes, metric
names and error shapes of each server, with openai's client as the oracle."""

from __future__ import annotations

import http.client
import json
import re
from urllib.parse import urlparse

import openai
import pytest

from tests.support.emulator import emulate_process, get_json, get_text

MSG = [{"role": "user", "content": "one two three"}]


def _raw(url: str, method: str, path: str, body=None):
    u = urlparse(url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=20)
    try:
        data = json.dumps(body).encode() if body is not None else None
        c.request(method, path, body=data, headers={"content-type": "application/json"} if data else {})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


@pytest.fixture(scope="module")
def vllm():
    with emulate_process("cpu-demo", "--server", "vllm") as url:
        yield url


def test_vllm_stream_framing_through_openai_client(vllm):
    c = openai.OpenAI(base_url=vllm + "/v1", api_key="x", max_retries=0)
    chunks = list(c.chat.completions.create(model="m", messages=MSG, max_tokens=5, stream=True,
                                            stream_options={"include_usage": True}))
    # vLLM: a role-only first chunk, 5 content chunks, then the usage chunk
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[0].choices[0].delta.content == ""
    content = chunks[1:-1]
    assert len(content) == 5 and all(ch.choices[0].delta.role is None for ch in content)
    assert content[-1].choices[0].finish_reason == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 5
    assert chunks[0].id.startswith("chatcmpl-")
    status, data = _raw(vllm, "POST", "/v1/chat/completions", {"messages": MSG, "max_tokens": 3, "stream": True})
    events = [e for e in data.split(b"\n\n") if e]
    assert all(e.startswith(b"data: ") for e in events) and events[-1] == b"data: [DONE]"
    assert all(b'"usage"' not in e for e in events)        # no usage unless asked
    assert b'"stop_reason":null' in events[-2]
    chunks = list(c.completions.create(model="m", prompt="a b c", max_tokens=4, stream=True))
    assert len(chunks) == 4 and chunks[-1].choices[0].finish_reason == "length"
    assert all(ch.choices[0].finish_reason is None for ch in chunks[:-1])


def test_vllm_routes_metrics_and_errors(vllm):
    assert _raw(vllm, "GET", "/info")[0] == 404
    assert _raw(vllm, "POST", "/generate", {"inputs": "x"})[0] == 404
    models = get_json(vllm + "/v1/models")
    assert models["data"][0]["owned_by"] == "vllm" and models["data"][0]["max_model_len"] == 4096
    c = openai.OpenAI(base_url=vllm + "/v1", api_key="x", max_retries=0)
    c.chat.completions.create(model="m", messages=MSG, max_tokens=2, top_p=1.0)     # vLLM's range has 1.0
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="m", messages=MSG, max_tokens=2, temperature=3.0)
    assert e.value.status_code == 400 and e.value.body["object"] == "error"
    status, data = _raw(vllm, "POST", "/v1/chat/completions", {"messages": MSG, "temperature": 3.0})
    body = json.loads(data)
    assert status == 400 and body["object"] == "error" and body["code"] == 400 and "temperature" in body["message"]
    status, data = _raw(vllm, "POST", "/v1/chat/completions", {"messages": MSG, "max_tokens": "x"})
    assert status == 400 and json.loads(data)["type"] == "BadRequestError"
    m = get_text(vllm + "/metrics")
    assert "tgi_" not in m
    for name in ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:generation_tokens_total",
                 "vllm:e2e_request_latency_seconds_count", "vllm:time_to_first_token_seconds_count",
                 "vllm:request_success_total"):
        assert re.search(rf'^{re.escape(name)}{{model_name="HuggingFaceTB/SmolLM2-135M"', m, re.M) or \
            re.search(rf"^{re.escape(name)}{{model_name=", m, re.M), name
    gt = get_json(vllm + "/emulator/ground_truth")["total"]
    assert gt["requests_received"] == gt["requests_completed"] + gt["requests_rejected"] + gt["requests_cancelled"]


def test_openai_personality():
    with emulate_process("cpu-demo", "--server", "openai") as url:
        assert _raw(url, "GET", "/metrics")[0] == 404
        status, data = _raw(url, "POST", "/v1/completions", {"prompt": "a", "top_p": 2})
        assert status == 400 and json.loads(data)["error"]["type"] == "invalid_request_error"
        c = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        r = c.chat.completions.create(model="m", messages=MSG, max_tokens=3)
        assert r.usage.completion_tokens == 3


def test_compact_framing_of_older_tgi():
    with emulate_process("fixed-50ms-10ms", "--sse-compact") as url:
        status, data = _raw(url, "POST", "/generate_stream", {"inputs": "a b", "parameters": {"max_new_tokens": 4}})
        events = [e for e in data.split(b"\n\n") if e]
        assert len(events) == 4 and all(e.startswith(b'data:{"index"') for e in events)
        status, data = _raw(url, "POST", "/v1/completions", {"prompt": "a b", "max_tokens": 3, "stream": True})
        assert data.endswith(b"data:[DONE]\n\n")
        assert get_json(url + "/info")["model_id"]
