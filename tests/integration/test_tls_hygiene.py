"""TLS as a client sees it, with `openssl s_client` and curl: rejected clients get the proper
TLS alert on TLS 1.2 and 1.3 (not a bare close), and weak protocol choices are refused."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import RunningGateway, base_config, cert_args, curl, running


@pytest.fixture(scope="module", params=["asyncio", "uvloop"])
def gateway(request: pytest.FixtureRequest, pki: Path) -> Iterator[RunningGateway]:
    with running(
        lambda port: base_config(pki, port, crl=[str(pki / "crl.pem")]),
        pki,
        request.param == "uvloop",
    ) as gw:
        yield gw


def s_client(port: int, pki: Path, *args: str, cert: str | None = "client") -> str:
    """One connection that sends a request and reads until the gateway closes."""
    cmd = ["openssl", "s_client", "-ign_eof", "-connect", f"127.0.0.1:{port}"]
    cmd += ["-servername", "localhost", "-CAfile", str(pki / "ca.pem"), *args]
    if cert is not None:
        cmd += ["-cert", str(pki / f"{cert}.pem"), "-key", str(pki / f"{cert}.key")]
    request = "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    out = subprocess.run(cmd, input=request, capture_output=True, text=True, timeout=20)
    return out.stdout + out.stderr


ALERTS = {
    # cert: (TLS 1.2 alert, TLS 1.3 alert)
    None: ("handshake failure", "certificate required"),
    "client-untrusted": ("unknown ca", "unknown ca"),
    "client-expired": ("certificate expired", "certificate expired"),
    "client-servereku": ("unsupported certificate", "unsupported certificate"),
    "client-revoked": ("certificate revoked", "certificate revoked"),
}


@pytest.mark.parametrize("version", ["-tls1_2", "-tls1_3"])
@pytest.mark.parametrize("cert", list(ALERTS), ids=lambda c: c or "no-certificate")
def test_rejected_client_receives_the_matching_alert(
    gateway: RunningGateway, pki: Path, version: str, cert: str | None
) -> None:
    expected = ALERTS[cert][0 if version == "-tls1_2" else 1]
    out = s_client(gateway.port, pki, version, cert=cert)
    alerts = set(re.findall(r"alert ([a-z ]+?)(?::|\n|$)", out))
    assert expected in alerts, out[-1500:]
    assert "HTTP/1.1" not in out


def test_accepted_client_is_served_without_compression(gateway: RunningGateway, pki: Path) -> None:
    for version in ("-tls1_2", "-tls1_3"):
        out = s_client(gateway.port, pki, version)
        assert "HTTP/1.1 200" in out and "Compression: NONE" in out, out[-1500:]


def test_curl_names_the_reason_now(gateway: RunningGateway, pki: Path) -> None:
    out = curl(*cert_args(pki, "client-expired"), f"https://localhost:{gateway.port}/")
    assert out.returncode != 0
    assert "certificate expired" in out.stderr, out.stderr


@pytest.mark.parametrize(
    "cipher",
    [
        "ECDHE-ECDSA-AES128-SHA",  # CBC
        "ECDHE-ECDSA-AES256-SHA384",  # CBC
        "AES128-GCM-SHA256",  # RSA key exchange: no forward secrecy
        "AES128-SHA",
    ],
)
def test_weak_tls12_suites_are_refused(gateway: RunningGateway, pki: Path, cipher: str) -> None:
    out = s_client(gateway.port, pki, "-tls1_2", "-cipher", cipher)
    assert "HTTP/1.1" not in out
    assert "Cipher is (NONE)" in out or "alert handshake failure" in out or "no cipher" in out


def test_server_cipher_preference(gateway: RunningGateway, pki: Path) -> None:
    offer = "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-GCM-SHA256"
    out = s_client(gateway.port, pki, "-tls1_2", "-cipher", offer)
    assert "Cipher is ECDHE-ECDSA-AES128-GCM-SHA256" in out, out[-1500:]


@pytest.mark.parametrize("version", ["-tls1", "-tls1_1"])
def test_old_protocols_are_refused(gateway: RunningGateway, pki: Path, version: str) -> None:
    out = s_client(gateway.port, pki, version, "-cipher", "DEFAULT@SECLEVEL=0")
    assert "HTTP/1.1" not in out
    assert "alert protocol version" in out or "no protocols available" in out, out[-1500:]


def test_client_initiated_renegotiation_is_refused(gateway: RunningGateway, pki: Path) -> None:
    cmd = [
        "openssl", "s_client", "-connect", f"127.0.0.1:{gateway.port}", "-tls1_2",
        "-servername", "localhost", "-CAfile", str(pki / "ca.pem"),
        "-cert", str(pki / "client.pem"), "-key", str(pki / "client.key"),
    ]  # fmt: skip
    script = "sleep 0.5; echo R; sleep 1"
    with subprocess.Popen(["sh", "-c", script], stdout=subprocess.PIPE) as feeder:
        out = subprocess.run(cmd, stdin=feeder.stdout, capture_output=True, text=True, timeout=20)
    text = out.stdout + out.stderr
    assert "RENEGOTIATING" in text
    assert "no renegotiation" in text, text[-1500:]


def test_tls13_only_listener_refuses_tls12(pki: Path) -> None:
    with running(lambda port: base_config(pki, port, min_version="1.3"), pki) as gw:
        assert "alert protocol version" in s_client(gw.port, pki, "-tls1_2")
        assert "HTTP/1.1 200" in s_client(gw.port, pki, "-tls1_3")
