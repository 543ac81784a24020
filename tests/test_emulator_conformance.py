"""The emulator against TGI 3.x's router, request by request, with the official clients as oracles.

What each request must get is read from TGI's source (``router/src/server.rs``, ``validation.rs``,
``lib.rs``): axum's 422 text for a body of the wrong shape, ``{"error", "error_type"}`` 422s for
failed validations, and the features' response shapes. Every malformed request must be answered
on its connection (never dropped) and counted: received = completed + rejected + cancelled in the
ground truth, and one ``tgi_request_count`` each in ``/metrics``.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import time
from urllib.parse import urlparse

import openai
import pytest
from huggingface_hub import AsyncInferenceClient, InferenceClient
from text_generation import Client

from tests.support.emulator import emulator, get_json, get_text, post

PROMPT = "one two three four five six seven eight"
DESER = "Failed to deserialize the JSON body into the target type: "
G = "/generate"
GS = "/generate_stream"
CHAT = "/v1/chat/completions"
CMPL = "/v1/completions"
MSG = [{"role": "user", "content": "hi there"}]


def _gen(**params):
    return {"inputs": PROMPT, "parameters": {"max_new_tokens": 2, **params}}


# (route, body, status, what the body must contain); the texts are TGI's own
MALFORMED = [
    # wrong types: axum's Json rejection, serde's words
    (G, _gen(temperature="x"), 422, DESER + 'parameters.temperature: invalid type: string "x", expected f32'),
    (G, _gen(best_of="2"), 422, DESER + 'parameters.best_of: invalid type: string "2", expected usize'),
    (G, {"inputs": PROMPT, "parameters": [1]}, 422, DESER + "parameters: invalid type: sequence, expected struct GenerateParameters"),
    (G, {"inputs": PROMPT, "parameters": None}, 422, DESER + "parameters: invalid type: null, expected struct GenerateParameters"),
    (G, _gen(stop=5), 422, DESER + "parameters.stop: invalid type: integer `5`, expected a sequence"),
    (G, _gen(stop=["a", 5]), 422, DESER + "parameters.stop[1]: invalid type: integer `5`, expected a string"),
    (G, _gen(stop=None), 422, DESER + "parameters.stop: invalid type: null, expected a sequence"),
    (G, _gen(max_new_tokens=-1), 422, DESER + "parameters.max_new_tokens: invalid value: integer `-1`, expected u32"),
    (G, _gen(max_new_tokens=1.5), 422, DESER + "parameters.max_new_tokens: invalid type: floating point `1.5`, expected u32"),
    (G, _gen(max_new_tokens="3"), 422, DESER + 'parameters.max_new_tokens: invalid type: string "3", expected u32'),
    (G, _gen(top_k=1.5), 422, DESER + "parameters.top_k: invalid type: floating point `1.5`, expected i32"),
    (G, _gen(do_sample="yes"), 422, DESER + 'parameters.do_sample: invalid type: string "yes", expected a boolean'),
    (G, _gen(do_sample=None), 422, DESER + "parameters.do_sample: invalid type: null, expected a boolean"),
    (G, _gen(details=1), 422, DESER + "parameters.details: invalid type: integer `1`, expected a boolean"),
    (G, _gen(seed=-5), 422, DESER + "parameters.seed: invalid value: integer `-5`, expected u64"),
    (G, _gen(truncate="4"), 422, DESER + 'parameters.truncate: invalid type: string "4", expected usize'),
    (G, _gen(top_n_tokens=[2]), 422, DESER + "parameters.top_n_tokens: invalid type: sequence, expected u32"),
    (G, _gen(return_full_text="no"), 422, DESER + "parameters.return_full_text: invalid type: string"),
    (G, _gen(grammar={"value": "x"}), 422, DESER + "parameters.grammar: missing field `type`"),
    (G, _gen(grammar={"type": "text", "value": "x"}), 422, DESER + "parameters.grammar: unknown variant `text`"),
    (G, _gen(grammar={"type": "regex", "value": 3}), 422, DESER + "parameters.grammar.value: invalid type: integer `3`"),
    (G, {"inputs": 5}, 422, DESER + "inputs: invalid type: integer `5`, expected a string"),
    (G, {"inputs": None}, 422, DESER + "inputs: invalid type: null, expected a string"),
    (G, {"parameters": {}}, 422, DESER + "missing field `inputs`"),
    (G, [1, 2], 422, DESER + "invalid type: sequence, expected struct GenerateRequest"),
    (G, "text", 422, DESER + 'invalid type: string "text", expected struct GenerateRequest'),
    (GS, _gen(temperature=[1]), 422, DESER + "parameters.temperature: invalid type: sequence, expected f32"),
    ("/", {"inputs": PROMPT, "stream": "yes"}, 422, DESER + 'stream: invalid type: string "yes", expected a boolean'),
    (CHAT, {"messages": [{"role": "user", "content": 5}]}, 422, DESER + "messages[0]: data did not match any variant of untagged enum MessageBody"),
    (CHAT, {"messages": [{"content": "hi"}]}, 422, DESER + "messages[0]: missing field `role`"),
    (CHAT, {"messages": [{"role": 3, "content": "hi"}]}, 422, DESER + "messages[0].role: invalid type: integer `3`, expected a string"),
    (CHAT, {"messages": "hi"}, 422, DESER + 'messages: invalid type: string "hi", expected a sequence'),
    (CHAT, {"model": "tgi"}, 422, DESER + "missing field `messages`"),
    (CHAT, {"messages": MSG, "stop": 5}, 422, DESER + "stop: invalid type: integer `5`, expected a sequence"),
    (CHAT, {"messages": MSG, "stop": "x"}, 422, DESER + 'stop: invalid type: string "x", expected a sequence'),
    (CHAT, {"messages": MSG, "temperature": "hot"}, 422, DESER + 'temperature: invalid type: string "hot", expected f32'),
    (CHAT, {"messages": MSG, "max_tokens": -3}, 422, DESER + "max_tokens: invalid value: integer `-3`, expected u32"),
    (CHAT, {"messages": MSG, "stream": 1}, 422, DESER + "stream: invalid type: integer `1`, expected a boolean"),
    (CHAT, {"messages": MSG, "logprobs": "yes"}, 422, DESER + 'logprobs: invalid type: string "yes", expected a boolean'),
    (CHAT, {"messages": MSG, "stream_options": {"include_usage": "y"}}, 422, DESER + "stream_options.include_usage: invalid type"),
    (CHAT, {"messages": [{"role": "user", "content": [{"type": "video", "x": 1}]}]}, 422,
     DESER + "messages[0]: data did not match any variant of untagged enum MessageBody"),
    (CMPL, {"prompt": 5}, 422, DESER + "prompt: data did not match any variant of untagged enum PromptDeserializer"),
    (CMPL, {"prompt": []}, 422, DESER + "prompt: Empty array detected. Do not use an empty array for the prompt."),
    (CMPL, {"prompt": PROMPT, "max_tokens": "4"}, 422, DESER + 'max_tokens: invalid type: string "4", expected u32'),
    (CMPL, {"prompt": PROMPT, "stop": 7}, 422, DESER + "stop: invalid type: integer `7`, expected a sequence"),
    (CMPL, {}, 422, DESER + "missing field `prompt`"),
    # not JSON at all
    (G, b'{"inputs": "x",', 400, "Failed to parse the request body as JSON"),
    (G, b"NaN", 400, "Failed to parse the request body as JSON"),
    # TGI's validations (validation.rs): 422 {"error": "Input validation error: ...", "error_type": "validation"}
    (G, _gen(top_p=1.0), 422, "`top_p` must be > 0.0 and < 1.0"),
    (G, _gen(top_p=0), 422, "`top_p` must be > 0.0 and < 1.0"),
    (G, _gen(typical_p=1.0), 422, "`typical_p` must be > 0.0 and < 1.0"),
    (G, _gen(repetition_penalty=0), 422, "`repetition_penalty` must be strictly positive"),
    (G, _gen(frequency_penalty=2.5), 422, "`frequency_penalty` must be >= -2.0 and <= 2.0"),
    (G, _gen(frequency_penalty=-3), 422, "`frequency_penalty` must be >= -2.0 and <= 2.0"),
    (G, _gen(temperature=0), 422, "`temperature` must be strictly positive"),
    (G, _gen(top_k=0), 422, "`top_k` must be strictly positive"),
    (G, _gen(max_new_tokens=0), 422, "`max_new_tokens` must be strictly positive"),
    (G, _gen(top_n_tokens=6), 422, "`top_n_tokens` must be >= 0 and <= 5. Given: 6"),
    (G, _gen(truncate=0), 422, "`truncate` must be strictly positive and less than"),
    (G, _gen(truncate=10**6), 422, "`truncate` must be strictly positive and less than"),
    (G, _gen(stop=["a", "b", "c", "d", "e"]), 422, "`stop` supports up to 4 stop sequences. Given: 5"),
    (G, _gen(best_of=2), 422, "you must use sampling when `best_of` is > 1"),
    (G, _gen(best_of=3, do_sample=True), 422, "`best_of` must be > 0 and <= 2. Given: 3"),
    (G, _gen(best_of=2, do_sample=True, seed=1), 422, "`seed` must not be set when `best_of` > 1"),
    (G, _gen(grammar={"type": "json", "value": {"type": "object"}}), 422, "Grammar must have a 'properties' field"),
    (G, _gen(grammar={"type": "json", "value": "{not json"}), 422, "grammar is not valid:"),
    (G, _gen(grammar={"type": "json", "value": 5}), 422, "grammar is not supported"),
    (G, {"inputs": "", "parameters": {"max_new_tokens": 2}}, 422, "`inputs` cannot be empty"),
    (G, {"inputs": "w " * 3000, "parameters": {"max_new_tokens": 2}}, 422, "`inputs` must have less than 2048 tokens"),
    (CMPL, {"prompt": PROMPT, "suffix": "x"}, 422, "Suffix is not supported"),
    (CMPL, {"prompt": [PROMPT] * 5}, 422, "Number of prompts exceeds the maximum allowed batch size of 4"),
    (CHAT, {"messages": MSG, "top_logprobs": 9, "logprobs": True}, 422, "`top_n_tokens` must be >= 0 and <= 5"),
    (CHAT, {"messages": MSG, "presence_penalty": -2.0}, 422, "`repetition_penalty` must be strictly positive"),
]


def _raw(url: str, path: str, body, ctype: str = "application/json", method: str = "POST"):
    """One request on a fresh connection: (status, headers, body); raises if the server drops it."""
    u = urlparse(url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=20)
    try:
        data = body if isinstance(body, bytes) else json.dumps(body).encode() if body is not None else None
        c.request(method, path, body=data, headers={"content-type": ctype} if data is not None else {})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def _metric(text: str, name: str) -> float:
    return sum(float(v) for v in re.findall(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.M))


@pytest.fixture(scope="module")
def url():
    with emulator(replicas=1, profile="cpu-demo") as reps:
        yield reps.urls[0]


def _gt(url):
    t = get_json(url + "/emulator/ground_truth")["total"]
    return t["requests_received"], t["requests_completed"], t["requests_rejected"], t["requests_cancelled"]


def test_malformed_requests_get_tgis_answers_and_are_counted(url):
    assert len(MALFORMED) >= 60
    m0 = get_text(url + "/metrics")
    r0 = _gt(url)
    wrong = []
    for path, body, status, text in MALFORMED:
        got, headers, data = _raw(url, path, body)
        if got != status or text not in data.decode():
            wrong.append((path, body, got, data[:200]))
        if status == 422 and not text.startswith(DESER):
            assert json.loads(data)["error_type"] in ("validation", "suffix not supported", "batch size exceeded")
    assert not wrong, wrong
    # streams answer validation errors as an SSE event after a 200, as TGI does
    status, _, data = _raw(url, GS, _gen(top_p=1.0))
    assert status == 200 and data == (b'data: {"error":"Input validation error: `top_p` must be > 0.0 and < 1.0",'
                                      b'"error_type":"validation"}\n\n')
    status, _, data = _raw(url, GS, _gen(decoder_input_details=True))
    assert b"`decoder_input_details` == true is not supported when streaming tokens" in data
    status, _, data = _raw(url, GS, _gen(best_of=2, do_sample=True))
    assert b"`best_of` != 1 is not supported when streaming tokens" in data
    status, _, data = _raw(url, CHAT, {"messages": MSG, "stream": True, "top_logprobs": 7, "logprobs": True})
    assert status == 200 and data.endswith(b"\n\ndata: [DONE]\n\n") and b'"http_status_code":422' in data
    status, _, data = _raw(url, G, _gen(), ctype="text/plain")
    assert status == 415 and b"Content-Type: application/json" in data
    n = len(MALFORMED) + 5
    rec, comp, rej, canc = _gt(url)
    assert rec - r0[0] == n and comp == r0[1]
    assert rec == comp + rej + canc, "a request fell out of the ground truth"
    assert rej - r0[2] == n
    m1 = get_text(url + "/metrics")
    assert _metric(m1, "tgi_request_count") - _metric(m0, "tgi_request_count") == n
    assert _metric(m1, "tgi_request_failure") - _metric(m0, "tgi_request_failure") == n


def test_accepted_edge_cases(url):
    # whitespace-only inputs are not empty: TGI tokenizes them
    status, _, data = _raw(url, G, {"inputs": "   ", "parameters": {"max_new_tokens": 2}})
    assert status == 200 and len(json.loads(data)["generated_text"].split()) == 2
    # no parameters at all: TGI's default_parameters, as many new tokens as max_total_tokens
    # leaves; the first event is enough (closing the stream cancels it, and that is counted too)
    cancelled = _gt(url)[3]
    u = urlparse(url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=20)
    c.request("POST", "/", body=json.dumps({"inputs": PROMPT, "stream": True}).encode(),
              headers={"content-type": "application/json"})
    r = c.getresponse()
    first = r.fp.readline() + r.fp.readline()
    c.close()
    assert r.status == 200 and b'"index":1' in first
    # best_of 0 is not > 1: served
    assert _raw(url, G, _gen(best_of=0))[0] == 200
    # the closed stream is counted once the emulator notices the close: poll for it (a fixed
    # sleep is too short when a loaded machine delays that), never accept a mismatch at the end
    deadline = time.monotonic() + 30
    while (gt := _gt(url))[0] != sum(gt[1:]) and time.monotonic() < deadline:
        time.sleep(0.05)
    rec, comp, rej, canc = gt
    assert rec == comp + rej + canc and canc == cancelled + 1, (gt, cancelled)


def test_text_generation_client_features(url):
    c = Client(url, timeout=30)
    r = c.generate(PROMPT, max_new_tokens=4, decoder_input_details=True, top_n_tokens=3)
    d = r.details
    assert len(d.prefill) == len(PROMPT.split()) and d.prefill[0].logprob is None
    assert [t.text.strip() for t in d.prefill] == PROMPT.split()
    assert len(d.top_tokens) == 4 and all(len(t) == 3 for t in d.top_tokens)
    assert d.seed is None                              # greedy: no seed echoed
    r = c.generate(PROMPT, max_new_tokens=4, do_sample=True, seed=42)
    assert r.details.seed == 42
    r = c.generate(PROMPT, max_new_tokens=3, do_sample=True, best_of=2)
    assert len(r.details.best_of_sequences) == 1 and r.details.seed is not None
    # a stop sequence ends the output where it first appears, finish_reason stop_sequence (the
    # emulator's output walks its whole vocabulary within 97 tokens, so " model" comes)
    r = c.generate(PROMPT, max_new_tokens=120, stop_sequences=[" model"])
    assert r.details.finish_reason.value == "stop_sequence"
    assert r.generated_text.endswith(" model") and r.generated_text.count(" model") == 1
    assert r.details.generated_tokens == len(r.generated_text.split()) < 120
    events = list(c.generate_stream(PROMPT, max_new_tokens=120, stop_sequences=[" model"]))
    assert events[-1].details.finish_reason.value == "stop_sequence"
    assert events[-1].generated_text.endswith(" model") and len(events) == events[-1].details.generated_tokens
    events = list(c.generate_stream(PROMPT, max_new_tokens=3, top_n_tokens=2))
    assert all(len(e.top_tokens) == 2 for e in events)
    # return_full_text: "/" prepends the prompt by default (text-generation pipeline), /generate does not
    r = c.generate(PROMPT, max_new_tokens=2)
    assert not r.generated_text.startswith(PROMPT)        # the client sends return_full_text=false
    status, _, data = _raw(url, "/", {"inputs": PROMPT, "parameters": {"max_new_tokens": 2}})
    assert json.loads(data)[0]["generated_text"].startswith(PROMPT)
    status, _, data = _raw(url, G, {"inputs": PROMPT, "parameters": {"max_new_tokens": 2}})
    assert not json.loads(data)["generated_text"].startswith(PROMPT)


def test_truncate_and_headers(url):
    status, h, data = _raw(url, G, _gen(truncate=3, details=True))
    assert status == 200
    assert h["x-prompt-tokens"] == "3" and h["x-generated-tokens"] == "2"
    assert h["x-compute-characters"] == str(len(PROMPT))
    for k in ("x-total-time", "x-validation-time", "x-queue-time", "x-inference-time", "x-time-per-token"):
        assert h[k].isdigit(), k
    assert float(h["x-compute-time"]) > 0 and h["x-compute-type"] == "gpu+optimized"
    status, h, data = _raw(url, GS, {"inputs": PROMPT, "parameters": {"max_new_tokens": 2, "truncate": 3,
                                                                     "details": True}})
    last = json.loads(data.split(b"\n\n")[-2][len(b"data: "):])
    assert last["details"]["input_length"] == 3 and h["x-compute-characters"] == str(len(PROMPT))


def test_routes(url):
    assert _raw(url, "/", None, method="GET")[0] == 200
    assert _raw(url, "/ping", None, method="GET")[0] == 200
    doc = json.loads(_raw(url, "/api-doc/openapi.json", None, method="GET")[2])
    assert "/generate" in doc["paths"] and doc["openapi"].startswith("3.")
    status, _, data = _raw(url, "/tokenize", {"inputs": "hello big world"})
    toks = json.loads(data)
    assert status == 200 and [t["text"] for t in toks] == ["hello", "big", "world"] and toks[1]["start"] == 6
    status, _, data = _raw(url, "/chat_tokenize", {"messages": MSG})
    out = json.loads(data)
    assert status == 200 and "hi there" in out["templated_text"]
    # its length is the chat request's prompt_tokens
    usage = json.loads(_raw(url, CHAT, {"messages": MSG, "max_tokens": 2})[2])["usage"]
    assert usage["prompt_tokens"] == len(out["tokenize_response"])
    # /invocations: SageMaker's untagged request (generate, chat or completion)
    assert isinstance(json.loads(_raw(url, "/invocations", {"inputs": PROMPT, "parameters": {"max_new_tokens": 2}})[2]), list)
    assert json.loads(_raw(url, "/invocations", {"messages": MSG, "max_tokens": 2})[2])["object"] == "chat.completion"
    assert json.loads(_raw(url, "/invocations", {"prompt": PROMPT, "max_tokens": 2})[2])["object"] == "text_completion"
    assert _raw(url, "/invocations", {"nothing": 1})[0] == 422
    m = get_text(url + "/metrics")
    for name in ("tgi_batch_concat", "tgi_batch_concat_duration_count", "tgi_batch_decode_duration_count",
                 "tgi_batch_filter_duration_count", "tgi_batch_inference_failure", "tgi_request_skipped_tokens_count"):
        assert re.search(rf"^{name}(\{{|\s)", m, re.M), name
    rec, comp, rej, canc = _gt(url)
    assert rec == comp + rej + canc


def test_huggingface_hub_client(url):
    c = InferenceClient(base_url=url, timeout=30)
    out = c.text_generation(PROMPT, max_new_tokens=5, details=True)
    assert out.details.generated_tokens == 5
    toks = list(c.text_generation(PROMPT, max_new_tokens=6, stream=True))
    assert len(toks) == 6 and all(isinstance(t, str) for t in toks)
    chunks = list(c.chat_completion(MSG, max_tokens=5, stream=True))
    assert len(chunks) == 5 and chunks[-1].choices[0].finish_reason == "length"
    r = c.chat_completion(MSG, max_tokens=4, logprobs=True, top_logprobs=2)
    lp = r.choices[0].logprobs.content
    assert len(lp) == 4 and all(len(x.top_logprobs) == 2 for x in lp)
    chunks = list(c.chat_completion(MSG, max_tokens=3, stream=True, logprobs=True))
    assert all(ch.choices[0].logprobs.content[0].token for ch in chunks)

    async def go():
        a = AsyncInferenceClient(base_url=url, timeout=30)
        text = [t async for t in await a.text_generation(PROMPT, max_new_tokens=4, stream=True)]
        chat = [ch async for ch in await a.chat_completion(MSG, max_tokens=3, stream=True)]
        whole = await a.chat_completion(MSG, max_tokens=2)
        return text, chat, whole
    text, chat, whole = asyncio.run(go())
    assert len(text) == 4 and len(chat) == 3 and whole.usage.completion_tokens == 2


def test_openai_client(url):
    c = openai.OpenAI(base_url=url + "/v1", api_key="x")
    r = c.completions.create(model="tgi", prompt=[PROMPT, "a b"], max_tokens=3)
    assert [ch.index for ch in r.choices] == [0, 1] and r.usage.completion_tokens == 6
    assert r.usage.prompt_tokens == len(PROMPT.split()) + 2
    chunks = list(c.completions.create(model="tgi", prompt=[PROMPT, "a b", "c"], max_tokens=4, stream=True))
    by_index: dict[int, int] = {}
    for ch in chunks:
        by_index[ch.choices[0].index] = by_index.get(ch.choices[0].index, 0) + 1
    assert by_index == {0: 4, 1: 4, 2: 4}
    r = c.chat.completions.create(model="tgi", messages=MSG, max_tokens=3, logprobs=True, top_logprobs=1)
    assert len(r.choices[0].logprobs.content) == 3
    with pytest.raises(openai.UnprocessableEntityError):
        c.chat.completions.create(model="tgi", messages=MSG, max_tokens=3, top_p=1.0)
    rec, comp, rej, canc = _gt(url)
    assert rec == comp + rej + canc


def test_post_helper_json_errors_keep_the_connection(url):
    """Several bad requests on one keep-alive connection: each answered, the connection kept."""
    u = urlparse(url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=20)
    try:
        for body in (_gen(temperature="x"), _gen(stop=5), _gen(top_p=1.0), _gen()):
            c.request("POST", G, body=json.dumps(body).encode(), headers={"content-type": "application/json"})
            r = c.getresponse()
            r.read()
            assert r.status in (200, 422)
        assert r.status == 200
    finally:
        c.close()
    assert post(url + G, _gen())[0] == 200
