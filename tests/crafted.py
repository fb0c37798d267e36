"""Client certificates that break one profile rule each (for the strict profile tests)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from gateway.pki import devcerts

ANY_EKU = x509.ObjectIdentifier("2.5.29.37.0")

# name -> (how to build it, the strict profile's reason, does OpenSSL's handshake accept it)
PROFILE_CASES: dict[str, tuple[dict[str, Any], str, bool]] = {
    "good": ({}, "ok", True),
    "no-eku": ({"eku": None}, "bad_eku", True),
    "any-eku-only": ({"eku": [ANY_EKU]}, "bad_eku", False),
    "leaf-is-ca": ({"ca": True}, "bad_cert", True),
    "no-aki": ({"aki": False}, "bad_cert", True),
    "rsa-1024": ({"rsa_bits": 1024}, "bad_cert", False),
    "ee-asserts-key-cert-sign": ({"key_usage": "sign_and_cert_sign"}, "bad_cert", True),
    "no-digital-signature": ({"key_usage": "cert_sign_only"}, "bad_eku", False),
}


def craft(
    root: devcerts.Issued,
    cn: str,
    *,
    eku: list[x509.ObjectIdentifier] | None = [ExtendedKeyUsageOID.CLIENT_AUTH],  # noqa: B006
    ca: bool = False,
    aki: bool = True,
    rsa_bits: int | None = None,
    key_usage: str = "digital_signature",
    subject: x509.Name | None = None,
) -> devcerts.Issued:
    now = dt.datetime.now(dt.UTC)
    key: Any = rsa.generate_private_key(65537, rsa_bits) if rsa_bits else devcerts.new_key()
    b = (
        x509.CertificateBuilder()
        .subject_name(subject or devcerts.name(cn, ou="crafted"))
        .issuer_name(root.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - devcerts.DAY)
        .not_valid_after(now + 30 * devcerts.DAY)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(f"spiffe://dev.local/{cn}")]
            ),
            critical=False,
        )
    )
    if aki:
        b = b.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root.key.public_key()),
            critical=False,
        )
    if key_usage == "digital_signature":
        usage = x509.KeyUsage(True, False, False, False, False, False, False, False, False)
    elif key_usage == "sign_and_cert_sign":
        usage = x509.KeyUsage(True, False, False, False, False, True, False, False, False)
    else:
        usage = x509.KeyUsage(False, False, False, False, False, True, False, False, False)
    b = b.add_extension(usage, critical=True)
    if eku is not None:
        b = b.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    return devcerts.Issued(b.sign(root.key, hashes.SHA256()), key)


def write_cases(root: devcerts.Issued, out: Path) -> Path:
    """Write every profile case as `<name>.pem/.key` into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    for name, (kwargs, _, _) in PROFILE_CASES.items():
        if not (out / f"{name}.pem").exists():
            devcerts.write_issued(out, name, craft(root, name, **kwargs), p12=False)
    return out
