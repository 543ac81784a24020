"""A small streaming server for the load generator's tests: TGI and OpenAI SSE, with faults.

Runs as its own process (``python tests/support/loadgen_fakes.py --ttft-ms 20 --itl-ms 5``) and prints
``PORT <n>`` when listening. A request whose prompt contains ``fault=NAME`` misbehaves:
``http429``, ``http500``, ``http422``, ``sse_error``, ``malformed``, ``incomplete``, ``reset``,
``hang`` (never answers), ``multi`` (OpenAI: 3 tokens per chunk, usage exact).
``GET /sent`` answers the last finished stream's token send times: ``[before, after]`` its write
per token event (``CLOCK_MONOTONIC`` ns, the client's ``perf_counter_ns`` scale on Linux), so a
test can hold client stamps to when the tokens really left, however late a loaded machine sent them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class Server:
    def __init__(self, ttft_s: float, itl_s: float):
        self.ttft_s = ttft_s
        self.itl_s = itl_s
        self.sent: list[list[int]] = []     # the last finished stream's [before, after] per token

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                hdrs = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
                body = await reader.readexactly(int(hdrs.get("content-length", "0")))
                if method == "GET":
                    out = json.dumps(self.sent).encode() if path == "/sent" else b"ok"
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(out), out))
                    await writer.drain()
                    continue
                if not await self.generate(path, json.loads(body), writer):
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def error(self, writer, status: int, reason: str, msg: str, kind: str) -> None:
        body = json.dumps({"error": msg, "error_type": kind}).encode()
        writer.write(b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                     % (status, reason.encode(), len(body), body))
        await writer.drain()

    async def generate(self, path: str, req: dict, writer) -> bool:
        if path.endswith("/generate_stream"):
            prompt = req["inputs"]
            n = req["parameters"]["max_new_tokens"]
        elif path.endswith("/chat/completions"):
            prompt = req["messages"][-1]["content"]
            n = req["max_tokens"]
        else:
            prompt = req["prompt"]
            n = req["max_tokens"]
        m = re.search(r"fault=(\w+)", prompt)
        fault = m.group(1) if m else None
        if fault == "http429":
            await self.error(writer, 429, "Too Many Requests", "Model is overloaded", "overloaded")
            return True
        if fault == "http500":
            await self.error(writer, 500, "Internal Server Error", "CUDA out of memory", "generation")
            return True
        if fault == "http422":
            await self.error(writer, 422, "Unprocessable Entity", "inputs too long", "validation")
            return True
        if fault == "hang":
            await asyncio.sleep(3600)
            return False
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                     b"Transfer-Encoding: chunked\r\nCache-Control: no-cache\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(self.ttft_s)
        tgi = path.endswith("/generate_stream")
        chat = path.endswith("/chat/completions")
        step = 3 if fault == "multi" else 1
        sent = []
        i = 0
        while i < n:
            k = min(step, n - i)
            last = i + k >= n
            if fault == "sse_error" and i == 2:
                writer.write(_chunk(b'data:{"error":"Request failed during generation","error_type":"generation"}\n\n'))
                writer.write(b"0\r\n\r\n")
                await writer.drain()
                return True
            if fault == "malformed" and i == 2:
                writer.write(_chunk(b"data:{not json\n\n"))
                writer.write(b"0\r\n\r\n")
                await writer.drain()
                return True
            if fault == "incomplete" and i == 3:
                writer.write(b"0\r\n\r\n")
                await writer.drain()
                return True
            if fault == "reset" and i == 3:
                writer.transport.abort()
                return False
            if tgi:
                ev = {"index": i, "token": {"id": 100 + i, "text": " w", "logprob": -0.1, "special": False},
                      "generated_text": " w" * n if last else None,
                      "details": {"finish_reason": "length", "generated_tokens": n, "seed": None} if last else None,
                      "top_tokens": None}
            else:
                text = " w" * k
                choice = ({"index": 0, "delta": {"content": text}, "finish_reason": "length" if last else None}
                          if chat else {"index": 0, "text": text, "finish_reason": "length" if last else None})
                ev = {"id": "x", "object": "chunk", "choices": [choice]}
            # compact, as TGI (serde_json) and the emulator write it: the reader's in-place path
            before = time.perf_counter_ns()
            writer.write(_chunk(b"data:" + json.dumps(ev, separators=(",", ":")).encode() + b"\n\n"))
            if last and not tgi:
                usage = {"id": "x", "choices": [], "usage": {"prompt_tokens": len(prompt.split()),
                                                              "completion_tokens": n}}
                writer.write(_chunk(b"data: " + json.dumps(usage).encode() + b"\n\n"))
                writer.write(_chunk(b"data: [DONE]\n\n"))
            await writer.drain()
            sent.append([before, time.perf_counter_ns()])
            i += k
            if not last:
                await asyncio.sleep(self.itl_s)
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        self.sent = sent
        return True


async def main_async(args) -> None:
    srv = Server(args.ttft_ms / 1000, args.itl_ms / 1000)
    server = await asyncio.start_server(srv.handle, "127.0.0.1", args.port)
    print("PORT", server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--ttft-ms", type=float, default=20)
    ap.add_argument("--itl-ms", type=float, default=5)
    asyncio.run(main_async(ap.parse_args()))


# ------------------------------------------------------------------------------------------------
# test helper: start the server above as a child process and stop it by PID
# ------------------------------------------------------------------------------------------------
import contextlib  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402


@contextlib.contextmanager
def fake_server(ttft_ms: float = 20, itl_ms: float = 5):
    """Yield the base URL of a fresh fake server on a free loopback port."""
    from tests.support.processes import start_port_printer, stop

    proc, url = start_port_printer(sys.executable, str(Path(__file__).resolve()), "--ttft-ms", str(ttft_ms),
                                   "--itl-ms", str(itl_ms))
    try:
        yield url
    finally:
        stop(proc, timeout=5)


def window_tokens(req, ws: int, we: int) -> float:
    """Tokens of ``req`` (records) that arrived in [ws, we), spread evenly first..last token."""
    total = 0.0
    for first, end, n in zip(req.first_token_ns, req.end_ns, req.output_tokens):
        if first != first or not n:   # NaN: no token
            continue
        first, end = int(first), int(end)
        total += 1.0 if ws <= first < we else 0.0
        if n > 1 and end > first:
            lo, hi = max(first, ws), min(end, we)
            if hi > lo:
                total += (n - 1) * (hi - lo) / (end - first)
    return total
