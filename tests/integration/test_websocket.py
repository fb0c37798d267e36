"""WebSockets through the gateway with aiohttp's client and a client certificate, against a real
WebSocket upstream: same policy as plain requests, identity headers on the upgrade, frames both
ways, ping/pong and close codes passed through."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.harness import (
    RunningGateway,
    base_config,
    client_context,
    free_port,
    running,
    sample,
)


@pytest.fixture(scope="module")
def gw(pki: Path) -> Iterator[RunningGateway]:
    def config(echo: int) -> dict[str, Any]:
        doc = base_config(pki, echo)
        doc["routes"] = [
            {"name": "ws", "match": {"path_prefix": "/ws"}, "upstream": "echo", "websocket": True,
             "policy": {"required_eku": ["clientAuth"], "allow": [{"san_uri": "spiffe://dev.local/client"}]},
             "forward_identity": ["xfcc"]},
            {"name": "no-ws", "match": {"path_prefix": "/nows"}, "upstream": "echo",
             "rewrite_prefix": "/ws", "policy": {"allow": "any"}},
        ]  # fmt: skip
        return doc

    with running(config, pki) as gateway:
        yield gateway


async def _session(ctx: ssl.SSLContext) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx))


async def _closed(sock: Any) -> None:
    """Wait (at most 2 s) until a closed WebSocket's TLS connection has finished its close_notify
    exchange and released its socket, so no socket outlives the test's event loop."""
    for _ in range(200):
        if sock.fileno() == -1:
            return
        await asyncio.sleep(0.01)


def test_frames_pings_and_close_codes_pass_through(gw: RunningGateway, pki: Path) -> None:
    async def scenario() -> list[Any]:
        out: list[Any] = []
        async with (
            await _session(client_context(pki)) as session,
            session.ws_connect(
                f"wss://localhost:{gw.port}/ws", protocols=["echo.v1"], autoping=False
            ) as ws,
        ):
            sock = ws.get_extra_info("socket")
            out.append(ws.protocol)
            out.append(await ws.receive_json(timeout=5))
            await ws.send_str("hello")
            out.append((await ws.receive(timeout=5)).data)
            await ws.send_bytes(b"\x00\x01binary")
            out.append((await ws.receive(timeout=5)).data)
            await ws.ping(b"are you there")
            msg = await ws.receive(timeout=5)
            out.append((msg.type, msg.data))
            await ws.send_str("close:4001")
            msg = await ws.receive(timeout=5)
            out.append((msg.type, msg.data, msg.extra))
        await _closed(sock)
        return out

    protocol, who, text, binary, pong, close = asyncio.run(scenario())
    assert protocol == "echo.v1"
    assert who["client"].endswith("URI=spiffe://dev.local/client")
    assert text == "hello" and binary == b"\x00\x01binary"
    assert pong == (aiohttp.WSMsgType.PONG, b"are you there")
    assert close == (aiohttp.WSMsgType.CLOSE, 4001, "bye")


def test_client_closing_reaches_the_upstream_with_its_code(gw: RunningGateway, pki: Path) -> None:
    async def scenario() -> int | None:
        async with await _session(client_context(pki)) as session:
            ws = await session.ws_connect(f"wss://localhost:{gw.port}/ws")
            sock = ws.get_extra_info("socket")
            await ws.receive_json(timeout=5)
            await ws.close(code=4100, message=b"done")
        await _closed(sock)
        return ws.close_code

    seen = len(gw.echo_seen)
    assert asyncio.run(scenario()) is not None  # the upstream answered the close
    deadline = time.monotonic() + 5
    while "WS-CLOSE 4100" not in gw.echo_seen[seen:] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "WS-CLOSE 4100" in gw.echo_seen[seen:]  # the client's code reached the upstream


@pytest.mark.parametrize(
    ("cert", "path", "status"),
    [
        ("client-intermediate", "/ws", 403),  # not on the allow list: denied before any upgrade
        # a route without websocket: true forwards a plain GET: the upstream refuses it
        ("client", "/nows", 400),
    ],
)
def test_upgrade_refused(gw: RunningGateway, pki: Path, cert: str, path: str, status: int) -> None:
    async def scenario() -> int:
        async with await _session(client_context(pki, cert)) as session:
            try:
                await session.ws_connect(f"wss://localhost:{gw.port}{path}")
            except aiohttp.WSServerHandshakeError as exc:
                return exc.status
        return 101

    assert asyncio.run(scenario()) == status


@pytest.mark.parametrize("path", ["/ws", "/nows"])
def test_an_upgrade_with_a_body_is_refused_not_tunnelled(
    gw: RunningGateway, pki: Path, path: str
) -> None:
    """The parser stops at an upgrade's head, so a body behind it would reach the upstream as
    tunnel bytes; on a route without `websocket: true` it must never open a tunnel at all."""
    import socket

    head = (
        f"POST {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        "Content-Length: 5\r\n\r\nhello"
    ).encode()
    with (
        socket.create_connection(("127.0.0.1", gw.port), timeout=10) as raw,
        client_context(pki).wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(head)
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 400 "), data[:200]
    assert b'"error": "bad_request"' in data
    assert b"101" not in data.split(b"\r\n", 1)[0]


def test_an_upgrade_is_retried_on_another_target_when_one_cannot_connect(pki: Path) -> None:
    """The upgrade is an exchange like any other: a target that refuses the connection is
    counted as such and the upgrade goes to the next one, so every client gets its tunnel."""
    dead = free_port()

    def config(echo: int) -> dict[str, Any]:
        doc = base_config(pki, echo)
        doc["upstreams"] = [
            {"name": "echo", "targets": [{"url": f"http://127.0.0.1:{dead}"},
                                         {"url": f"http://127.0.0.1:{echo}"}],
             "passive": {"consecutive_failures": 100}},
        ]  # fmt: skip
        doc["routes"] = [
            {"name": "ws", "upstream": "echo", "websocket": True, "policy": {"allow": "any"}}
        ]
        return doc

    async def scenario() -> list[Any]:
        out: list[Any] = []
        async with await _session(client_context(pki)) as session:
            for _ in range(4):  # round robin: the dead target comes up at least twice
                async with session.ws_connect(f"wss://localhost:{gw.port}/ws") as ws:
                    sock = ws.get_extra_info("socket")
                    out.append("client" in await ws.receive_json(timeout=5))
                await _closed(sock)
        return out

    with running(config, pki) as gw:
        assert asyncio.run(scenario()) == [True] * 4
        metrics = gw.metrics()
        up = "mtls_gateway_upstream_requests_total"
        assert sample(metrics, up, upstream="echo", outcome="connect_error") >= 2
        assert sample(metrics, up, upstream="echo", outcome="ok") == 4
