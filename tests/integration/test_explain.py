"""`mtls-gateway explain` against the running gateway: for every dev certificate, the verdict,
the stage and the reason must be what the gateway really does with that certificate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gateway.pki import devcerts
from tests.harness import (
    EchoServer,
    GatewayProcess,
    cert_args,
    curl,
    handshake_counts,
    scrape,
    write_config,
)

pytestmark = pytest.mark.process


def _explain(config: Path, *args: str) -> tuple[int, dict[str, Any] | None, str]:
    env = {**os.environ, "P12_WRONG": "wrong", "P12_GOOD": "changeit"}
    env.pop("UNSET_VAR", None)
    out = subprocess.run(
        [sys.executable, "-m", "gateway", "explain", "-c", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    doc = json.loads(out.stdout) if "--json" in args and out.returncode in (0, 1) else None
    return out.returncode, doc, out.stdout + out.stderr


def _config(tmp_path: Path, pki: Path, echo: int, profile: str) -> tuple[Path, int, int]:
    path, port, admin = write_config(tmp_path, pki, echo, reload={"watch": False})
    doc = yaml.safe_load(path.read_text())
    doc["listeners"][0]["tls"]["crl"] = [str(pki / "crl.pem")]
    doc["listeners"][0]["tls"]["verify_profile"] = profile
    doc["routes"] = [
        {
            "name": "api",
            "match": {"path_prefix": "/api"},
            "upstream": "echo",
            "policy": {
                "required_eku": ["clientAuth"],
                "allow": [{"san_uri": "spiffe://dev.local/*"}],
            },
        },
        {
            "name": "intermediate-only",
            "match": {"path_prefix": "/"},
            "upstream": "echo",
            "policy": {"allow": [{"subject": {"CN": "client-intermediate"}}]},
        },
    ]
    path.write_text(yaml.safe_dump(doc))
    return path, port, admin


def _gateway_outcome(port: int, admin: int, pki: Path, cert: str, path: str) -> tuple[bool, str]:
    """(allowed, reason) as the running gateway decides: a handshake result or a policy reason."""
    before = handshake_counts(lambda: scrape(admin))
    denials_before = scrape(admin)
    out = curl(
        *cert_args(pki, cert),
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        f"https://localhost:{port}{path}",
    )
    if out.returncode == 0 and out.stdout == "200":
        return True, "ok"
    after = scrape(admin)
    if out.returncode == 0 and out.stdout == "403":
        for (name, labels), value in after.items():
            if name == "mtls_gateway_policy_denials_total" and value > denials_before.get(
                (name, labels), 0
            ):
                return False, dict(labels)["reason"]
    moved = {k: v for k, v in handshake_counts(lambda: after).items() if v != before.get(k, 0)}
    assert len(moved) == 1, (cert, out.stdout, moved)
    return False, next(iter(moved))


@pytest.mark.parametrize("profile", ["openssl", "strict"])
def test_explain_agrees_with_the_gateway_for_every_dev_cert(
    tmp_path: Path, pki: Path, profile: str
) -> None:
    with EchoServer() as echo:
        config, port, admin = _config(tmp_path, pki, echo.port, profile)
        with GatewayProcess(config, admin):
            for cert in devcerts.CLIENT_KINDS:
                for path in ("/api/x", "/other"):
                    allowed, reason = _gateway_outcome(port, admin, pki, cert, path)
                    code, doc, text = _explain(
                        config, "--cert", str(pki / f"{cert}.pem"), "--host", "localhost",
                        "--path", path, "--json",
                    )  # fmt: skip
                    assert doc is not None, text
                    assert (code == 0) == allowed == (doc["verdict"] == "allowed"), (
                        cert,
                        path,
                        doc,
                    )
                    assert (doc["reason"] or "ok") == reason, (cert, path, doc["steps"])


def test_explain_reads_der_and_pkcs12_and_explains_in_text(tmp_path: Path, pki: Path) -> None:
    config, _, _ = _config(tmp_path, pki, 9, "openssl")
    der = tmp_path / "client.der"
    leaf = x509.load_pem_x509_certificates((pki / "client.pem").read_bytes())[0]
    der.write_bytes(leaf.public_bytes(serialization.Encoding.DER))
    code, _, text = _explain(config, "--cert", str(der), "--route", "api")
    assert code == 0 and "ALLOWED on listener 'public', route 'api'" in text, text
    secret = tmp_path / "p12-password"
    secret.write_text("changeit\n")
    code, doc, text = _explain(
        config, "--cert", str(pki / "client-intermediate.p12"), "--password-file", str(secret),
        "--route", "api", "--json",
    )  # fmt: skip
    assert code == 0 and doc is not None, text
    assert "'mtls-gateway dev intermediate CA'" in next(
        s["detail"] for s in doc["steps"] if s["name"] == "chain"
    )
    code, _, _ = _explain(
        config, "--cert", str(pki / "client.p12"), "--password-env", "P12_GOOD", "--route", "api"
    )
    assert code == 0
    code, _, text = _explain(config, "--cert", str(pki / "client-revoked.pem"), "--route", "api")
    assert code == 1
    assert "DENIED at handshake by OpenSSL (revoked)" in text and "FAIL revocation" in text
    assert "FAIL openssl" in text and "(verify code 23)" in text and "fix: " in text
    code, _, text = _explain(
        config, "--cert", str(pki / "client.pem"), "--route", "api", "--at", "2040-01-01T00:00:00Z"
    )
    # by 2040 the listener's CRL has lapsed: OpenSSL checks that before the leaf's own dates
    assert code == 1 and "expired (nextUpdate" in text
    assert "DENIED at handshake by the step-by-step checks (crl_error)" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cert", "/nonexistent.pem"], "cannot read /nonexistent.pem"),
        (["--cert", "{pki}/client.p12"], "needs --password-file or --password-env"),
        (["--cert", "{pki}/client.p12", "--password-env", "P12_WRONG"], "readable PKCS#12"),
        (["--cert", "{pki}/client.p12", "--password-env", "UNSET_VAR"], "UNSET_VAR is not set"),
        (
            ["--cert", "{pki}/client.p12", "--password-file", "/nope"],
            "cannot read the password file",
        ),
        (
            ["--cert", "{pki}/client.pem", "--route", "nope"],
            "no route named 'nope'; defined: api, intermediate-only",
        ),
        (["--cert", "{pki}/client.pem", "--listener", "nope"], "no listener named 'nope'"),
        (["--cert", "{pki}/client.pem", "--at", "tomorrow"], "--at 'tomorrow'"),
    ],
)
def test_explain_usage_errors_exit_2(
    tmp_path: Path, pki: Path, args: list[str], message: str
) -> None:
    config, _, _ = _config(tmp_path, pki, 9, "openssl")
    code, _, text = _explain(config, *[a.format(pki=pki) for a in args])
    assert code == 2 and message in text, text
    assert "Traceback" not in text


def test_explain_on_a_broken_config_names_the_yaml_path(tmp_path: Path, pki: Path) -> None:
    config, _, _ = _config(tmp_path, pki, 9, "openssl")
    doc = yaml.safe_load(config.read_text())
    doc["routes"][0]["policy"]["allow"] = []
    config.write_text(yaml.safe_dump(doc))
    code, _, text = _explain(config, "--cert", str(pki / "client.pem"))
    assert code == 2 and "routes[0].policy.allow" in text


def test_a_repeated_subject_attribute_is_denied_and_explained(tmp_path: Path, pki: Path) -> None:
    """A certificate with CN=client-intermediate and CN=mallory against a
    `CN: client-intermediate` rule: denied by the gateway, and explain says why."""
    import shutil

    from cryptography.x509.oid import NameOID

    from tests.crafted import craft
    from tests.harness import dev_root

    certs = tmp_path / "certs"
    shutil.copytree(pki, certs)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "client-intermediate"),
            x509.NameAttribute(NameOID.COMMON_NAME, "mallory"),
        ]
    )
    issued = craft(dev_root(pki), "multi", subject=subject)
    (certs / "multi.pem").write_bytes(issued.cert.public_bytes(serialization.Encoding.PEM))
    (certs / "multi.key").write_bytes(
        issued.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (certs / "multi.key").chmod(0o600)
    with EchoServer() as echo:
        config, port, admin = _config(tmp_path, pki, echo.port, "openssl")
        with GatewayProcess(config, admin):
            assert _gateway_outcome(port, admin, certs, "multi", "/other") == (False, "not_allowed")
            assert _gateway_outcome(port, admin, certs, "client-intermediate", "/other") == (
                True,
                "ok",
            )
    code, _, text = _explain(
        config, "--cert", str(certs / "multi.pem"), "--host", "localhost", "--path", "/other"
    )
    assert code == 1, text
    assert "CN=client-intermediate+mallory" in text and "every value" in text, text
