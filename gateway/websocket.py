"""WebSocket proxying: after the route's policy allowed the upgrade, connect to a target and pass
frames both ways (text, binary, ping/pong, close codes) until either side closes."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
from aiohttp import WSMsgType, web
from multidict import CIMultiDict

from gateway.errors import UpstreamError
from gateway.proxy import NoHealthyTarget, Upstream

# the client's handshake headers: aiohttp's client writes its own
_HANDSHAKE = frozenset(
    {
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
    }
)


def is_upgrade(request: web.BaseRequest) -> bool:
    return request.headers.get("Upgrade", "").lower() == "websocket"


async def _pump(
    src: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
    dst: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
) -> tuple[int | None, str]:
    """Copy frames from `src` to `dst`; returns the close code and reason `src` sent, if any."""
    while True:
        msg = await src.receive()
        if msg.type == WSMsgType.TEXT:
            await dst.send_str(msg.data)
        elif msg.type == WSMsgType.BINARY:
            await dst.send_bytes(msg.data)
        elif msg.type == WSMsgType.PING:
            await dst.ping(msg.data)
        elif msg.type == WSMsgType.PONG:
            await dst.pong(msg.data)
        elif msg.type == WSMsgType.CLOSE:
            return int(msg.data), str(msg.extra or "")
        else:  # CLOSING, CLOSED, ERROR: the connection is gone
            return None, ""


async def proxy_websocket(
    request: web.BaseRequest,
    upstream: Upstream,
    path: str,
    query: str,
    headers: list[tuple[str, str]],
) -> web.WebSocketResponse:
    """Connect upstream first (so a failure is still a 502/503), then upgrade the client."""
    target = upstream.balancer.pick()
    if target is None:
        raise NoHealthyTarget(f"{upstream.name}: no healthy target", kind="no_target")
    send = CIMultiDict((k, v) for k, v in headers if k.lower() not in _HANDSHAKE)
    protocols = [
        p.strip()
        for v in request.headers.getall("Sec-WebSocket-Protocol", ())
        for p in v.split(",")
        if p.strip()
    ]
    url = target.url_for(path, query)
    timeouts = upstream.config.timeouts
    try:
        up = await target.session.ws_connect(
            url,
            headers=send,
            protocols=protocols,
            autoping=False,
            autoclose=False,
            server_hostname=upstream.config.tls.server_name,
            timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=timeouts.connect),
        )
    except aiohttp.WSServerHandshakeError as exc:
        upstream.count("bad_response")
        raise UpstreamError(
            f"{upstream.name}: upstream refused the WebSocket upgrade ({exc.status})",
            kind="websocket",
        ) from None
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        target.failed("websocket connect")
        upstream.count("connect_error")
        raise UpstreamError(f"{upstream.name}: cannot connect: {exc!r}", kind="connect") from None
    down = web.WebSocketResponse(
        protocols=(up.protocol,) if up.protocol else (), autoping=False, autoclose=False
    )
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(up.close)
        await down.prepare(request)
        loop = asyncio.get_running_loop()
        to_up = loop.create_task(_pump(down, up))
        to_down = loop.create_task(_pump(up, down))
        done, pending = await asyncio.wait({to_up, to_down}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        first = done.pop()
        code, reason = (
            first.result() if not first.cancelled() and first.exception() is None else (None, "")
        )
        other = up if first is to_up else down
        closer = down if first is to_up else up
        # pass the close code on to the side that did not close, and answer the one that did
        await other.close(code=code or aiohttp.WSCloseCode.GOING_AWAY, message=reason.encode())
        await closer.close(code=code or aiohttp.WSCloseCode.GOING_AWAY)
    upstream.count("ok")
    return down
