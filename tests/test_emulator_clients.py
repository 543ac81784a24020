"""The official clients are the oracle: every stream the emulator sends must parse in them."""

from __future__ import annotations

import asyncio

import openai
import pytest
from text_generation import AsyncClient, Client
from text_generation.errors import OverloadedError, ValidationError

from tests.support.emulator import emulator, get_json, post


@pytest.fixture(scope="module", params=["cpu-demo", "fixed-50ms-10ms"])
def reps(request):
    """Both engines: batching (every token written in Python) and fixed timing (middle tokens
    written by the C token writer, fastemit.c)."""
    with emulator(replicas=2, profile=request.param) as r:
        yield r


PROMPT = "one two three four five six seven eight"


def test_tgi_sync_generate_stream(reps):
    for url in reps.urls:
        c = Client(url, timeout=30)
        events = list(c.generate_stream(PROMPT, max_new_tokens=17))
        assert len(events) == 17
        assert [e.generated_text for e in events[:-1]] == [None] * 16
        last = events[-1]
        assert last.details.finish_reason.value == "length"
        assert last.details.generated_tokens == 17
        assert last.generated_text == "".join(e.token.text for e in events)
        assert all(not e.token.special for e in events)


def test_tgi_async_generate_stream(reps):
    async def go():
        c = AsyncClient(reps.urls[1], timeout=30)
        out = []
        async for e in c.generate_stream(PROMPT, max_new_tokens=9):
            out.append(e)
        return out
    events = asyncio.run(go())
    assert len(events) == 9
    assert events[-1].generated_text == "".join(e.token.text for e in events)
    assert events[-1].details.generated_tokens == 9  # the client always asks for details


def test_tgi_generate_and_compat(reps):
    c = Client(reps.urls[0], timeout=30)
    r = c.generate(PROMPT, max_new_tokens=5)        # posts to "/" with stream=false -> a list
    assert r.details.generated_tokens == 5
    assert len(r.details.tokens) == 5
    assert r.generated_text == "".join(t.text for t in r.details.tokens)
    status, body = post(reps.urls[0] + "/generate", {"inputs": PROMPT, "parameters": {"max_new_tokens": 3}})
    assert status == 200 and len(__import__("json").loads(body)["generated_text"].split()) == 3


def test_tgi_validation_errors_through_client(reps):
    c = Client(reps.urls[0], timeout=30)
    info = get_json(reps.urls[0] + "/info")
    with pytest.raises(ValidationError, match="stop sequences"):
        list(c.generate_stream(PROMPT, max_new_tokens=3, stop_sequences=["zz"] * (info["max_stop_sequences"] + 1)))
    with pytest.raises(ValidationError, match="inputs"):
        c.generate(" ".join(["w"] * (info["max_input_tokens"] + 1)), max_new_tokens=1)


def test_tgi_overloaded_fault_through_client(reps):
    c = Client(reps.urls[0], timeout=30, headers={"X-Emulator-Fault": "status:429"})
    with pytest.raises(OverloadedError):
        c.generate(PROMPT, max_new_tokens=2)


def test_openai_completions_stream(reps):
    c = openai.OpenAI(base_url=reps.urls[0] + "/v1", api_key="x")
    chunks = list(c.completions.create(model="tgi", prompt=PROMPT, max_tokens=12, stream=True,
                                       stream_options={"include_usage": True}))
    assert len(chunks) == 12
    assert [ch.choices[0].finish_reason for ch in chunks][-1] == "length"
    assert chunks[-1].usage.completion_tokens == 12
    assert chunks[-1].usage.prompt_tokens == len(PROMPT.split())
    text = "".join(ch.choices[0].text for ch in chunks)
    assert len(text.split()) == 12


def test_openai_chat_stream_usage(reps):
    c = openai.OpenAI(base_url=reps.urls[1] + "/v1", api_key="x")
    chunks = list(c.chat.completions.create(
        model="tgi", messages=[{"role": "user", "content": PROMPT}], max_tokens=7, stream=True,
        stream_options={"include_usage": True}))
    assert len(chunks) == 8                      # 7 tokens + the usage-only chunk
    assert all(ch.usage is None for ch in chunks[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 7
    assert chunks[-2].choices[0].finish_reason == "length"
    assert len("".join(ch.choices[0].delta.content for ch in chunks[:-1]).split()) == 7
    no_usage = list(c.chat.completions.create(
        model="tgi", messages=[{"role": "user", "content": PROMPT}], max_tokens=4, stream=True))
    assert len(no_usage) == 4 and all(ch.usage is None for ch in no_usage)


def test_openai_non_streaming(reps):
    c = openai.OpenAI(base_url=reps.urls[0] + "/v1", api_key="x")
    r = c.completions.create(model="tgi", prompt=PROMPT, max_tokens=6)
    assert r.usage.completion_tokens == 6 and len(r.choices[0].text.split()) == 6
    r = c.chat.completions.create(model="tgi", messages=[{"role": "user", "content": "hi"}], max_tokens=3)
    assert r.usage.completion_tokens == 3 and r.choices[0].finish_reason == "length"


def test_openai_stream_error_event_raises(reps):
    c = openai.OpenAI(base_url=reps.urls[0] + "/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.APIError):
        list(c.chat.completions.create(model="tgi", messages=[{"role": "user", "content": "hi"}],
                                       max_tokens=10, top_p=1.0, stream=True))
