"""WebSocket proxying: once the route's policy allowed the upgrade, the upgrade request goes to
a target with the identity headers, and when the target answers 101 the two connections are
joined byte for byte (text, binary, ping/pong and close frames pass untouched, extensions too)
until either side closes."""

from __future__ import annotations

import asyncio
import ssl

from gateway.base.errors import NoHealthyTarget, UpstreamError, UpstreamTimeout
from gateway.downstream.h1writer import serialize_head
from gateway.downstream.http1 import Http1Connection
from gateway.downstream.messages import Hijacked, Request
from gateway.http.bytestream import expire
from gateway.request.proxy import Upstream
from gateway.upstream.connection import ConnectTimeout
from gateway.upstream.h1response import BadResponse, ResponseHead, ResponseReader


def is_upgrade(request: Request) -> bool:
    return request.upgrade and request.headers.get("Upgrade", "").lower() == "websocket"


class _Tunnel(asyncio.Protocol):
    """The connection to the target: its answer to the upgrade (read by the upstream client's
    core, with its head limits), then the client's peer."""

    def __init__(self) -> None:
        self._reader = ResponseReader(self)
        self._reader.expect(body=True, upgrade=True)
        self._head: ResponseHead | None = None
        self.answer: asyncio.Future[tuple[int, list[tuple[str, str]], bytes]] = (
            asyncio.get_running_loop().create_future()
        )
        self.transport: asyncio.Transport | None = None
        self._client: Http1Connection | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def response_head(self, head: ResponseHead) -> None:
        self._head = head
        if head.status != 101 and not self.answer.done():
            self.answer.set_result((head.status, head.fields, b""))

    def response_body(self, data: bytes) -> None:
        pass  # a refusal's body does not matter

    def response_end(self) -> None:
        pass

    def data_received(self, data: bytes) -> None:
        if self._client is not None:
            self._client.write(data)
            return
        if self.answer.done():
            return
        bad = self._reader.feed(data)
        if bad is not None:
            self.answer.set_exception(bad)
        elif self._reader.upgraded and self._head is not None:
            self.answer.set_result((101, self._head.fields, self._reader.tail))

    def join(self, client: Http1Connection, early: bytes) -> None:
        self._client = client
        if early:
            client.write(early)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.answer.done():
            self.answer.set_exception(ConnectionResetError("the upstream closed the connection"))
        if self._client is not None:
            self._client.close()

    def pause_writing(self) -> None:  # the target reads slowly: stop reading the client
        if self._client is not None:
            self._client.pause_reading()

    def resume_writing(self) -> None:
        if self._client is not None:
            self._client.resume_reading()


async def proxy_websocket(
    request: Request,
    upstream: Upstream,
    path: str,
    query: str,
    headers: list[tuple[str, str]],
) -> Hijacked:
    """Connect and upgrade upstream first (so a failure is still a 502/503/504), then join."""
    target = upstream.balancer.pick()
    if target is None:
        raise NoHealthyTarget(f"{upstream.name}: no healthy target", kind="no_target")
    timeouts = upstream.limits
    tunnel = _Tunnel()
    try:
        transport = await target.pool.open_tunnel(lambda: tunnel, timeouts.connect)
    except ssl.SSLError as exc:
        upstream.count("tls_error")
        raise UpstreamError(f"{upstream.name}: TLS: {exc}", kind="tls") from None
    except (OSError, ConnectTimeout) as exc:
        target.failed("websocket connect")
        upstream.count("connect_error")
        raise UpstreamError(f"{upstream.name}: cannot connect: {exc!r}", kind="connect") from None
    target_path = target.base_path + path + (f"?{query}" if query else "")
    lines = "".join(f"{k}: {v}\r\n" for k, v in headers)
    transport.write(
        f"GET {target_path} HTTP/1.1\r\n{lines}Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n".encode(
            "utf-8", "surrogateescape"
        )
    )
    timer = asyncio.get_running_loop().call_later(timeouts.headers, expire, tunnel.answer)
    try:
        status, answer_headers, early = await tunnel.answer
    except TimeoutError:
        transport.abort()
        upstream.count("timeout")
        raise UpstreamTimeout(
            f"{upstream.name}: no answer to the WebSocket upgrade in time", kind="headers"
        ) from None
    except (OSError, BadResponse) as exc:
        transport.abort()
        upstream.count("bad_response")
        raise UpstreamError(
            f"{upstream.name}: WebSocket upgrade failed: {exc}", kind="websocket"
        ) from None
    finally:
        timer.cancel()
    if status != 101:
        transport.abort()
        upstream.count("bad_response")
        raise UpstreamError(
            f"{upstream.name}: upstream refused the WebSocket upgrade ({status})",
            kind="websocket",
        )
    client = request.protocol
    if not isinstance(client, Http1Connection):  # is_upgrade holds for HTTP/1.1 requests only
        raise TypeError("a WebSocket upgrade on a connection that is not HTTP/1.1")
    client.write(serialize_head(101, "Switching Protocols", answer_headers))
    tunnel.join(client, early)
    client.hijack(transport)
    upstream.count("ok")
    return Hijacked()
