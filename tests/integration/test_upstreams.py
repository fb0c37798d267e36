"""Upstream traffic against real upstream servers: several targets and balancing, passive and
active health, 503 when nothing is healthy, retries where safe, each timeout, path rewriting
and request ids."""

from __future__ import annotations

import collections
import http.client
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.harness import (
    EchoServer,
    RunningGateway,
    base_config,
    client_context,
    free_port,
    request,
    running,
    sample,
)

UP = "mtls_gateway_upstream_requests_total"


@contextmanager
def echoes(n: int) -> Iterator[list[EchoServer]]:
    with ExitStack() as stack:
        yield [stack.enter_context(EchoServer()) for _ in range(n)]


def _gateway(pki: Path, upstream: dict[str, Any], **route: Any) -> Any:
    def config(echo: int) -> dict[str, Any]:
        doc = base_config(pki, echo)
        doc["upstreams"] = [{"name": "svc", **upstream}]
        doc["routes"] = [{"name": "all", "upstream": "svc", "policy": {"allow": "any"}, **route}]
        return doc

    return running(config, pki)


def _instances(gw: RunningGateway, pki: Path, n: int, path: str = "/x") -> collections.Counter[str]:
    seen: collections.Counter[str] = collections.Counter()
    for _ in range(n):
        reply = request(gw.port, path, pki)
        assert reply.status == 200, reply.body
        seen[reply.json()["instance"]] += 1
    return seen


def test_weighted_round_robin_spreads_by_weight(pki: Path) -> None:
    with echoes(3) as (a, b, c):
        targets = [
            f"http://127.0.0.1:{a.port}",
            f"http://127.0.0.1:{b.port}",
            {"url": f"http://127.0.0.1:{c.port}", "weight": 2},
        ]
        with _gateway(pki, {"targets": targets}) as gw:
            seen = _instances(gw, pki, 40)
    assert seen == {str(a.port): 10, str(b.port): 10, str(c.port): 20}


def _slow_app() -> web.Application:
    async def slow(request: web.Request) -> web.Response:
        await asyncio_sleep(float(request.query.get("s", "0")))
        return web.json_response({"instance": "slow"})

    app = web.Application()
    app.router.add_get("/{tail:.*}", slow)
    return app


async def asyncio_sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


def test_least_request_avoids_the_busy_target(pki: Path) -> None:
    with echoes(1) as (fast,), EchoServer(app=_slow_app()) as slow:
        targets = [f"http://127.0.0.1:{slow.port}", f"http://127.0.0.1:{fast.port}"]
        with _gateway(pki, {"targets": targets, "balance": "least_request"}) as gw:
            # two slow requests: one of them lands on the slow target and stays in flight
            busy = [
                threading.Thread(target=request, args=(gw.port, "/x?s=2", pki)) for _ in range(2)
            ]
            for t in busy:
                t.start()
            time.sleep(0.3)
            seen = _instances(gw, pki, 6)
            for t in busy:
                t.join(10)
    assert seen == {str(fast.port): 6}  # never the target with a request in flight


def test_dead_target_is_retried_elsewhere_then_ejected(pki: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with echoes(2) as (a, b):
        upstream = {
            "targets": [dead, f"http://127.0.0.1:{a.port}", f"http://127.0.0.1:{b.port}"],
            "passive": {"consecutive_failures": 2, "base_ejection": "30s"},
        }
        with _gateway(pki, upstream) as gw:
            seen = _instances(gw, pki, 30)  # every request succeeds
            m = gw.metrics()
            assert sample(m, UP, upstream="svc", outcome="connect_error") == 2
            assert sample(m, UP, upstream="svc", outcome="retry") == 2
            assert (
                sample(m, "mtls_gateway_upstream_target_healthy", upstream="svc", target=dead) == 0
            )
            assert (
                sample(
                    m,
                    "mtls_gateway_upstream_target_healthy",
                    upstream="svc",
                    target=f"http://127.0.0.1:{a.port}",
                )
                == 1
            )
    assert set(seen) == {str(a.port), str(b.port)}


class Switch:
    """An upstream whose /healthz the test turns on and off."""

    def __init__(self) -> None:
        self.healthy = True
        self.app = web.Application()
        self.app.router.add_get("/healthz", self._health)
        self.app.router.add_get("/{tail:.*}", self._serve)

    async def _health(self, _r: web.Request) -> web.Response:
        return web.Response(status=200 if self.healthy else 503)

    async def _serve(self, _r: web.Request) -> web.Response:
        return web.json_response({"instance": "switch"})


def test_active_health_checks_take_a_target_out_and_back(pki: Path) -> None:
    switch = Switch()
    with echoes(1) as (steady,), EchoServer(app=switch.app) as flappy:
        upstream = {
            "targets": [f"http://127.0.0.1:{flappy.port}", f"http://127.0.0.1:{steady.port}"],
            "health": {
                "path": "/healthz",
                "interval": "100ms",
                "timeout": "1s",
                "healthy_threshold": 2,
                "unhealthy_threshold": 2,
            },
        }
        with _gateway(pki, upstream) as gw:
            assert set(_instances(gw, pki, 4)) == {"switch", str(steady.port)}
            switch.healthy = False
            time.sleep(0.6)
            assert set(_instances(gw, pki, 6)) == {str(steady.port)}
            gauge = sample(
                gw.metrics(),
                "mtls_gateway_upstream_target_healthy",
                upstream="svc",
                target=f"http://127.0.0.1:{flappy.port}",
            )
            assert gauge == 0
            switch.healthy = True
            time.sleep(0.6)
            assert "switch" in _instances(gw, pki, 6)


def test_no_healthy_target_is_a_fast_503_and_readiness_follows(pki: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"

    def config(echo: int) -> dict[str, Any]:
        doc = base_config(pki, echo)
        doc["upstreams"] = [
            {
                "name": "svc",
                "url": dead,
                "passive": {"consecutive_failures": 1, "base_ejection": "60s"},
                "retries": {"attempts": 0},
            }
        ]
        doc["routes"] = [{"name": "all", "upstream": "svc", "policy": {"allow": "any"}}]
        doc["admin"]["ready_requires_upstreams"] = True
        return doc

    import urllib.error
    import urllib.request

    def readyz(gw: RunningGateway) -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{gw.admin_port}/readyz", timeout=2) as r:
                return r.status
        except urllib.error.HTTPError as err:
            return err.code

    with running(config, pki) as gw:
        assert readyz(gw) == 200
        assert request(gw.port, "/x", pki).status == 502  # tried, refused, ejected
        started = time.perf_counter()
        reply = request(gw.port, "/x", pki)
        assert reply.status == 503 and reply.json()["error"] == "upstream_unavailable"
        assert time.perf_counter() - started < 0.5
        assert readyz(gw) == 503


class Resetter:
    """Accepts and closes every connection at once: a reset before any response byte."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.hits = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.hits += 1
            conn.recv(65536)
            conn.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
            conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize(
    ("method", "body", "retried"),
    [
        ("GET", None, True),
        ("PUT", b"small and buffered", True),
        ("POST", b"not idempotent", False),
        ("PUT", b"x" * (200 * 1024), False),  # too large to buffer: streamed, never replayed
    ],
)
def test_reset_before_the_response_is_retried_only_when_safe(
    pki: Path, method: str, body: bytes | None, retried: bool
) -> None:
    resetter = Resetter()
    try:
        with echoes(1) as (good,):
            upstream = {
                "targets": [f"http://127.0.0.1:{resetter.port}", f"http://127.0.0.1:{good.port}"],
                "passive": {"consecutive_failures": 100},
            }
            with _gateway(pki, upstream) as gw:
                statuses = [
                    request(gw.port, "/r", pki, method=method, body=body).status for _ in range(4)
                ]
                m = gw.metrics()
    finally:
        resetter.close()
    assert resetter.hits >= 1
    if retried:
        assert statuses == [200] * 4
        # round robin sends every other request to the resetter first; each is retried once
        # on the good target (aiohttp may also repeat an idempotent request on its own)
        assert sample(m, UP, upstream="svc", outcome="retry") == 2
    else:
        assert 502 in statuses and 200 in statuses
        assert sample(m, UP, upstream="svc", outcome="retry") == 0


def _stall_app() -> web.Application:
    """/headers-late: waits before the headers; /stall-body: sends part of a body, then waits."""

    async def headers_late(_r: web.Request) -> web.Response:
        await asyncio_sleep(3)
        return web.json_response({})

    async def stall_body(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Length": "100"})
        await resp.prepare(request)
        await resp.write(b"x" * 10)
        await asyncio_sleep(3)
        return resp

    async def drip(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        for _ in range(30):
            await resp.write(b"x")
            await asyncio_sleep(0.1)
        return resp

    app = web.Application()
    app.router.add_get("/headers-late", headers_late)
    app.router.add_get("/stall-body", stall_body)
    app.router.add_get("/drip", drip)
    return app


def test_each_timeout_maps_to_504_or_a_cut_with_its_kind(
    pki: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway")
    with EchoServer(app=_stall_app()) as stall:
        upstream = {
            "url": f"http://127.0.0.1:{stall.port}",
            "timeouts": {"headers": "300ms", "idle": "300ms"},
            "retries": {"attempts": 0},
        }

        def config(echo: int) -> dict[str, Any]:
            doc = base_config(pki, echo)
            doc["upstreams"] = [{"name": "svc", **upstream}]
            doc["routes"] = [
                {
                    "name": "total",
                    "match": {"path_prefix": "/drip"},
                    "upstream": "svc",
                    "policy": {"allow": "any"},
                    "timeouts": {"total": "1s", "idle": "2s"},
                },
                {"name": "all", "upstream": "svc", "policy": {"allow": "any"}},
            ]
            doc["logging"]["level"] = "info"
            return doc

        with running(config, pki) as gw:
            started = time.perf_counter()
            reply = request(gw.port, "/headers-late", pki)
            assert reply.status == 504 and reply.json()["error"] == "upstream_timeout"
            assert time.perf_counter() - started < 2
            cut = (OSError, http.client.HTTPException)
            with pytest.raises(cut):  # headers went out: the connection is cut, not completed
                request(gw.port, "/stall-body", pki)
            started = time.perf_counter()
            with pytest.raises(cut):
                request(gw.port, "/drip", pki)
            assert 0.8 < time.perf_counter() - started < 2.5
            assert sample(gw.metrics(), UP, upstream="svc", outcome="timeout") == 3
    kinds = [
        getattr(r, "event", {}).get("kind")
        for r in caplog.records
        if r.getMessage() in ("upstream error", "upstream failed mid-response")
    ]
    assert kinds == ["headers", "idle", "total"]


def test_path_rewriting(pki: Path) -> None:
    def config(echo: int) -> dict[str, Any]:
        doc = base_config(pki, echo)
        doc["routes"] = [
            {
                "name": "strip",
                "match": {"path_prefix": "/api"},
                "upstream": "echo",
                "policy": {"allow": "any"},
                "strip_prefix": True,
            },
            {
                "name": "rewrite",
                "match": {"path_prefix": "/v1/orders"},
                "upstream": "echo",
                "policy": {"allow": "any"},
                "rewrite_prefix": "/internal/v2/orders",
            },
            {"name": "all", "upstream": "echo", "policy": {"allow": "any"}},
        ]
        return doc

    with running(config, pki) as gw:
        for path, upstream_path in [
            ("/api/users/7?x=1", "/users/7"),
            ("/api", "/"),
            ("/api/../api/a%20b", "/a%20b"),
            ("/v1/orders/9", "/internal/v2/orders/9"),
            ("/v1/orders", "/internal/v2/orders"),
            ("/other", "/other"),
        ]:
            reply = request(gw.port, path, pki)
            assert reply.status == 200 and reply.json()["path"] == upstream_path, path


@pytest.mark.parametrize(
    ("trusted", "kept"), [(["127.0.0.1/32"], True), ([], False), (["10.0.0.0/8"], False)]
)
def test_request_ids_from_trusted_sources_only(pki: Path, trusted: list[str], kept: bool) -> None:
    def config(echo: int) -> dict[str, Any]:
        doc = base_config(pki, echo)
        doc["request_id"] = {"trust_from": trusted}
        return doc

    with running(config, pki) as gw:
        reply = request(gw.port, "/id", pki, headers=[("X-Request-Id", "trace-abc.123")])
        sent = dict((k.lower(), v) for k, v in reply.upstream_headers())["x-request-id"]
        assert (sent == "trace-abc.123") == kept
        assert reply.headers["x-request-id"] == sent
        odd = request(gw.port, "/id", pki, headers=[("X-Request-Id", "bad id with spaces")])
        assert (
            dict((k.lower(), v) for k, v in odd.upstream_headers())["x-request-id"]
            != "bad id with spaces"
        )
        denied = request(
            gw.port, "/id", pki, headers=[("X-Request-Id", "trace-xyz")], method="BREW"
        )
        assert json.loads(denied.body)["request_id"] == denied.headers["x-request-id"]


def test_connect_timeout_is_504_with_kind_connect(
    pki: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A listener whose backlog is full: SYNs are dropped, connect hangs (all on loopback)."""
    caplog.set_level(logging.INFO, logger="gateway")
    blackhole = socket.socket()
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(0)
    port = blackhole.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port))  # takes the only backlog slot
    try:
        upstream = {
            "url": f"http://127.0.0.1:{port}",
            "timeouts": {"connect": "300ms"},
            "retries": {"attempts": 0},
        }
        with _gateway(pki, upstream) as gw:
            started = time.perf_counter()
            reply = request(gw.port, "/x", pki)
            took = time.perf_counter() - started
            assert reply.status == 504 and reply.json()["error"] == "upstream_timeout"
            assert took < 1.5
            assert sample(gw.metrics(), UP, upstream="svc", outcome="timeout") == 1
    finally:
        filler.close()
        blackhole.close()
    kinds = [
        getattr(r, "event", {}).get("kind")
        for r in caplog.records
        if r.getMessage() == "upstream error"
    ]
    assert kinds == ["connect"]


@pytest.mark.parametrize(
    "fault",
    ["malformed chunk", "client gone mid-upload", "body over the route's limit"],
)
def test_a_clients_failing_upload_is_the_clients_fault_not_the_upstreams(
    pki: Path, fault: str
) -> None:
    """A client whose streamed body fails never counts against the upstream: no reset in
    upstream_requests_total, no passive ejection of a healthy target, and another client is
    served throughout; the client itself gets its 4xx where it is still there to read it."""
    with echoes(1) as (good,):
        upstream = {"url": f"http://127.0.0.1:{good.port}", "passive": {"consecutive_failures": 2}}
        with _gateway(pki, upstream, max_request_body="64KiB") as gw:
            for _ in range(4):  # more than enough failures to eject the target, were they counted
                with (
                    socket.create_connection(("127.0.0.1", gw.port)) as raw,
                    client_context(pki).wrap_socket(raw, server_hostname="localhost") as tls,
                ):
                    tls.settimeout(5)
                    tls.sendall(
                        b"POST /up HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
                        b"5\r\nhello\r\n"
                    )
                    time.sleep(0.1)  # the head went upstream, the body streams
                    if fault == "malformed chunk":
                        tls.sendall(b"zz\r\nnot a chunk\r\n")
                    elif fault == "body over the route's limit":
                        tls.sendall(b"10000\r\n" + b"x" * 0x10000 + b"\r\n" * 2)
                    if fault != "client gone mid-upload":
                        answer = tls.recv(65536)
                        assert answer.split(b" ", 2)[1] in (b"400", b"413"), answer[:200]
                time.sleep(0.1)
                assert request(gw.port, "/other-client", pki).status == 200
            m = gw.metrics()
            assert sample(m, UP, upstream="svc", outcome="reset") == 0
            assert sample(m, UP, upstream="svc", outcome="bad_response") == 0
            assert sample(m, "mtls_gateway_upstream_target_healthy", upstream="svc",
                          target=f"http://127.0.0.1:{good.port}") == 1  # fmt: skip
