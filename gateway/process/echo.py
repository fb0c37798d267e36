"""A small real upstream for the demo and the tests: echoes requests, streams bytes, sleeps."""

from __future__ import annotations

import asyncio
import hashlib
import ssl

from aiohttp import WSMsgType, web
from aiohttp.typedefs import Handler

CHUNK = 64 * 1024
SEEN = web.AppKey("seen", list[str])  # "METHOD raw-path" of every request, for the tests
# which echo answered (several run as one upstream's targets): its port, set once bound
INSTANCE = web.AppKey("instance", list[str])


@web.middleware
async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
    request.app[SEEN].append(f"{request.method} {request.raw_path}")
    return await handler(request)


async def echo(request: web.Request) -> web.Response:
    """JSON description of the request as received; the body is hashed while streaming."""
    digest = hashlib.sha256()
    size = 0
    async for chunk in request.content.iter_chunked(CHUNK):
        digest.update(chunk)
        size += len(chunk)
    return web.json_response(
        {
            "method": request.method,
            "path": request.raw_path.partition("?")[0],
            "query": request.raw_path.partition("?")[2],
            "headers": [[k, v] for k, v in request.headers.items()],
            "body_bytes": size,
            "body_sha256": digest.hexdigest(),
            "client": request.headers.get("X-Forwarded-Client-Cert"),
            "instance": request.app[INSTANCE][0] if request.app[INSTANCE] else None,
            "peer_cert": _peer_cert_subject(request),
        }
    )


def _peer_cert_subject(request: web.Request) -> str | None:
    """The subject CN of the client certificate the gateway presented (HTTPS echo only)."""
    ssl_obj = request.transport.get_extra_info("ssl_object") if request.transport else None
    cert = ssl_obj.getpeercert() if ssl_obj is not None else None
    if not cert:
        return None
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


async def websocket(request: web.Request) -> web.WebSocketResponse:
    """`/ws`: says who the client is, then echoes text and binary; `close:<code>` closes
    with that code; pings are answered."""
    ws = web.WebSocketResponse(protocols=("echo.v1",))
    await ws.prepare(request)
    # first, who the upstream thinks the client is
    await ws.send_json({"client": request.headers.get("X-Forwarded-Client-Cert")})
    async for msg in ws:
        if msg.type == WSMsgType.TEXT:
            if msg.data.startswith("close:"):
                await ws.close(code=int(msg.data[6:]), message=b"bye")
                break
            await ws.send_str(msg.data)
        elif msg.type == WSMsgType.BINARY:
            await ws.send_bytes(msg.data)
    if ws.close_code is not None:  # what the client's close said, as it arrived here
        request.app[SEEN].append(f"WS-CLOSE {ws.close_code}")
    return ws


async def stream_bytes(request: web.Request) -> web.StreamResponse:
    """`/bytes/N`: N bytes of a repeating pattern, streamed in chunks (no Content-Length)."""
    total = int(request.match_info["n"])
    resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    await resp.prepare(request)
    block = bytes(range(256)) * (CHUNK // 256)
    sent = 0
    while sent < total:
        piece = block[: min(CHUNK, total - sent)]
        await resp.write(piece)
        sent += len(piece)
    await resp.write_eof()
    return resp


async def slow(request: web.Request) -> web.Response:
    """`/slow?seconds=S`: answer after S seconds (default 5)."""
    await asyncio.sleep(float(request.query.get("seconds", "5")))
    return web.json_response({"slept": True})


def make_app() -> web.Application:
    app = web.Application(client_max_size=1024**3, middlewares=[record])
    app[SEEN] = []
    app[INSTANCE] = []
    app.router.add_route("*", "/bytes/{n:\\d+}", stream_bytes)
    app.router.add_route("*", "/slow", slow)
    app.router.add_get("/ws", websocket)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


async def start_echo(
    host: str = "127.0.0.1", port: int = 0, ssl_context: ssl.SSLContext | None = None
) -> tuple[web.AppRunner, int]:
    """Start the echo upstream (HTTPS with `ssl_context`); returns the runner and the port."""
    app = make_app()
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True, ssl_context=ssl_context)
    await site.start()
    bound = runner.addresses[0][1]
    app[INSTANCE].append(str(bound))
    return runner, bound
