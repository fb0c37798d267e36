"""Client certificates that are odd but signed by a trusted CA: garbage extensions, thousands of
SANs, names in unusual string types, an unreadable SAN, an unknown critical extension. The
gateway must answer each one without an exception escaping: identity degrades to what can be
read, and policy fails closed."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.pki import devcerts
from gateway.pki.identity import parse_identity
from tests.harness import (
    RunningGateway,
    base_config,
    dev_root,
    request,
    running,
    sample,
)

BMP = x509.name._ASN1Type.BMPString  # type: ignore[attr-defined]
UNIVERSAL = x509.name._ASN1Type.UniversalString  # type: ignore[attr-defined]


def _build(
    root: devcerts.Issued, subject: x509.Name, extensions: list[tuple[Any, bool]]
) -> devcerts.Issued:
    key = devcerts.new_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(root.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(root.cert.not_valid_before_utc)
        .not_valid_after(root.cert.not_valid_before_utc + 400 * devcerts.DAY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root.key.public_key()),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    )
    for ext, critical in extensions:
        builder = builder.add_extension(ext, critical=critical)
    return devcerts.Issued(builder.sign(root.key, hashes.SHA256()), key)


def _cn(text: str, kind: Any = None) -> x509.Name:
    attrs = [
        x509.NameAttribute(NameOID.COMMON_NAME, text, _type=kind)
        if kind
        else x509.NameAttribute(NameOID.COMMON_NAME, text)
    ]
    return x509.Name([*attrs, x509.NameAttribute(NameOID.ORGANIZATION_NAME, "odd")])


GARBAGE = x509.UnrecognizedExtension(
    x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\x04\x03\xff\x00\xfe"
)
BAD_SAN = x509.UnrecognizedExtension(
    x509.ObjectIdentifier("2.5.29.17"), b"\x30\x05\x82\x03\xff"
)  # truncated


def _cases(root: devcerts.Issued) -> dict[str, devcerts.Issued]:
    many = [x509.DNSName(f"h{i}.many.example") for i in range(2000)]
    many += [x509.UniformResourceIdentifier(f"spiffe://dev.local/many/{i}") for i in range(500)]
    return {
        "garbage-extension": _build(root, _cn("garbage-extension"), [(GARBAGE, False)]),
        "many-sans": _build(root, _cn("many-sans"), [(x509.SubjectAlternativeName(many), False)]),
        "bmp-name": _build(root, _cn("bmp-ünïcödé", BMP), []),
        "universal-name": _build(root, _cn("universal-名前", UNIVERSAL), []),
        "nul-in-name": _build(root, _cn("nul\x00name"), []),
        "unreadable-san": _build(root, _cn("unreadable-san"), [(BAD_SAN, False)]),
        "unknown-critical": _build(root, _cn("unknown-critical"), [(GARBAGE, True)]),
    }


@pytest.fixture(scope="module")
def certs(pki: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("odd-certs")
    shutil.copy(pki / "ca.pem", out / "ca.pem")
    for name, item in _cases(dev_root(pki)).items():
        devcerts.write_issued(out, name, item, p12=False)
    return out


@pytest.fixture(scope="module")
def gw(pki: Path) -> Iterator[RunningGateway]:
    def config(port: int) -> dict[str, Any]:
        doc = base_config(pki, port)
        doc["routes"] = [
            {"name": "by-cn", "match": {"path_prefix": "/cn"}, "upstream": "echo",
             "policy": {"allow": [{"subject": {"CN": ["bmp-ünïcödé", "universal-名前", "garbage-extension"]}}]}},
            {"name": "by-san", "match": {"path_prefix": "/san"}, "upstream": "echo",
             "policy": {"allow": [{"san_uri": "spiffe://dev.local/many/499"}]}},
            {"name": "any", "upstream": "echo", "policy": {"allow": "any"}},
        ]  # fmt: skip
        return doc

    with running(config, pki) as gateway:
        yield gateway


# cert -> (status on /cn, status on /san, status on /any); None: refused at the handshake
EXPECTED: dict[str, tuple[int | None, int | None, int | None]] = {
    "garbage-extension": (200, 403, 200),
    "many-sans": (403, 200, 200),
    "bmp-name": (200, 403, 200),
    "universal-name": (200, 403, 200),
    "nul-in-name": (403, 403, 200),
    "unknown-critical": (None, None, None),
}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_odd_certificate_is_answered_and_policy_fails_closed(
    gw: RunningGateway, certs: Path, name: str
) -> None:
    errors_before = sample(
        gw.metrics(), "mtls_gateway_requests_total", route="any", method="GET", code="500"
    )
    for path, want in zip(("/cn/x", "/san/x", "/any/x"), EXPECTED[name], strict=True):
        try:
            status: int | None = request(gw.port, path, certs, name).status
        except OSError:
            status = None
        assert status == want, (name, path)
    assert (
        sample(gw.metrics(), "mtls_gateway_requests_total", route="any", method="GET", code="500")
        == errors_before
    )


def test_identity_parser_keeps_what_it_can_read(pki: Path) -> None:
    cases = _cases(dev_root(pki))
    from cryptography.hazmat.primitives.serialization import Encoding

    ident = parse_identity(cases["bmp-name"].cert.public_bytes(Encoding.DER))
    assert ident.subject_attrs["CN"] == ("bmp-ünïcödé",)
    many = parse_identity(cases["many-sans"].cert.public_bytes(Encoding.DER))
    assert len(many.san_dns) == 2000 and len(many.san_uri) == 500
    # OpenSSL clients refuse to even load this one; the parser must still not raise
    odd = parse_identity(cases["unreadable-san"].cert.public_bytes(Encoding.DER))
    assert odd.san_dns == () and odd.parse_errors  # what failed is recorded, nothing guessed
