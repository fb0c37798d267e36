"""Handshake matrix: every dev certificate and broken client against a running gateway."""

from __future__ import annotations

import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from tests.harness import (
    base_config,
    cert_args,
    curl,
    handshake_counts,
    running,
    sample,
    wait_delta,
)

# cert -> (expected result label, request succeeds)
CERT_CASES = {
    "client": ("ok", True),
    "client-intermediate": ("ok", True),
    # OpenSSL accepts a leaf without EKU; the strict profile (the default) does not
    "client-noeku": ("bad_eku", False),
    "client-revoked": ("ok", True),  # no CRL configured on this listener
    "client-servereku": ("bad_eku", False),
    "client-expired": ("expired", False),
    "client-notyetvalid": ("not_yet_valid", False),
    "client-untrusted": ("unknown_ca", False),
}


@pytest.fixture(scope="module", params=["asyncio", "uvloop"])
def gateway(request: pytest.FixtureRequest, pki: Path):
    with running(
        lambda port: base_config(pki, port, handshake_timeout="500ms"),
        pki,
        request.param == "uvloop",
    ) as gw:
        yield gw


def _handshake_counts(gw) -> dict[str, float]:
    return handshake_counts(gw.metrics)


def _wait_delta(gw, before: dict[str, float], want: dict[str, float]) -> dict[str, float]:
    return wait_delta(gw.metrics, before, want)


@pytest.mark.parametrize("cert", list(CERT_CASES))
def test_client_certificate_outcome_and_label(gateway, pki: Path, cert: str) -> None:
    result, succeeds = CERT_CASES[cert]
    before = _handshake_counts(gateway)
    out = curl(
        *cert_args(pki, cert),
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        f"https://localhost:{gateway.port}/hello",
    )
    if succeeds:
        assert out.returncode == 0 and out.stdout == "200", out.stderr
    else:
        assert out.returncode != 0 and out.stdout in ("", "000"), (out.stdout, out.stderr)
    assert _wait_delta(gateway, before, {result: 1}) == {result: 1}


def test_no_client_certificate(gateway, pki: Path) -> None:
    before = _handshake_counts(gateway)
    out = curl("--cacert", str(pki / "ca.pem"), f"https://localhost:{gateway.port}/hello")
    assert out.returncode != 0
    assert _wait_delta(gateway, before, {"no_client_cert": 1}) == {"no_client_cert": 1}


def test_plain_http_to_tls_port(gateway) -> None:
    before = _handshake_counts(gateway)
    out = curl(f"http://127.0.0.1:{gateway.port}/hello")
    assert out.returncode != 0
    assert _wait_delta(gateway, before, {"not_tls": 1}) == {"not_tls": 1}


def test_tls11_only_client(gateway, pki: Path) -> None:
    before = _handshake_counts(gateway)
    proc = subprocess.run(
        [
            "openssl",
            "s_client",
            "-connect",
            f"127.0.0.1:{gateway.port}",
            "-tls1_1",
            "-cipher",
            "DEFAULT@SECLEVEL=0",
            "-cert",
            str(pki / "client.pem"),
            "-key",
            str(pki / "client.key"),
        ],
        input="",
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert "Cipher is (NONE)" in proc.stdout or proc.returncode != 0
    assert _wait_delta(gateway, before, {"protocol_version": 1}) == {"protocol_version": 1}


def test_stalled_client_times_out(gateway) -> None:
    before = _handshake_counts(gateway)
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
        sock.settimeout(5)
        started = time.monotonic()
        assert sock.recv(1) == b""  # the gateway closes after handshake_timeout (500ms)
        assert time.monotonic() - started < 3
    assert _wait_delta(gateway, before, {"timeout": 1}) == {"timeout": 1}


def test_client_rejecting_gateway_certificate(gateway, pki: Path) -> None:
    before = _handshake_counts(gateway)
    out = curl(
        "--cert",
        str(pki / "client.pem"),
        "--key",
        str(pki / "client.key"),
        f"https://localhost:{gateway.port}/",
    )
    assert out.returncode == 60  # curl: peer certificate cannot be authenticated
    assert _wait_delta(gateway, before, {"client_alert": 1}) == {"client_alert": 1}


def test_successful_handshake_is_timed(gateway, pki: Path) -> None:
    name = "mtls_gateway_tls_handshake_duration_seconds_count"
    before = sample(gateway.metrics(), name, listener="public")
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    ctx.load_cert_chain(pki / "client.pem", pki / "client.key")
    with (
        socket.create_connection(("127.0.0.1", gateway.port)) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(b"GET /x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        assert tls.recv(12).startswith(b"HTTP/1.1 200")
    assert sample(gateway.metrics(), name, listener="public") == before + 1
