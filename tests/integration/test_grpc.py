"""A real grpcio client with the dev client certificate, through the gateway over HTTP/2: the
gateway's own refusals reach it as gRPC statuses (7, 14, 4) with a readable message, and are
counted with the HTTP status the gateway decided."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from aiohttp import web

from tests.h2client import H2Client
from tests.harness import EchoServer, base_config, free_port, running, sample


def _config(pki: Path, echo_port: int, slow_port: int) -> dict[str, Any]:
    cfg = base_config(pki, echo_port)
    cfg["upstreams"] += [
        {"name": "dead", "url": f"http://127.0.0.1:{free_port()}"},
        {"name": "slow", "url": f"http://127.0.0.1:{slow_port}", "timeouts": {"headers": "500ms"}},
        {"name": "patient", "url": f"http://127.0.0.1:{slow_port}"},  # the default timeouts
    ]
    cfg["routes"] = [
        {
            "name": "denied",
            "match": {"path_prefix": "/denied.Service"},
            "upstream": "echo",
            "policy": {"allow": [{"subject": {"CN": "nobody"}}]},
        },
        {"name": "dead", "match": {"path_prefix": "/dead.Service"}, "upstream": "dead",
         "policy": {"allow": "any"}},
        {"name": "slow", "match": {"path_prefix": "/slow.Service"}, "upstream": "slow",
         "policy": {"allow": "any"}},
        {"name": "patient", "match": {"path_prefix": "/patient.Service"}, "upstream": "patient",
         "policy": {"allow": "any"}},
    ]  # fmt: skip
    return cfg


def _slow_app() -> web.Application:
    async def sleep(request: web.Request) -> web.Response:
        await asyncio.sleep(3)
        return web.Response(body=b"")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", sleep)
    return app


def _call(port: int, pki: Path, method: str) -> grpc.RpcError:
    creds = grpc.ssl_channel_credentials(
        root_certificates=(pki / "ca.pem").read_bytes(),
        private_key=(pki / "client.key").read_bytes(),
        certificate_chain=(pki / "client.pem").read_bytes(),
    )
    with grpc.secure_channel(f"localhost:{port}", creds) as channel:
        call = channel.unary_unary(method)  # raw bytes both ways: no generated code needed
        with pytest.raises(grpc.RpcError) as failed:
            call(b"hello", timeout=10)
    return failed.value  # type: ignore[return-value]


def test_the_gateways_refusals_are_grpc_statuses(pki: Path) -> None:
    with (
        EchoServer() as echo,
        EchoServer(app=_slow_app()) as slow,
        running(lambda _: _config(pki, echo.port, slow.port), pki) as gw,
    ):
        denied = _call(gw.port, pki, "/denied.Service/Call")
        assert denied.code() == grpc.StatusCode.PERMISSION_DENIED, denied
        assert "client_cert_not_allowed" in (denied.details() or "")
        unreachable = _call(gw.port, pki, "/dead.Service/Call")
        assert unreachable.code() == grpc.StatusCode.UNAVAILABLE, unreachable
        late = _call(gw.port, pki, "/slow.Service/Call")
        assert late.code() == grpc.StatusCode.DEADLINE_EXCEEDED, late
        m = gw.metrics()
        assert (
            sample(m, "mtls_gateway_requests_total", route="denied", method="POST", code="403") == 1
        )
        assert (
            sample(m, "mtls_gateway_requests_total", route="slow", method="POST", code="504") == 1
        )


def test_grpc_timeout_bounds_the_exchange(pki: Path) -> None:
    """A call whose grpc-timeout is 300 ms gets DEADLINE_EXCEEDED from the gateway at 300 ms,
    not the upstream's answer 3 s later, though the route's own timeouts would wait (sent by a
    client that does not cancel on its own)."""
    with (
        EchoServer() as echo,
        EchoServer(app=_slow_app()) as slow,
        running(lambda _: _config(pki, echo.port, slow.port), pki) as gw,
        H2Client(gw.port, pki) as client,
    ):
        grpc_head = [
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            ("grpc-timeout", "300m"),
        ]
        started = time.monotonic()
        sid = client.headers("/patient.Service/Call", method="POST", extra=grpc_head, end=False)
        client.data(sid, b"\x00\x00\x00\x00\x00", end=True)  # an empty message
        ans = client.wait(sid, timeout=5)
        took = time.monotonic() - started
        assert ans.header("grpc-status") == "4", ans
        assert took < 2.0, took
        assert (
            sample(
                gw.metrics(),
                "mtls_gateway_requests_total",
                route="patient",
                method="POST",
                code="504",
            )
            == 1
        )


class GrpcEcho:
    """A real grpcio server in clear (h2c) on loopback: `Unary` answers the message with the
    client identity the gateway forwarded; `Chat` (bidirectional streaming) echoes each message
    as it arrives; `Fail` answers NOT_FOUND with a message, in trailers."""

    def __init__(self) -> None:
        from concurrent import futures

        def identity(context: Any) -> bytes:
            meta = dict(context.invocation_metadata())
            return str(meta.get("x-forwarded-client-cert", "")).encode()

        def unary(message: bytes, context: Any) -> bytes:
            context.set_trailing_metadata((("x-echo-trailer", "kept"),))
            return message + b" from " + identity(context)

        def chat(messages: Any, context: Any) -> Any:
            for message in messages:
                yield b"echo " + message

        def fail(message: bytes, context: Any) -> bytes:
            context.abort(grpc.StatusCode.NOT_FOUND, "no such thing: " + message.decode())

        handlers = {
            "Unary": grpc.unary_unary_rpc_method_handler(unary),
            "Chat": grpc.stream_stream_rpc_method_handler(chat),
            "Fail": grpc.unary_unary_rpc_method_handler(fail),
        }
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("echo.Echo", handlers),)
        )
        self.port = self.server.add_insecure_port("127.0.0.1:0")

    def __enter__(self) -> GrpcEcho:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop(grace=None)


def _channel(port: int, pki: Path) -> grpc.Channel:
    creds = grpc.ssl_channel_credentials(
        root_certificates=(pki / "ca.pem").read_bytes(),
        private_key=(pki / "client.key").read_bytes(),
        certificate_chain=(pki / "client.pem").read_bytes(),
    )
    return grpc.secure_channel(f"localhost:{port}", creds)


def _through(pki: Path, grpc_port: int, echo_port: int, **upstream: Any) -> dict[str, Any]:
    cfg = base_config(pki, echo_port)
    cfg["upstreams"].append(
        {"name": "grpc", "url": f"http://127.0.0.1:{grpc_port}", "protocol": "h2c", **upstream}
    )
    cfg["routes"] = [
        {"name": "grpc", "match": {"path_prefix": "/echo.Echo"}, "upstream": "grpc",
         "policy": {"allow": "any"}, "forward_identity": ["xfcc"]},
        {"name": "denied", "match": {"path_prefix": "/denied.Echo"}, "upstream": "grpc",
         "policy": {"allow": [{"subject": {"CN": "nobody"}}]}},
    ]  # fmt: skip
    return cfg


def test_unary_and_streaming_calls_reach_a_grpc_server_end_to_end(pki: Path) -> None:
    """A grpcio client with the dev client certificate, the gateway, a grpcio server over h2c:
    the unary call carries the client's identity to the server and the server's trailers back;
    in the bidirectional call each message is sent only after the echo of the one before came
    back, so neither direction can be buffered whole; the server's own failure status and
    message reach the client as they were."""
    import queue

    with (
        GrpcEcho() as server,
        running(lambda echo: _through(pki, server.port, echo), pki) as gw,
        _channel(gw.port, pki) as channel,
    ):
        reply, call = channel.unary_unary("/echo.Echo/Unary").with_call(b"hello", timeout=10)
        assert reply.startswith(b"hello from Hash="), reply
        assert b"URI=spiffe://dev.local/client" in reply
        assert ("x-echo-trailer", "kept") in call.trailing_metadata()
        # 3 MB each way: many times every flow-control window on the path
        big = bytes(range(256)) * (3_000_000 // 256)
        reply = channel.unary_unary("/echo.Echo/Unary")(big, timeout=20)
        assert reply[: len(big)] == big and reply[len(big) :].startswith(b" from Hash=")

        outbox: queue.Queue[bytes | None] = queue.Queue()

        def messages() -> Any:
            while (message := outbox.get(timeout=10)) is not None:
                yield message

        outbox.put(b"0")
        echoes = []
        for echo in channel.stream_stream("/echo.Echo/Chat")(messages(), timeout=10):
            echoes.append(echo)
            outbox.put(str(len(echoes)).encode() if len(echoes) < 5 else None)
        assert echoes == [b"echo 0", b"echo 1", b"echo 2", b"echo 3", b"echo 4"]

        with pytest.raises(grpc.RpcError) as failed:
            channel.unary_unary("/echo.Echo/Fail")(b"widget", timeout=10)
        assert failed.value.code() == grpc.StatusCode.NOT_FOUND
        assert failed.value.details() == "no such thing: widget"

        with pytest.raises(grpc.RpcError) as denied:
            channel.unary_unary("/denied.Echo/Unary")(b"hello", timeout=10)
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED

        m = gw.metrics()
        ok = sample(m, "mtls_gateway_upstream_requests_total", upstream="grpc", outcome="ok")
        assert ok == 4, ok
