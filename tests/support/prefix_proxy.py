"""A reverse proxy that serves an upstream under a path prefix, as a gateway does.

``python tests/support/prefix_proxy.py UPSTREAM PREFIX [--hide-info]`` prints ``PORT <n>`` once listening.
``PREFIX/anything`` is forwarded to ``UPSTREAM/anything`` with the response streamed back as it
comes (chunked); any path outside the prefix gets 404, and so does ``PREFIX/info`` with
``--hide-info`` (an OpenAI-only server), and ``PREFIX/metrics`` with ``--hide-metrics``. ``GET /_seen`` lists the paths requested so far.
"""

from __future__ import annotations

import argparse
import asyncio

import aiohttp
from aiohttp import web


def app(upstream: str, prefix: str, hide_info: bool, hide_metrics: bool = False) -> web.Application:
    seen: list[str] = []
    session: dict = {}

    async def start(_app):
        session["s"] = aiohttp.ClientSession(auto_decompress=False)

    async def stop(_app):
        await session["s"].close()

    async def seen_paths(request: web.Request) -> web.Response:
        return web.json_response(seen)

    async def forward(request: web.Request) -> web.StreamResponse:
        seen.append(request.path)
        if not request.path.startswith(prefix + "/") or (hide_info and request.path == prefix + "/info") \
                or (hide_metrics and request.path == prefix + "/metrics"):
            return web.Response(status=404, text="not found")
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        async with session["s"].request(request.method, upstream + request.path[len(prefix):], data=body,
                                        headers=headers) as up:
            out = web.StreamResponse(status=up.status)
            out.content_type = up.content_type
            await out.prepare(request)
            async for piece in up.content.iter_any():
                await out.write(piece)
            await out.write_eof()
            return out

    a = web.Application()
    a.on_startup.append(start)
    a.on_cleanup.append(stop)
    a.router.add_get("/_seen", seen_paths)
    a.router.add_route("*", "/{tail:.*}", forward)
    return a


async def main(args) -> None:
    runner = web.AppRunner(app(args.upstream.rstrip("/"), args.prefix.rstrip("/"), args.hide_info, args.hide_metrics))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print("PORT", site._server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("upstream")
    ap.add_argument("prefix")
    ap.add_argument("--hide-info", action="store_true")
    ap.add_argument("--hide-metrics", action="store_true")
    asyncio.run(main(ap.parse_args()))
