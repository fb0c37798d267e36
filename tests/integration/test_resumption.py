"""TLS session resumption as clients see it: a resumed connection carries the same client
identity as the full handshake, the server-side cache is bounded by `session_cache` (a full
one starts afresh) and sessions expire after `session_timeout`; `session_cache: 0` resumes with stateless tickets."""

from __future__ import annotations

import functools
import json
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import (
    EchoServer,
    GatewayProcess,
    RunningGateway,
    base_config,
    client_context,
    running,
    sample,
    write_config,
)

VERSIONS = {"tls1.2": ssl.TLSVersion.TLSv1_2, "tls1.3": ssl.TLSVersion.TLSv1_3}


def _config(pki: Path, echo_port: int, **tls: Any) -> dict[str, Any]:
    cfg = base_config(pki, echo_port, **tls)
    cfg["routes"][0]["forward_identity"] = ["xfcc"]
    other = {"allow": [{"subject": {"CN": "someone-else"}}]}
    cfg["routes"].insert(
        0,
        {"name": "other", "match": {"path_prefix": "/other"}, "upstream": "echo", "policy": other},
    )
    return cfg


@pytest.fixture(scope="module", params=["asyncio", "uvloop"])
def gateway(request: pytest.FixtureRequest, pki: Path) -> Iterator[RunningGateway]:
    with running(
        lambda port: _config(pki, port, session_cache=3), pki, request.param == "uvloop"
    ) as gw:
        yield gw


def fetch(
    port: int,
    pki: Path,
    version: str,
    session: ssl.SSLSession | None = None,
    cert: str = "client",
    path: str = "/",
) -> tuple[bytes, ssl.SSLSession | None, bool]:
    """One request on a new connection (offering `session`): the answer, the session to
    resume next time (TLS 1.3 sends it after the handshake) and whether this one resumed."""
    ctx = _client(pki, version, cert)
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    with ctx.wrap_socket(raw, server_hostname="localhost", session=session) as sock:
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode()
        )
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        return answer, sock.session, sock.session_reused


@functools.cache
def _client(pki: Path, version: str, cert: str) -> ssl.SSLContext:
    """One client context per kind: Python resumes a session only with the context it came from."""
    ctx = client_context(pki, cert)
    ctx.minimum_version = ctx.maximum_version = VERSIONS[version]
    return ctx


def _xfcc(answer: bytes) -> str:
    """The X-Forwarded-Client-Cert header the echo upstream received."""
    head, body = answer.split(b"\r\n\r\n", 1)
    assert b"transfer-encoding: chunked" not in head.lower(), head
    xfcc = json.loads(body)["client"]
    assert isinstance(xfcc, str) and "Hash=" in xfcc, xfcc
    return xfcc


@pytest.mark.parametrize("version", list(VERSIONS))
def test_resumed_connection_carries_the_same_identity(
    gateway: RunningGateway, pki: Path, version: str
) -> None:
    def resumed() -> float:
        return sample(
            gateway.metrics(), "mtls_gateway_tls_resumed_handshakes_total", listener="public"
        )

    before = resumed()
    first, session, reused = fetch(gateway.port, pki, version)
    assert first.startswith(b"HTTP/1.1 200") and not reused
    assert resumed() == before  # a full handshake
    second, _, reused = fetch(gateway.port, pki, version, session)
    assert reused, "the session was not resumed"
    assert resumed() == before + 1
    assert second.startswith(b"HTTP/1.1 200"), second[:200]
    assert _xfcc(second) == _xfcc(first)
    assert "CN=client" in _xfcc(second)


@pytest.mark.parametrize("version", list(VERSIONS))
def test_resumed_connection_is_denied_like_its_full_handshake(
    gateway: RunningGateway, pki: Path, version: str
) -> None:
    """The deny twin: a policy that refuses the client refuses it on a resumed session too."""
    first, session, _ = fetch(gateway.port, pki, version, path="/other")
    assert first.startswith(b"HTTP/1.1 403"), first[:200]
    second, _, reused = fetch(gateway.port, pki, version, session, path="/other")
    assert reused, "the session was not resumed"
    assert second.startswith(b"HTTP/1.1 403"), second[:200]
    # denied for who the client is (not for lacking a certificate), both times
    for answer in (first, second):
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"] == "client_cert_not_allowed"


def test_a_full_cache_starts_afresh_and_drops_older_sessions(pki: Path) -> None:
    with running(lambda port: _config(pki, port, session_cache=3), pki) as gw:
        # three sessions fill the first context's cache; the fourth connection gets a new one
        sessions = [fetch(gw.port, pki, "tls1.3")[1] for _ in range(5)]
        assert fetch(gw.port, pki, "tls1.3", sessions[-1])[2], "newest session not resumed"
        assert not fetch(gw.port, pki, "tls1.3", sessions[0])[2], "dropped session resumed"


def test_openssl_client_resumes_from_a_saved_session(
    gateway: RunningGateway, pki: Path, tmp_path: Path
) -> None:
    """What `openssl s_client -sess_out/-sess_in` (and any client that keeps sessions) sees."""
    saved = tmp_path / "session.pem"
    cmd = ["openssl", "s_client", "-connect", f"127.0.0.1:{gateway.port}", "-servername"]
    cmd += ["localhost", "-CAfile", str(pki / "ca.pem"), "-ign_eof"]
    cmd += ["-cert", str(pki / "client.pem"), "-key", str(pki / "client.key")]
    req = "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    outs = []
    for extra in (["-sess_out", str(saved)], ["-sess_in", str(saved)]):
        out = subprocess.run(cmd + extra, input=req, capture_output=True, text=True, timeout=20)
        outs.append(out.stdout)
    assert "New, TLSv1.3" in outs[0], outs[0][-800:]
    assert "Reused, TLSv1.3" in outs[1], outs[1][-800:]
    assert "HTTP/1.1 200" in outs[1]


def test_sessions_expire_after_session_timeout(pki: Path) -> None:
    with running(lambda port: _config(pki, port, session_timeout="1s"), pki) as gw:
        _, session, _ = fetch(gw.port, pki, "tls1.3")
        assert fetch(gw.port, pki, "tls1.3", session)[2], "not resumed within the timeout"
        _, session, _ = fetch(gw.port, pki, "tls1.3")
        time.sleep(2.2)
        answer, _, reused = fetch(gw.port, pki, "tls1.3", session)
        assert not reused, "resumed after session_timeout"
        assert answer.startswith(b"HTTP/1.1 200")  # a full handshake instead


@pytest.mark.parametrize("version", list(VERSIONS))
def test_stateless_tickets_when_the_cache_is_off(pki: Path, version: str) -> None:
    with running(lambda port: _config(pki, port, session_cache=0), pki) as gw:
        first, session, _ = fetch(gw.port, pki, version)
        second, _, reused = fetch(gw.port, pki, version, session)
        assert reused
        assert _xfcc(second) == _xfcc(first)


def test_a_reload_ends_resumption_of_older_sessions(pki: Path, tmp_path: Path) -> None:
    """New contexts after a reload: the client is verified again against the new trust."""
    with EchoServer() as echo:
        path, port, admin = write_config(tmp_path, pki, echo.port, reload={"watch": False})
        with GatewayProcess(path, admin):
            _, session, _ = fetch(port, pki, "tls1.3")
            assert fetch(port, pki, "tls1.3", session)[2], "not resumed before the reload"
            req = urllib.request.Request(f"http://127.0.0.1:{admin}/reload", method="POST")
            with urllib.request.urlopen(req, timeout=20) as resp:
                assert resp.status == 200
            answer, _, reused = fetch(port, pki, "tls1.3", session)
            assert not reused, "a session of the old context resumed"
            assert answer.startswith(b"HTTP/1.1 200")
