"""`Identity`: what a client certificate says about its holder, parsed once from DER."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from gateway.base.bounded import Bounded

ATTRIBUTE_NAMES: dict[x509.ObjectIdentifier, str] = {
    NameOID.COMMON_NAME: "CN",
    NameOID.ORGANIZATION_NAME: "O",
    NameOID.ORGANIZATIONAL_UNIT_NAME: "OU",
    NameOID.COUNTRY_NAME: "C",
    NameOID.LOCALITY_NAME: "L",
    NameOID.STATE_OR_PROVINCE_NAME: "ST",
    NameOID.EMAIL_ADDRESS: "emailAddress",
    NameOID.SERIAL_NUMBER: "serialNumber",
}


@dataclass(frozen=True)
class Identity:
    """A parsed client leaf. Fields that could not be read are empty, never guessed."""

    der: bytes
    sha256: str  # hex of the DER
    spki_sha256: str  # hex of the SubjectPublicKeyInfo DER
    serial: str  # lower-case hex, no leading zeros
    subject: str  # RFC 4514 text
    issuer: str
    subject_attrs: dict[str, tuple[str, ...]] = field(default_factory=dict)
    issuer_attrs: dict[str, tuple[str, ...]] = field(default_factory=dict)
    san_dns: tuple[str, ...] = ()
    san_uri: tuple[str, ...] = ()
    san_email: tuple[str, ...] = ()
    san_ip: tuple[str, ...] = ()
    has_eku: bool = False  # whether the extendedKeyUsage extension is present
    ekus: tuple[str, ...] = ()  # dotted OIDs
    not_before: float = 0.0  # POSIX seconds
    not_after: float = 0.0
    parse_errors: tuple[str, ...] = ()

    @property
    def der_b64(self) -> str:
        return base64.b64encode(self.der).decode("ascii")

    def attrs(self, which: str) -> dict[str, tuple[str, ...]]:
        return self.subject_attrs if which == "subject" else self.issuer_attrs


def _name_attrs(
    n: x509.Name, errors: list[str], where: str
) -> tuple[str, dict[str, tuple[str, ...]]]:
    attrs: dict[str, list[str]] = {}
    for attr in n:
        key = ATTRIBUTE_NAMES.get(attr.oid)
        if key is None:
            continue
        value = attr.value
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        attrs.setdefault(key, []).append(value)
    try:
        text = n.rfc4514_string()
    except ValueError as exc:
        errors.append(f"{where}: {exc}")
        text = ""
    return text, {k: tuple(v) for k, v in attrs.items()}


def parse_identity(der: bytes) -> Identity:
    """Parse a DER certificate; raises ValueError only when it is not a certificate at all."""
    cert = x509.load_der_x509_certificate(der)
    errors: list[str] = []
    try:
        spki = cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        spki_sha256 = hashlib.sha256(spki).hexdigest()
    except (ValueError, TypeError) as exc:
        errors.append(f"public key: {exc}")
        spki_sha256 = ""
    try:
        subject, subject_attrs = _name_attrs(cert.subject, errors, "subject")
    except ValueError as exc:
        errors.append(f"subject: {exc}")
        subject, subject_attrs = "", {}
    try:
        issuer, issuer_attrs = _name_attrs(cert.issuer, errors, "issuer")
    except ValueError as exc:
        errors.append(f"issuer: {exc}")
        issuer, issuer_attrs = "", {}
    dns: tuple[str, ...] = ()
    uri: tuple[str, ...] = ()
    email: tuple[str, ...] = ()
    ip: tuple[str, ...] = ()
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = tuple(san.get_values_for_type(x509.DNSName))
        uri = tuple(san.get_values_for_type(x509.UniformResourceIdentifier))
        email = tuple(san.get_values_for_type(x509.RFC822Name))
        ip = tuple(str(a) for a in san.get_values_for_type(x509.IPAddress))
    except x509.ExtensionNotFound:
        pass
    except ValueError as exc:
        errors.append(f"subjectAltName: {exc}")
    has_eku = False
    ekus: tuple[str, ...] = ()
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        has_eku = True
        ekus = tuple(o.dotted_string for o in eku)
    except x509.ExtensionNotFound:
        pass
    except ValueError as exc:
        has_eku = True  # present but unreadable: strict EKU checks fail closed
        errors.append(f"extendedKeyUsage: {exc}")
    return Identity(
        der=der,
        sha256=hashlib.sha256(der).hexdigest(),
        spki_sha256=spki_sha256,
        serial=format(cert.serial_number, "x"),
        subject=subject,
        issuer=issuer,
        subject_attrs=subject_attrs,
        issuer_attrs=issuer_attrs,
        san_dns=dns,
        san_uri=uri,
        san_email=email,
        san_ip=ip,
        has_eku=has_eku,
        ekus=ekus,
        not_before=cert.not_valid_before_utc.timestamp(),
        not_after=cert.not_valid_after_utc.timestamp(),
        parse_errors=tuple(errors),
    )


class IdentityCache:
    """Parsed identities keyed by the DER bytes, shared across connections (bounded)."""

    def __init__(self, maxsize: int = 4096) -> None:
        self._items: Bounded[bytes, Identity] = Bounded(maxsize)

    def get(self, der: bytes) -> Identity:
        found = self._items.get(der)
        if found is None:
            found = self._items.put(der, parse_identity(der))
        return found

    def __len__(self) -> int:
        return len(self._items)
