"""Identity values built from certificate fields can never break the head they travel in: a
trusted certificate whose CN, OU or SANs hold CR, LF, NUL or line separators is forwarded with
those characters escaped in X-Forwarded-Client-Cert, never as a header or a request of its own,
and the access log stays one line per request."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from tests.crafted import craft
from tests.harness import base_config, dev_root, request, running

SMUGGLED = "GET /admin/secret HTTP/1.1\r\nHost: localhost\r\n\r\n"


def _hostile(pki: Path, out: Path) -> Path:
    """A client certificate from the trusted dev root with control characters everywhere."""
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "client\r\nX-Injected: yes"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "ou\x00with\x7fnul\u2028line"),
        ]
    )
    issued = craft(dev_root(pki), "hostile", subject=subject)
    # craft() gives a SAN URI; replace the certificate with one whose SANs carry CRLF too
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issued.cert.issuer)
        .public_key(issued.key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(issued.cert.not_valid_before_utc)
        .not_valid_after(issued.cert.not_valid_after_utc)
    )
    for ext in issued.cert.extensions:
        if not isinstance(ext.value, x509.SubjectAlternativeName):
            builder = builder.add_extension(ext.value, ext.critical)
    builder = builder.add_extension(
        x509.SubjectAlternativeName(
            [
                x509.UniformResourceIdentifier("spiffe://dev.local/x\r\n" + SMUGGLED),
                x509.DNSName("a\r\nx-injected-dns: yes"),
            ]
        ),
        critical=False,
    )
    from cryptography.hazmat.primitives import hashes

    cert = builder.sign(dev_root(pki).key, hashes.SHA256())
    out.mkdir(parents=True, exist_ok=True)
    (out / "ca.pem").write_bytes((pki / "ca.pem").read_bytes())
    (out / "hostile.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key = out / "hostile.key"
    key.write_bytes(
        issued.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key.chmod(0o600)
    return out


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.text: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        from gateway.base.log import JsonFormatter

        self.text.append(JsonFormatter().format(record))


@pytest.mark.parametrize("forward", [["xfcc"], ["rfc9440", "xfcc"]])
def test_control_characters_in_a_certificate_cannot_inject(
    pki: Path, tmp_path: Path, forward: list[str]
) -> None:
    certs = _hostile(pki, tmp_path / "certs")

    def config(port: int) -> dict[str, Any]:
        doc = base_config(pki, port)
        doc["routes"][0]["forward_identity"] = forward
        doc["logging"] = {"level": "info", "access_log": True}
        return doc

    lines = _Lines()
    logger = logging.getLogger("gateway.access")
    old = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(lines)
    try:
        with running(config, pki) as gw:
            reply = request(gw.port, "/who", certs, "hostile")
            assert reply.status == 200, reply.body[:300]
            after = request(gw.port, "/next", pki, "client")
            assert after.status == 200 and after.json()["path"] == "/next"
            seen = list(gw.echo_seen)
    finally:
        logger.removeHandler(lines)
        logger.setLevel(old)
    received = {k.lower(): v for k, v in reply.upstream_headers()}
    assert "x-injected" not in received and "x-injected-dns" not in received, received
    xfcc = received["x-forwarded-client-cert"]
    assert not any(c in xfcc for c in "\r\n\x00\x7f\u2028\u0085"), xfcc
    assert "\\u000d\\u000a" in xfcc  # escaped, still readable
    assert not any("/admin/secret" in line for line in seen), seen
    for line in lines.text:
        assert "\u2028" not in line and "\u0085" not in line and "\n" not in line
        json.loads(line)
