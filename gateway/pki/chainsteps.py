"""What every step of a chain verification shares: the step and verdict records, the
failure that ends a verification with a reason, and facts read off a certificate (its short
name, its issuer's signature, its EKUs and extensions). Pure: no I/O."""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import ExtendedKeyUsageOID, PublicKeyAlgorithmOID

from gateway.base.reasons import HandshakeReason as R
from gateway.config.model import EKU_NAMES

CLIENT_AUTH = ExtendedKeyUsageOID.CLIENT_AUTH
ANY_EKU = ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE
MAX_DEPTH = 10


@dataclass(frozen=True)
class Step:
    """One check of the verification: what was checked and what came out."""

    name: str  # parse | chain | eku | revocation | signature | validity | profile
    ok: bool
    detail: str


@dataclass(frozen=True)
class Verdict:
    """`ok`, the reason from the fixed set when not, every step taken, and the chain built."""

    ok: bool
    reason: R | None
    steps: tuple[Step, ...]
    chain: tuple[x509.Certificate, ...] = ()

    @property
    def detail(self) -> str:
        failed = [s for s in self.steps if not s.ok]
        return failed[-1].detail if failed else "verified"


def load_certs(data: bytes) -> list[x509.Certificate]:
    """Every certificate in `data`: PEM (any number) or one DER. Raises ValueError."""
    if b"-----BEGIN" in data:
        return x509.load_pem_x509_certificates(data)
    return [x509.load_der_x509_certificate(data)]


def describe(cert: x509.Certificate) -> str:
    """A short name for messages: the CN, else the whole subject."""
    attrs = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    value = attrs[0].value if attrs else cert.subject.rfc4514_string()
    return repr(value.decode("utf-8", "replace") if isinstance(value, bytes) else value)


def issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def self_signed(cert: x509.Certificate) -> bool:
    return cert.issuer == cert.subject and issued_by(cert, cert)


def ekus(cert: x509.Certificate) -> list[x509.ObjectIdentifier] | None:
    """The EKUs listed, or None without the extension. Raises ValueError if unreadable."""
    try:
        return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        return None


_EKU_BY_OID = {oid: name for name, oid in EKU_NAMES.items()}


def eku_name(oid: x509.ObjectIdentifier) -> str:
    return _EKU_BY_OID.get(oid.dotted_string, oid.dotted_string)


def oid(value: str | x509.ObjectIdentifier) -> x509.ObjectIdentifier:
    return value if isinstance(value, x509.ObjectIdentifier) else x509.ObjectIdentifier(value)


class Fail(Exception):
    def __init__(self, reason: R, step: Step) -> None:
        self.reason = reason
        self.step = step


def fail(reason: R, name: str, detail: str) -> Fail:
    return Fail(reason, Step(name, False, detail))


def is_dsa(cert: x509.Certificate) -> bool:
    """By the key's algorithm identifier: cryptography deprecates its DSA key classes."""
    return cert.public_key_algorithm_oid == PublicKeyAlgorithmOID.DSA


def has(cert: x509.Certificate, ext: type[x509.ExtensionType]) -> bool:
    try:
        cert.extensions.get_extension_for_class(ext)
    except x509.ExtensionNotFound:
        return False
    return True
