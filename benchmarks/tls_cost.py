"""What TLS costs the stream reader per token, measured in memory on one core (no network).

Each token is one TLS record holding one HTTP chunk with one SSE event, as a server writes it;
the reader's parser (the Python in-place path, ``_Response.feed``) reads the same events either
as plaintext or through ``_TlsFeed`` (decryption in Python's ``ssl`` over memory buffers). The
difference is the CPU TLS adds per token on the generator. The C read pass is not involved:
plaintext streams on the C pass cost less still (``generator_fidelity.py`` measures whole runs).

    python benchmarks/tls_cost.py                 # TGI and OpenAI chat events, 200k tokens each
"""

from __future__ import annotations

import argparse
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.loadgen.stream import StreamResult, _Response, _TlsFeed  # noqa: E402
from harness.protocols import protocol_for  # noqa: E402

HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
EVENTS = {
    "tgi": b'data:{"index":%d,"token":{"id":7,"text":" the","logprob":-0.5,"special":false},'
           b'"generated_text":null,"details":null}\n\n',
    "openai-chat": b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m",'
                   b'"choices":[{"index":0,"delta":{"content":" the%d"},"logprobs":null,"finish_reason":null}]}\n\n',
}


class _Waiter:
    def set(self, v=None):
        pass


def _pair(tmp: Path):
    key, crt = tmp / "k.pem", tmp / "c.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(crt),
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    sctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    sctx.load_cert_chain(crt, key)
    cctx = ssl.create_default_context(cafile=str(crt))
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    cli = cctx.wrap_bio(c_in, c_out, server_hostname="127.0.0.1")
    srv = sctx.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):   # the handshake, both ends in memory
        for end in (cli, srv):
            try:
                end.do_handshake()
            except ssl.SSLWantReadError:
                pass
        if c_out.pending:
            s_in.write(c_out.read())
        if s_out.pending:
            c_in.write(s_out.read())
    return cli, c_in, srv, s_out


def measure(proto: str, n: int, tls: bool, tmp: Path) -> float:
    """CPU ns per token of the reader's handling of ``n`` token reads."""
    p = protocol_for(proto)
    ev = EVENTS[proto]
    reads = [b"%x\r\n%b\r\n" % (len(ev % k), ev % k) for k in range(1, n + 1)]
    resp = _Response(StreamResult("u", 0), p, _Waiter())
    resp.feed(HEAD, 1)
    resp._set_fast()
    sink = resp
    if tls:
        cli, c_in, srv, s_out = _pair(tmp)
        wire = []
        for r in reads:              # one record per chunk, as a server writes them
            srv.write(r)
            wire.append(s_out.read())
        reads = wire
        sink = _TlsFeed(resp, cli, c_in)
    feed = sink.feed
    t0 = time.thread_time_ns()
    for i, r in enumerate(reads):
        feed(r, 1000 * (i + 2))
    dt = time.thread_time_ns() - t0
    assert resp.tokens == n, (proto, tls, resp.tokens)
    return dt / n


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    print(f"# {ssl.OPENSSL_VERSION}; Python {sys.version.split()[0]}; best of {args.repeat}")
    print("| events | plaintext us/token | TLS us/token | TLS adds us/token |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as d:
        for proto in EVENTS:
            plain = min(measure(proto, args.tokens, False, Path(d)) for _ in range(args.repeat))
            tls = min(measure(proto, args.tokens, True, Path(d)) for _ in range(args.repeat))
            print(f"| {proto} | {plain / 1e3:.2f} | {tls / 1e3:.2f} | {(tls - plain) / 1e3:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
