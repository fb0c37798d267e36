"""CRLs: read PEM/DER files, check them against the trust bundle, and find a cert's status."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtensionOID

from gateway.config.listener import CrlUrl, TlsConfig

_PEM_BEGIN = b"-----BEGIN X509 CRL-----"
_PEM_END = b"-----END X509 CRL-----"


def source_path(source: str | CrlUrl) -> str:
    """The local file behind a CRL source: the file itself, or a URL's cache."""
    return source.cache if isinstance(source, CrlUrl) else source


def parse_crls(data: bytes) -> list[x509.CertificateRevocationList]:
    """Every CRL in `data`: one DER CRL, or any number of PEM blocks. Raises ValueError."""
    if _PEM_BEGIN not in data:
        return [x509.load_der_x509_crl(data)]
    crls = []
    rest = data
    while _PEM_BEGIN in rest:
        start = rest.index(_PEM_BEGIN)
        end = rest.find(_PEM_END, start)
        if end < 0:
            raise ValueError("a PEM CRL block has no END line")
        end += len(_PEM_END)
        crls.append(x509.load_pem_x509_crl(rest[start:end]))
        rest = rest[end:]
    return crls


def to_pem(crls: list[x509.CertificateRevocationList]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in crls)


def next_update(crl: x509.CertificateRevocationList) -> dt.datetime | None:
    return crl.next_update_utc


def issuer_name(crl: x509.CertificateRevocationList) -> str:
    attrs = crl.issuer.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    value = attrs[0].value if attrs else crl.issuer.rfc4514_string()
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def signed_by(crl: x509.CertificateRevocationList, ca: x509.Certificate) -> bool:
    """True when `ca` issued this CRL (same name and the signature verifies with its key)."""
    if crl.issuer != ca.subject:
        return False
    try:
        return crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


@dataclass(frozen=True)
class Status:
    """A certificate's revocation status from the CRLs at hand."""

    state: str  # good | revoked | no_crl | crl_expired | crl_not_yet_valid | crl_invalid
    detail: str


def status(
    cert: x509.Certificate,
    issuer: x509.Certificate,
    crls: list[x509.CertificateRevocationList],
    at: dt.datetime,
) -> Status:
    """Look `cert` up in the CRL its issuer signed, as OpenSSL's leaf CRL check does."""
    for crl in crls:
        if not signed_by(crl, issuer):
            continue
        problems = rfc5280_problems(crl, issuer)
        if problems:  # (the gateway refuses such a CRL at load; verify_chain may be handed one)
            return Status("crl_invalid", f"the CRL of {issuer_name(crl)!r} {problems[0]}")
        if crl.last_update_utc > at:
            return Status("crl_not_yet_valid", f"the CRL of {issuer_name(crl)!r} is not valid yet")
        nxt = crl.next_update_utc
        if nxt is not None and nxt < at:
            return Status(
                "crl_expired",
                f"the CRL of {issuer_name(crl)!r} expired (nextUpdate {nxt:%Y-%m-%d %H:%M} UTC)",
            )
        revoked = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
        if revoked is not None:
            return Status(
                "revoked",
                f"serial {cert.serial_number:x} revoked on "
                f"{revoked.revocation_date_utc:%Y-%m-%d %H:%M} UTC by {issuer_name(crl)!r}",
            )
        return Status("good", f"not listed in the CRL of {issuer_name(crl)!r}")
    return Status("no_crl", f"no CRL signed by {issuer.subject.rfc4514_string()!r} is configured")


def covers(
    crls: Iterable[x509.CertificateRevocationList], bundle: Sequence[x509.Certificate]
) -> bool:
    """Whether every CA of the trust bundle has a CRL it signed, and every CA that is not a
    self-signed root has its issuer in the bundle too: then every certificate of a chain is
    checked (OpenSSL's VERIFY_CRL_CHECK_CHAIN), else only the leaf. (An issuing CA trusted
    without its root has no CRL OpenSSL could check it against: whole-chain checking would
    fail all of its clients with crl_error.)"""
    crls = list(crls)
    subjects = {ca.subject for ca in bundle}
    return (
        bool(bundle)
        and all(any(signed_by(c, ca) for c in crls) for ca in bundle)
        and all(ca.issuer == ca.subject or ca.issuer in subjects for ca in bundle)
    )


# critical CRL extensions the gateway (and OpenSSL's CRL check) understands
_CRITICAL_OK = {ExtensionOID.ISSUING_DISTRIBUTION_POINT}


def rfc5280_problems(
    crl: x509.CertificateRevocationList, issuer: x509.Certificate | None
) -> list[str]:
    """What makes a CRL unfit to decide revocation (RFC 5280 5.2): no crlNumber or a critical
    one, a critical extension not understood, an issuer whose keyUsage lacks cRLSign."""
    out = []
    try:
        extensions = list(crl.extensions)
    except ValueError as exc:  # duplicate or malformed extensions
        return [f"has unreadable extensions ({exc})"]
    numbers = [e for e in extensions if e.oid == ExtensionOID.CRL_NUMBER]
    if not numbers:
        out.append("has no crlNumber (RFC 5280 requires one in every CRL)")
    elif numbers[0].critical:
        out.append("has its crlNumber marked critical (RFC 5280: never critical)")
    for ext in extensions:
        if ext.critical and ext.oid not in _CRITICAL_OK and ext.oid != ExtensionOID.CRL_NUMBER:
            out.append(
                f"has a critical extension {ext.oid.dotted_string} the gateway does not understand"
            )
    if issuer is not None:
        try:
            usage = issuer.extensions.get_extension_for_class(x509.KeyUsage).value
        except x509.ExtensionNotFound:
            usage = None
        if usage is not None and not usage.crl_sign:
            out.append(f"is signed by {issuer_name(crl)!r}, whose keyUsage lacks cRLSign")
    return out


def has_crls(tls: TlsConfig) -> bool:
    return bool(tls.crl) and tls.client_auth != "none"
