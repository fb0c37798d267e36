"""The real `mtls-gateway` command: run, check, dev-certs; with curl and openssl s_client."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.harness import (
    EchoServer,
    GatewayProcess,
    cert_args,
    curl,
    expiry,
    sample,
    scrape,
    write_config,
)

pytestmark = pytest.mark.process


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )


def test_dev_certs_writes_every_artefact(tmp_path: Path) -> None:
    out = _cli("dev-certs", "--out", str(tmp_path / "pki"))
    assert out.returncode == 0, out.stderr
    names = {p.name for p in (tmp_path / "pki").iterdir()}
    for kind in [
        "client",
        "client-noeku",
        "client-servereku",
        "client-expired",
        "client-notyetvalid",
        "client-revoked",
        "client-untrusted",
        "client-intermediate",
    ]:
        assert {f"{kind}.pem", f"{kind}.key", f"{kind}.p12"} <= names
    assert {
        "ca.pem",
        "intermediate.pem",
        "server.pem",
        "server.key",
        "crl.pem",
        "README.md",
    } <= names
    assert (tmp_path / "pki" / "server.key").stat().st_mode & 0o077 == 0
    check = subprocess.run(
        [
            "openssl",
            "verify",
            "-CAfile",
            str(tmp_path / "pki" / "ca.pem"),
            "-untrusted",
            str(tmp_path / "pki" / "intermediate.pem"),
            str(tmp_path / "pki" / "server.pem"),
        ],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    p12 = subprocess.run(
        [
            "openssl",
            "pkcs12",
            "-in",
            str(tmp_path / "pki" / "client.p12"),
            "-passin",
            "pass:changeit",
            "-nokeys",
            "-clcerts",
        ],
        capture_output=True,
        text=True,
    )
    assert "CN = client" in p12.stdout or "CN=client" in p12.stdout, p12.stderr


def test_check_accepts_good_config(tmp_path: Path, pki: Path) -> None:
    path, _, _ = write_config(tmp_path, pki, 9)
    out = _cli("check", "-c", str(path))
    assert out.returncode == 0 and "OK" in out.stdout, out.stderr


def test_check_reports_every_problem_with_its_path(tmp_path: Path, pki: Path) -> None:
    path, _, _ = write_config(tmp_path, pki, 9)
    cfg = yaml.safe_load(path.read_text())
    cfg["listeners"][0]["tls"]["client_auth"] = "sometimes"
    cfg["routes"][0]["policy"] = {"allow": []}
    cfg["routes"][0]["colour"] = "blue"
    path.write_text(yaml.safe_dump(cfg))
    out = _cli("check", "-c", str(path))
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert (
        "listeners[0].tls.client_auth: Input should be 'require', 'optional' or 'none' (got 'sometimes')"
        in out.stderr
    )
    assert "routes[0].colour: unknown key 'colour'" in out.stderr


def test_check_rejects_key_of_another_certificate(tmp_path: Path, pki: Path) -> None:
    path, _, _ = write_config(tmp_path, pki, 9)
    cfg = yaml.safe_load(path.read_text())
    cfg["listeners"][0]["tls"]["key"] = str(pki / "client.key")
    path.write_text(yaml.safe_dump(cfg))
    out = _cli("check", "-c", str(path))
    assert out.returncode == 2
    assert (
        f"listeners[0].tls.key: {pki / 'client.key'} does not match the certificate's public key"
        in out.stderr
    )


def test_run_refuses_bad_config_before_binding(tmp_path: Path, pki: Path) -> None:
    path, _, _ = write_config(tmp_path, pki, 9)
    cfg = yaml.safe_load(path.read_text())
    cfg["upstreams"][0]["url"] = "ftp://x"
    path.write_text(yaml.safe_dump(cfg))
    out = _cli("run", "-c", str(path))
    assert (
        out.returncode == 2 and "upstreams[0].url" in out.stderr and "Traceback" not in out.stderr
    )


def test_run_serves_curl_and_openssl(tmp_path: Path, pki: Path) -> None:
    with EchoServer() as echo:
        path, port, admin = write_config(tmp_path, pki, echo.port)
        with GatewayProcess(path, admin) as gw:
            ok = curl(*cert_args(pki), f"https://localhost:{port}/hello")
            assert ok.returncode == 0 and '"path": "/hello"' in ok.stdout, ok.stderr
            p12 = curl(
                "--cacert",
                str(pki / "ca.pem"),
                "--cert-type",
                "P12",
                "--cert",
                f"{pki / 'client.p12'}:changeit",
                f"https://localhost:{port}/p12",
            )
            assert p12.returncode == 0 and '"path": "/p12"' in p12.stdout, p12.stderr
            s_client = subprocess.run(
                [
                    "openssl",
                    "s_client",
                    "-connect",
                    f"127.0.0.1:{port}",
                    "-servername",
                    "localhost",
                    "-CAfile",
                    str(pki / "ca.pem"),
                    "-cert",
                    str(pki / "client.pem"),
                    "-key",
                    str(pki / "client.key"),
                    "-verify_return_error",
                    "-quiet",
                ],
                input="GET /s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
                capture_output=True,
                text=True,
                timeout=20,
            )
            assert "HTTP/1.1 200" in s_client.stdout, s_client.stderr
            expired = curl(
                "--cacert",
                str(pki / "ca.pem"),
                "--cert",
                str(pki / "client-expired.pem"),
                "--key",
                str(pki / "client-expired.key"),
                f"https://localhost:{port}/",
            )
            assert expired.returncode != 0
            expired12 = curl(
                "--tls-max", "1.2", "--cacert", str(pki / "ca.pem"),
                "--cert", str(pki / "client-expired.pem"),
                "--key", str(pki / "client-expired.key"),
                f"https://localhost:{port}/",
            )  # fmt: skip
            assert expired12.returncode != 0
            m = scrape(admin)
            assert (
                sample(m, "mtls_gateway_tls_handshakes_total", listener="public", result="ok") == 3
            )
            assert (
                sample(m, "mtls_gateway_tls_handshakes_total", listener="public", result="expired")
                == 2
            )
            assert (
                sample(m, "mtls_gateway_requests_total", route="all", method="GET", code="200") == 3
            )
        assert gw.proc is not None and gw.proc.returncode == 0  # SIGTERM drains and exits 0
        logs = gw.logs()
    assert '"reason": "expired"' in logs and '"verify_code": 10' in logs
    lines = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    access = next(e for e in lines if e["logger"] == "gateway.access" and e["path"] == "/hello")
    assert access["status"] == 200 and access["route"] == "all" and access["upstream"] == "echo"
    assert access["client_subject"] == "OU=clients,O=mtls-gateway dev,CN=client"
    assert len(access["client_sha256"]) == 64 and len(access["request_id"]) == 16
    assert access["duration_ms"] >= access["upstream_ms"] > 0
    failed = next(e for e in lines if e["msg"] == "tls handshake failed")
    assert failed["reason"] == "expired" and failed["sni"] == "localhost"
    assert failed["peer"] == access["peer"] == "127.0.0.1"  # one format everywhere
    assert failed["peer_port"] > 0
    assert "tls_version" in failed  # null here: OpenSSL failed the handshake before agreeing
    assert "client_subject" not in failed  # TLS 1.3: the Certificate message was encrypted
    # TLS 1.2: the client is named from the cleartext Certificate message OpenSSL rejected
    (named,) = [e for e in lines if e["msg"] == "tls handshake failed" and "client_subject" in e]
    assert (
        named["reason"] == "expired" and named["client_cert_seen_in"] == "tls12_certificate_message"
    )
    assert named["client_subject"] == "OU=clients,O=mtls-gateway dev,CN=client-expired"
    assert named["client_issuer"] == "O=mtls-gateway dev,CN=mtls-gateway dev root CA"
    assert len(named["client_sha256"]) == 64 and named["client_serial"]


def test_admin_endpoints(tmp_path: Path, pki: Path) -> None:
    import urllib.request

    with EchoServer() as echo:
        path, _, admin = write_config(tmp_path, pki, echo.port)
        with GatewayProcess(path, admin):
            for endpoint in ("healthz", "readyz"):
                with urllib.request.urlopen(f"http://127.0.0.1:{admin}/{endpoint}") as r:
                    assert r.status == 200
            m = scrape(admin)
            assert min(expiry(m, "server", "public").values()) > 0
            assert min(expiry(m, "ca", "mtls-gateway dev root CA").values()) > 0
