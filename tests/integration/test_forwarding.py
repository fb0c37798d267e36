"""Forwarding: streaming both ways with bounded memory, upstream down (502), too slow (504)."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from tests.harness import (
    EchoServer,
    GatewayProcess,
    base_config,
    cert_args,
    free_port,
    request,
    running,
    sample,
    write_config,
)

MIB = 1024 * 1024
SIZE = 64 * MIB  # larger than 50 MB


@pytest.mark.process
def test_large_bodies_stream_without_memory_growth(tmp_path: Path, pki: Path) -> None:
    payload = tmp_path / "upload.bin"
    block = hashlib.sha256(b"seed").digest() * (MIB // 32)
    digest = hashlib.sha256()
    with payload.open("wb") as f:
        for _ in range(SIZE // MIB):
            f.write(block)
            digest.update(block)
    with EchoServer() as echo:
        path, port, admin = write_config(tmp_path, pki, echo.port)
        with GatewayProcess(path, admin) as gw:
            warm = subprocess.run(
                ["curl", "-sS", *cert_args(pki), f"https://localhost:{port}/warm", "-d", "x"],
                capture_output=True,
                timeout=30,
            )
            assert warm.returncode == 0
            baseline = gw.peak_rss_kib()
            # upload: chunked (no Content-Length), streamed through to the echo which hashes it
            up = subprocess.run(
                [
                    "curl",
                    "-sS",
                    *cert_args(pki),
                    "-H",
                    "Transfer-Encoding: chunked",
                    "-H",
                    "Expect:",
                    "--data-binary",
                    f"@{payload}",
                    f"https://localhost:{port}/upload",
                ],
                capture_output=True,
                timeout=120,
            )
            assert up.returncode == 0, up.stderr
            seen = json.loads(up.stdout)
            assert seen["body_bytes"] == SIZE and seen["body_sha256"] == digest.hexdigest()
            # download: the echo streams SIZE bytes, curl counts them
            down = subprocess.run(
                [
                    "curl",
                    "-sS",
                    *cert_args(pki),
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{size_download} %{http_code}",
                    f"https://localhost:{port}/bytes/{SIZE}",
                ],
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert down.stdout == f"{SIZE} 200", down.stderr
            growth_mib = (gw.peak_rss_kib() - baseline) / 1024
            print(f"peak RSS growth: {growth_mib:.1f} MiB for {SIZE // MIB} MiB each way")
            assert growth_mib < 24, (
                f"peak RSS grew {growth_mib:.1f} MiB for {SIZE // MIB} MiB each way"
            )


def _upstream_config(pki: Path, echo_port: int, url: str, read: str = "30s") -> dict:
    cfg = base_config(pki, echo_port)
    cfg["upstreams"] = [
        {"name": "echo", "url": f"http://127.0.0.1:{echo_port}", "timeouts": {"read": read}},
        {"name": "down", "url": url},
    ]
    cfg["routes"] = [
        {
            "name": "dead",
            "match": {"path_prefix": "/dead"},
            "upstream": "down",
            "policy": {"allow": "any"},
        },
        {"name": "all", "upstream": "echo", "policy": {"allow": "any"}},
    ]
    return cfg


def test_upstream_refusing_connections_is_502(pki: Path) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    with running(lambda p: _upstream_config(pki, p, closed), pki) as gw:
        r = request(gw.port, "/dead/x", pki)
        assert r.status == 502
        assert r.json() == {
            "error": "upstream_unavailable",
            "route": "dead",
            "request_id": r.headers["x-request-id"],
        }
        m = gw.metrics()
        assert (
            sample(
                m, "mtls_gateway_upstream_requests_total", upstream="down", outcome="connect_error"
            )
            == 1
        )
        assert sample(m, "mtls_gateway_requests_total", route="dead", method="GET", code="502") == 1


def test_slow_upstream_is_504(pki: Path) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    with running(lambda p: _upstream_config(pki, p, closed, read="300ms"), pki) as gw:
        r = request(gw.port, "/slow?seconds=2", pki)
        assert r.status == 504 and r.json()["error"] == "upstream_timeout"
        fast = request(gw.port, "/slow?seconds=0.01", pki)
        assert fast.status == 200
        m = gw.metrics()
        assert (
            sample(m, "mtls_gateway_upstream_requests_total", upstream="echo", outcome="timeout")
            == 1
        )
        assert sample(m, "mtls_gateway_upstream_requests_total", upstream="echo", outcome="ok") == 1


def test_upstream_base_path_and_status_pass_through(pki: Path) -> None:
    def cfg(p: int) -> dict:
        c = base_config(pki, p)
        c["upstreams"][0]["url"] = f"http://127.0.0.1:{p}/base/"
        return c

    with running(cfg, pki) as gw:
        r = request(
            gw.port, "/x/y?z=1", pki, method="PUT", body=b"hello", headers=[("X-Custom", "kept")]
        )
        body = r.json()
        assert r.status == 200 and body["path"] == "/base/x/y" and body["query"] == "z=1"
        assert body["method"] == "PUT" and body["body_bytes"] == 5
        assert ["X-Custom", "kept"] in body["headers"]


def test_upstream_dying_mid_body_truncates_the_response(pki: Path) -> None:
    """After the headers went out, an upstream reset must not look like a complete response."""
    import http.client
    import socket
    import threading

    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]

    def serve_once() -> None:
        conn, _ = srv.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        srv.close()

    t = threading.Thread(target=serve_once, daemon=True)
    t.start()
    with running(lambda p: _upstream_config(pki, p, f"http://127.0.0.1:{port}"), pki) as gw:
        with pytest.raises(
            (http.client.IncompleteRead, ConnectionError, http.client.RemoteDisconnected)
        ):
            request(gw.port, "/dead/x", pki)
        assert (
            sample(
                gw.metrics(),
                "mtls_gateway_upstream_requests_total",
                upstream="down",
                outcome="reset",
            )
            == 1
        )
        assert request(gw.port, "/still-serving", pki).status == 200
    t.join(5)
