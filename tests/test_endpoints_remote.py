"""Real endpoints: https with a certificate made here, a bearer token, a path prefix, protocol auto.

The emulator serves https with a self-signed certificate (``openssl``) and answers 401 unless the
request carries its token, as a hosted endpoint does; a small aiohttp gateway serves it under a
path prefix. ``slm-harness run`` reads the token from the environment through the scenario's
``${NAME}`` header; the token must appear in no file, log or console output of the run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.errors import InputError, LaunchError
from harness.loadgen.stream import StreamClient
from harness.protocols import RequestSpec, protocol_for
from harness.protocols.access import Access, parse_url
from harness.protocols.probe import detect
from tests.support.processes import harness_env, prefix_proxy, start_emulator, stop

TOKEN = "hf_Sx7TestTokenValue0123456789abcdef"


@pytest.fixture(scope="module")
def cert(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("tls")
    key, crt = d / "key.pem", d / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(crt),
                    "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return crt, key


@pytest.fixture(scope="module")
def secure(cert, tmp_path_factory):
    """An https emulator that demands the bearer token, with OpenAI events framed ``data: {``."""
    crt, key = cert
    tmp = tmp_path_factory.mktemp("secure")
    p, (url,) = start_emulator(tmp, "--tls-cert", str(crt), "--tls-key", str(key), "--require-token-env",
                               "EMU_TOKEN", "--sse-space", env=harness_env(EMU_TOKEN=TOKEN))
    assert url.startswith("https://127.0.0.1:")
    yield url
    stop(p)


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    p, (url,) = start_emulator(tmp_path_factory.mktemp("plain"))
    yield url
    stop(p)


def _access(cert, token: str | None = TOKEN, **tls) -> Access:
    from harness.scenario.models import Target

    target = Target(headers={"Authorization": "Bearer ${EMU_TOKEN}"} if token else {},
                    tls={"ca_file": str(cert[0]), **tls})
    return Access.from_target(target, environ={"EMU_TOKEN": token} if token else {})


SCENARIO = """\
name: remote
target:
  protocol: {protocol}
  launcher: {{kind: endpoints, urls: ["{url}"]}}
  headers:
    Authorization: "Bearer ${{EMU_TOKEN}}"
    X-Client: slm-harness-test
  tls: {{ca_file: "{ca}"}}
  request_timeout_s: 10
workload: {{seed: 1, prompt_tokens: {{dist: fixed, value: 8}}, output_tokens: {{dist: fixed, value: 12}}}}
load: {{mode: concurrency, levels: [4], warmup_s: 0.3, duration_s: 1.5, cooldown_s: 0.3}}
telemetry: {{enabled: false}}
"""


def _run(tmp: Path, scenario: str, *args: str, env: dict) -> tuple[subprocess.CompletedProcess, dict | None]:
    path = tmp / "s.yaml"
    path.write_text(scenario)
    out = tmp / "summary.json"
    p = subprocess.run([sys.executable, "-m", "harness", "run", str(path), "--results", str(tmp / "res"),
                        "--json", str(out), *args], env=env, capture_output=True, text=True, timeout=120)
    return p, json.loads(out.read_text()) if out.exists() else None


def _files_with(root: Path, needle: bytes) -> list[str]:
    return [str(f) for f in root.rglob("*") if f.is_file() and needle in f.read_bytes()]


def test_https_with_a_token_runs_and_the_token_is_nowhere(secure, cert, tmp_path):
    scen = SCENARIO.format(protocol="openai-chat", url=secure, ca=cert[0])
    p, summary = _run(tmp_path, scen, env=harness_env(EMU_TOKEN=TOKEN))
    assert p.returncode == 0, p.stderr[-3000:]
    cell = summary["cells"][0]
    assert cell["requests"] >= 8 and cell["ok"] == cell["requests"], cell
    # the run directory (records, manifest, scenario copy, logs), the console and the summary
    assert _files_with(tmp_path, TOKEN.encode()) == []
    assert TOKEN not in p.stdout and TOKEN not in p.stderr
    import pandas as pd

    req = pd.read_parquet(next((tmp_path / "res").rglob("requests.parquet")))
    assert (req.output_tokens == 12).all() and req.error_class.isna().all()
    assert set(req.replica) == {secure}
    # the server's /info, asked with the token over TLS, is in the manifest
    manifest = json.loads(next((tmp_path / "res").rglob("manifest.json")).read_text())
    assert manifest["servers"][secure]["model_id"]


def test_without_the_token_every_request_is_401_and_nothing_leaks(secure, cert, tmp_path):
    wrong = "wrong-token-value-0123456789"
    scen = SCENARIO.format(protocol="tgi", url=secure, ca=cert[0]) + "slo: {max_error_rate: 0.01}\n"
    p, summary = _run(tmp_path, scen, "--url", secure, env=harness_env(EMU_TOKEN=wrong))
    assert p.returncode in (1, 4), p.stderr[-3000:]      # every request failed: never "met"
    import pandas as pd

    req = pd.read_parquet(next((tmp_path / "res").rglob("requests.parquet")))
    assert len(req) > 0 and (req.status == 401).all() and (req.error_class == "http_4xx").all()
    assert "Authorization header is missing or invalid" in req.error.iloc[0]
    assert _files_with(tmp_path, wrong.encode()) == []
    assert wrong not in p.stdout and wrong not in p.stderr


def test_a_header_naming_an_unset_variable_is_bad_input(secure, cert, tmp_path):
    env = harness_env(EMU_TOKEN=None)
    p, _ = _run(tmp_path, SCENARIO.format(protocol="tgi", url=secure, ca=cert[0]), env=env)
    assert p.returncode == 2
    assert "target.headers.Authorization" in p.stderr and "EMU_TOKEN" in p.stderr


def test_a_literal_credential_in_the_scenario_is_refused(tmp_path):
    from harness.scenario.loader import load_scenario

    path = tmp_path / "s.yaml"
    path.write_text("name: x\ntarget:\n  headers:\n    Authorization: Bearer abc123\n")
    with pytest.raises(InputError) as e:
        load_scenario(path)
    assert "s.yaml:3: target.headers" in str(e.value) and "Authorization" in str(e.value) and "${" in str(e.value)
    assert "abc123" not in str(e.value)


def test_client_401_without_token_and_tls_checks(secure, cert):
    spec = RequestSpec("hello", 2, 5)
    ok = StreamClient(protocol_for("tgi"), request_timeout_s=5, access=_access(cert)).send(secure, spec)
    assert ok.error_class is None and ok.output_tokens == 5, ok.error
    no = StreamClient(protocol_for("tgi"), request_timeout_s=5, access=_access(cert, None)).send(secure, spec)
    assert no.status == 401 and no.error_class == "http_4xx"
    # the system CA store does not know the test's certificate: refused, a clear reason
    r = StreamClient(protocol_for("tgi"), request_timeout_s=5,
                     access=Access.from_target(_target(), environ={"EMU_TOKEN": TOKEN})).send(secure, spec)
    assert r.error_class == "connect" and "CERTIFICATE_VERIFY_FAILED" in r.error.upper(), r.error
    # verify: false accepts it
    off = Access.from_target(_target(verify=False), environ={"EMU_TOKEN": TOKEN})
    r = StreamClient(protocol_for("tgi"), request_timeout_s=5, access=off).send(secure, spec)
    assert r.error_class is None and r.output_tokens == 5, r.error


def _target(**tls):
    from harness.scenario.models import Target

    return Target(headers={"Authorization": "Bearer ${EMU_TOKEN}"}, tls=tls)


def test_openai_client_agrees_with_the_harness_over_tls(secure, cert):
    """openai's own client, as the oracle, reads the same https stream (``data: {`` framing)."""
    import ssl

    import openai

    ctx = ssl.create_default_context(cafile=str(cert[0]))
    client = openai.OpenAI(base_url=secure + "/v1", api_key=TOKEN, max_retries=0,
                           http_client=openai.DefaultHttpx2Client(verify=ctx))
    stream = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hello there"}],
                                            max_tokens=9, stream=True, stream_options={"include_usage": True})
    chunks = [c for c in stream]
    content = [c for c in chunks if c.choices and c.choices[0].delta.content]
    usage = [c.usage for c in chunks if c.usage is not None][-1]
    reason = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason][-1]
    ours = StreamClient(protocol_for("openai-chat", "m"), request_timeout_s=5,
                        access=_access(cert)).send(secure + "/v1", RequestSpec("hello there", 2, 9))
    assert ours.error_class is None, ours.error
    assert ours.events == len(content) and ours.output_tokens == usage.completion_tokens == 9
    assert ours.input_tokens == usage.prompt_tokens and ours.finish_reason == reason


def test_a_path_prefix_is_kept(plain, tmp_path):
    proxy, base = prefix_proxy(plain, "/gw/llm")
    try:
        for proto in ("tgi", "openai-completions", "openai-chat"):
            r = StreamClient(protocol_for(proto), request_timeout_s=5).send(base + "/gw/llm/", RequestSpec("hi", 1, 4))
            assert r.error_class is None and r.output_tokens == 4, (proto, r.error)
        # an OpenAI client's base URL (ending in /v1) is not doubled
        r = StreamClient(protocol_for("openai-chat"), request_timeout_s=5).send(base + "/gw/llm/v1",
                                                                                  RequestSpec("hi", 1, 4))
        assert r.error_class is None, r.error
        seen = json.loads(subprocess.run(["curl", "-s", base + "/_seen"], capture_output=True, text=True).stdout)
        assert seen == ["/gw/llm/generate_stream", "/gw/llm/v1/completions", "/gw/llm/v1/chat/completions",
                        "/gw/llm/v1/chat/completions"]
        # the whole run: health check and load both under the prefix
        scen = SCENARIO.format(protocol="tgi", url=base + "/gw/llm", ca=tmp_path / "none.pem")
        scen = scen.replace('  tls: {ca_file: "' + str(tmp_path / "none.pem") + '"}\n', "")
        p, summary = _run(tmp_path, scen, env=harness_env(EMU_TOKEN="unused-by-this-server"))
        assert p.returncode == 0, p.stderr[-3000:]
        assert summary["cells"][0]["ok"] >= 8
    finally:
        stop(proxy)


def test_protocol_auto_asks_the_server(plain, secure, cert, tmp_path):
    assert detect(plain).protocol == "tgi"
    found = detect(secure, _access(cert))
    assert found.protocol == "tgi" and found.model
    proxy, base = prefix_proxy(plain, "/openai", "--hide-info")
    try:
        found = detect(base + "/openai")
        assert found.protocol == "openai-chat" and found.model == detect(plain).model
        # a run with --protocol auto against the OpenAI-only server
        scen = SCENARIO.format(protocol="tgi", url=base + "/openai", ca="x").replace('  tls: {ca_file: "x"}\n', "")
        p, summary = _run(tmp_path, scen, "--protocol", "auto", env=harness_env(EMU_TOKEN="unused"))
        assert p.returncode == 0, p.stderr[-3000:]
        import pandas as pd

        req = pd.read_parquet(next((tmp_path / "res").rglob("requests.parquet")))
        assert set(req.protocol) == {"openai-chat"}
        manifest = json.loads(next((tmp_path / "res").rglob("manifest.json")).read_text())
        assert manifest["protocol"] == "openai-chat" and manifest["model"] == found.model
    finally:
        stop(proxy)
    with pytest.raises(LaunchError, match="neither TGI nor OpenAI"):
        detect("http://127.0.0.1:9")   # nothing listens on the discard port


def test_replica_urls_are_checked():
    assert parse_url("https://h.example/v1/").path("/v1/chat/completions") == "/v1/chat/completions"
    assert parse_url("https://h.example/v1").host_header == "h.example"
    assert parse_url("http://h:8080/p/").path("/generate_stream") == "/p/generate_stream"
    for bad in ("ftp://h", "http://", "https://u:pw@h/x", "http://h/?q=1"):
        with pytest.raises(ValueError):
            parse_url(bad)
    with pytest.raises(ValueError) as e:
        parse_url("https://user:s3cretpw@h/x")
    assert "s3cretpw" not in str(e.value)


def test_a_server_echoing_the_token_in_its_error_is_redacted():
    """A 401 body that repeats the Authorization header: the record's error shows ***."""
    import socket
    import threading

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()

    def serve():
        conn, _ = srv.accept()
        head = b""
        while b"\r\n\r\n" not in head:
            head += conn.recv(65536)
        auth = [ln for ln in head.split(b"\r\n") if ln.lower().startswith(b"authorization:")][0]
        body = b'{"error":"bad credentials: ' + auth.split(b":", 1)[1].strip() + b'"}'
        conn.sendall(b"HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
                     b"connection: close\r\n\r\n%s" % (len(body), body))
        conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    from harness.scenario.models import Target

    access = Access.from_target(Target(headers={"Authorization": "Bearer ${EMU_TOKEN}"}), environ={"EMU_TOKEN": TOKEN})
    assert TOKEN not in repr(access)
    r = StreamClient(protocol_for("tgi"), request_timeout_s=5, access=access).send(
        f"http://127.0.0.1:{srv.getsockname()[1]}", RequestSpec("x", 1, 3))
    t.join(5)
    srv.close()
    assert r.status == 401 and "bad credentials: ***" in r.error and TOKEN not in r.error, r.error


@pytest.mark.parametrize("headers,needle", [
    ({"Bad Name": "x"}, "not a valid HTTP token"),
    ({"Host": "evil"}, "set by the harness"),
    ({"X-Api-Key": "literal"}, "carries a credential"),
    ({"X-Trace": "a\r\nInjected: 1"}, "one line"),
    ({"Authorization": "Bearer ${1BAD}"}, "not an environment variable name"),
])
def test_bad_headers_are_refused_with_their_name(headers, needle):
    from pydantic import ValidationError

    from harness.scenario.models import Target

    with pytest.raises(ValidationError, match=needle):
        Target(headers=headers)


def test_tls_settings_validate():
    from pydantic import ValidationError

    from harness.scenario.models import Target

    with pytest.raises(ValidationError):
        Target(tls={"ca_file": ""})
    with pytest.raises(ValidationError):
        Target(tls={"verify": "sometimes"})
    with pytest.raises(InputError, match="target.tls.ca_file"):
        Access.from_target(Target(tls={"ca_file": "/nonexistent/ca.pem"}))


def test_the_stack_master_waits_for_health_with_the_scenarios_token(secure, cert, tmp_path, monkeypatch):
    """The compose/Kubernetes master asks every replica's /health with the scenario's TLS settings
    and headers: a hosted endpoint behind a token is healthy, not 401 forever."""
    from harness.launch.master import _access, _wait_healthy

    path = tmp_path / "s.yaml"
    path.write_text(SCENARIO.format(protocol="tgi", url=secure, ca=cert[0]))
    monkeypatch.setenv("EMU_TOKEN", TOKEN)
    access = _access(["-f", "x.py", "--scenario", str(path), "--host", secure])
    assert access is not None and _wait_healthy([secure], 5, access)
    assert not _wait_healthy([secure], 1, None)   # 401 without the token (and no CA): never healthy
