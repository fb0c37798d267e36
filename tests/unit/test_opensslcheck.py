"""OpenSSL's own verdict on a chain, without the client's key: for every dev certificate,
on listeners that take TLS 1.3 only, optional client certificates, and CRLs."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config.listener import TlsConfig
from gateway.pki.opensslcheck import OpenSslJudge
from gateway.pki.verify import load_certs

EXPECTED = {  # without CRLs, then with the dev CRLs
    "client": ("ok", "ok"),
    "client-intermediate": ("ok", "ok"),
    "client-noeku": ("ok", "ok"),  # OpenSSL accepts it; the strict profile does not
    "client-revoked": ("ok", "revoked"),
    "client-servereku": ("bad_eku", "bad_eku"),
    "client-expired": ("expired", "expired"),
    "client-notyetvalid": ("not_yet_valid", "not_yet_valid"),
    "client-untrusted": ("unknown_ca", "unknown_ca"),
}


@pytest.mark.parametrize("auth", ["require", "optional"])
@pytest.mark.parametrize("min_version", ["1.2", "1.3"])
def test_openssl_judges_every_dev_certificate(pki: Path, auth: str, min_version: str) -> None:
    base = {"cert": str(pki / "server.pem"), "key": str(pki / "server.key"),
            "client_ca": [str(pki / "ca.pem")], "client_auth": auth, "min_version": min_version}  # fmt: skip
    judges = [
        OpenSslJudge(TlsConfig.model_validate(base), "listeners[0].tls"),
        OpenSslJudge(
            TlsConfig.model_validate({**base, "crl": [str(pki / "crl.pem")]}), "listeners[0].tls"
        ),
    ]
    for name, expected in EXPECTED.items():
        certs = load_certs((pki / f"{name}.pem").read_bytes())
        got = tuple((v.reason or "ok") for v in (j.verdict(certs[0], certs[1:]) for j in judges))
        assert got == expected, name
