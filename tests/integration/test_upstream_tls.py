"""TLS to the upstream against real HTTPS echo servers: verified against the configured CA with
the right name, the gateway's own client certificate for mTLS, and every failure a 502 with a
precise reason and `outcome="tls_error"`."""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from gateway.pki import devcerts
from tests.harness import EchoServer, base_config, dev_root, free_port, request, running, sample

UP = "mtls_gateway_upstream_requests_total"


def _server_ctx(cert: Path, key: Path, client_ca: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    if client_ca is not None:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cafile=str(client_ca))
    return ctx


def _config(pki: Path, port: int, **tls: Any) -> Any:
    def config(echo: int) -> dict[str, Any]:
        doc = base_config(pki, echo)
        doc["upstreams"] = [
            {
                "name": "secure",
                "url": f"https://127.0.0.1:{port}",
                "tls": tls,
                "retries": {"attempts": 0},
            }
        ]
        doc["routes"] = [{"name": "all", "upstream": "secure", "policy": {"allow": "any"}}]
        return doc

    return config


def test_verified_upstream(pki: Path) -> None:
    ctx = _server_ctx(pki / "server.pem", pki / "server.key")
    with EchoServer(ctx) as up, running(_config(pki, up.port, ca=[str(pki / "ca.pem")]), pki) as gw:
        reply = request(gw.port, "/over-tls", pki)
        assert reply.status == 200 and reply.json()["path"] == "/over-tls"
        assert reply.json()["peer_cert"] is None  # no client certificate was asked for
        assert sample(gw.metrics(), UP, upstream="secure", outcome="ok") == 1


def test_mtls_all_the_way_to_the_service(pki: Path) -> None:
    ctx = _server_ctx(pki / "server.pem", pki / "server.key", client_ca=pki / "ca.pem")
    with EchoServer(ctx) as up:
        tls = {
            "ca": [str(pki / "ca.pem")],
            "client_cert": str(pki / "client.pem"),
            "client_key": str(pki / "client.key"),
        }
        with running(_config(pki, up.port, **tls), pki) as gw:
            reply = request(gw.port, "/mtls", pki)
            assert reply.status == 200 and reply.json()["peer_cert"] == "client"


class SServer:
    """`openssl s_server` demanding a client certificate: unlike an asyncio server it sends
    the TLS alert when the client has none."""

    def __init__(self, pki: Path) -> None:
        self.port = free_port()
        self._cmd = [
            "openssl", "s_server", "-accept", f"127.0.0.1:{self.port}", "-quiet", "-www",
            "-cert", str(pki / "server.pem"), "-cert_chain", str(pki / "intermediate.pem"),
            "-key", str(pki / "server.key"), "-CAfile", str(pki / "ca.pem"), "-Verify", "1",
        ]  # fmt: skip
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> int:
        self._proc = subprocess.Popen(
            self._cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self.port
            time.sleep(0.05)
        raise TimeoutError("openssl s_server did not start")

    def __exit__(self, *exc: object) -> None:
        assert self._proc is not None
        self._proc.terminate()
        self._proc.wait(10)


def _expired_server(pki: Path, out: Path) -> tuple[Path, Path]:
    now = dt.datetime.now(dt.UTC)
    item = devcerts.issue(
        devcerts.name("localhost"),
        dev_root(pki),
        eku=[ExtendedKeyUsageOID.SERVER_AUTH],
        sans=[x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
        not_before=now - dt.timedelta(days=30),
        not_after=now - dt.timedelta(days=1),
    )
    devcerts.write_issued(out, "expired-server", item, p12=False)
    return out / "expired-server.pem", out / "expired-server.key"


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("unknown CA", "unknown CA"),
        ("name mismatch", "name mismatch"),
        ("expired", "expired"),
        ("no client certificate", "refused the gateway's TLS client"),
    ],
)
def test_upstream_tls_failures_are_502_with_the_reason(
    pki: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, case: str, reason: str
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.proxy")
    cert, key, client_ca = pki / "server.pem", pki / "server.key", None
    tls: dict[str, Any] = {"ca": [str(pki / "ca.pem")]}
    if case == "unknown CA":
        tls["ca"] = [str(pki / "untrusted-ca.pem")]
    elif case == "name mismatch":
        tls["server_name"] = "wrong.example"
    elif case == "expired":
        cert, key = _expired_server(pki, tmp_path)
    else:
        client_ca = pki / "ca.pem"
    if client_ca is not None:  # an upstream that sends its TLS alert: openssl s_server
        with SServer(pki) as port, running(_config(pki, port, **tls), pki) as gw:
            assert request(gw.port, "/x", pki).status == 502
            assert sample(gw.metrics(), UP, upstream="secure", outcome="tls_error") == 1
    else:
        ctx = _server_ctx(cert, key)
        with EchoServer(ctx) as up, running(_config(pki, up.port, **tls), pki) as gw:
            reply = request(gw.port, "/x", pki)
            assert reply.status == 502 and reply.json()["error"] == "upstream_unavailable"
            assert sample(gw.metrics(), UP, upstream="secure", outcome="tls_error") == 1
            assert up.seen == []  # nothing got through
    details = [r.event["detail"] for r in caplog.records if r.getMessage() == "upstream error"]  # type: ignore[attr-defined]
    assert len(details) == 1 and reason in details[0], details
