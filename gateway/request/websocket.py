"""WebSocket proxying: once the route's policy allowed the upgrade, the upgrade request is an
exchange like any other (`exchange.Exchange` with `upgrade` set: a fresh upstream connection,
retried on another target when it cannot connect, the upstream's answer read by the same core
and limits). An answer other than 101 is passed on as it is; a 101 is passed on and the two
connections are joined byte for byte (text, binary, ping/pong and close frames pass untouched,
extensions too) until either side closes, which ends the exchange."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from gateway.downstream.h1writer import serialize_head
from gateway.downstream.http1 import Http1Connection
from gateway.downstream.messages import Hijacked, Request
from gateway.upstream.connection import UpstreamResponse

if TYPE_CHECKING:
    from gateway.request.exchange import Exchange


def is_upgrade(request: Request) -> bool:
    return request.upgrade and request.headers.get("Upgrade", "").lower() == "websocket"


class _Tunnel(asyncio.Protocol):
    """The upstream end of a tunnel: its bytes go to the client, its end ends the exchange."""

    def __init__(self, client: Http1Connection, ex: Exchange) -> None:
        self._client = client
        self._ex = ex
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._client.write(data)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._client.close()
        self._ex.tunnel_closed()

    def pause_writing(self) -> None:  # the target reads slowly: stop reading the client
        self._client.pause_reading()

    def resume_writing(self) -> None:
        self._client.resume_reading()


def join(ex: Exchange, answer: UpstreamResponse) -> Hijacked:
    """The upstream's 101 to `ex`: passed on, then the client's connection and the upstream's
    joined."""
    client = ex.request.protocol
    if not isinstance(client, Http1Connection):  # is_upgrade holds for HTTP/1.1 requests only
        raise TypeError("a WebSocket upgrade on a connection that is not HTTP/1.1")
    tunnel = _Tunnel(client, ex)
    early = ex.tunnel(answer, tunnel)
    client.write(serialize_head(101, "Switching Protocols", answer.headers))
    if early:
        client.write(early)
    assert tunnel.transport is not None
    client.hijack(tunnel.transport)
    return Hijacked()
