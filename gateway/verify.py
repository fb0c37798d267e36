"""Client chain verification on `cryptography`: the verdict behind `explain` and the strict profile.

`verify_chain` reproduces, step by step and with a reason from the fixed set, what OpenSSL's
handshake check decides (chain to a CA of the trust bundle, EKU of every certificate in the
chain, the leaf's CRL, then signatures and validity windows, in OpenSSL's order), and with
`profile="strict"` adds the rules OpenSSL does not enforce: the leaf must carry each required
EKU, must not be a CA, keys must be strong, key identifiers present; finally the chain must pass
`cryptography`'s RFC 5280 / Web PKI verifier."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509 import verification as xv
from cryptography.x509.oid import ExtendedKeyUsageOID, PublicKeyAlgorithmOID

from gateway import crl as crls
from gateway.config import EKU_NAMES
from gateway.reasons import HandshakeReason as R

CLIENT_AUTH = ExtendedKeyUsageOID.CLIENT_AUTH
MAX_DEPTH = 10
MIN_RSA_BITS = 2048
MIN_EC_BITS = 256

CertsIn = bytes | x509.Certificate | Iterable[bytes | x509.Certificate]
Profile = Literal["openssl", "strict"]


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


def _certs(value: CertsIn | None) -> list[x509.Certificate]:
    if value is None:
        return []
    if isinstance(value, x509.Certificate):
        return [value]
    if isinstance(value, bytes | bytearray):
        return load_certs(bytes(value)) if value else []
    out: list[x509.Certificate] = []
    for item in value:
        out += _certs(item)
    return out


def _crls(
    value: bytes | Iterable[x509.CertificateRevocationList] | None,
) -> list[x509.CertificateRevocationList]:
    if value is None:
        return []
    if isinstance(value, bytes | bytearray):
        return crls.parse_crls(bytes(value))
    return list(value)


def describe(cert: x509.Certificate) -> str:
    """A short name for messages: the CN, else the whole subject."""
    attrs = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    value = attrs[0].value if attrs else cert.subject.rfc4514_string()
    return repr(value.decode("utf-8", "replace") if isinstance(value, bytes) else value)


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _self_signed(cert: x509.Certificate) -> bool:
    return cert.issuer == cert.subject and _issued_by(cert, cert)


def _ekus(cert: x509.Certificate) -> list[x509.ObjectIdentifier] | None:
    """The EKUs listed, or None without the extension. Raises ValueError if unreadable."""
    try:
        return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        return None


_EKU_BY_OID = {oid: name for name, oid in EKU_NAMES.items()}


def eku_name(oid: x509.ObjectIdentifier) -> str:
    return _EKU_BY_OID.get(oid.dotted_string, oid.dotted_string)


def _oid(value: str | x509.ObjectIdentifier) -> x509.ObjectIdentifier:
    return value if isinstance(value, x509.ObjectIdentifier) else x509.ObjectIdentifier(value)


class _Fail(Exception):
    def __init__(self, reason: R, step: Step) -> None:
        self.reason = reason
        self.step = step


def _fail(reason: R, name: str, detail: str) -> _Fail:
    return _Fail(reason, Step(name, False, detail))


def verify_chain(
    leaf: bytes | x509.Certificate,
    intermediates: CertsIn | None = (),
    trusted: CertsIn | None = (),
    at: dt.datetime | None = None,
    required_ekus: Sequence[str | x509.ObjectIdentifier] = (CLIENT_AUTH,),
    crls: bytes | Iterable[x509.CertificateRevocationList] | None = None,
    *,
    profile: Profile = "strict",
    max_depth: int = MAX_DEPTH,
) -> Verdict:
    """Verify a client certificate chain; PEM or DER bytes (or parsed objects) in.

    `trusted` is the trust bundle (client_ca), `intermediates` what the client sent, `crls` the
    listener's CRLs (None: no revocation check), `at` the moment (default now), `max_depth`
    the most intermediates a chain may have. `profile` "openssl" follows the handshake's
    checks; "strict" adds the profile rules. Every input gets a verdict: nothing raises."""
    steps: list[Step] = []
    # certificate times have whole seconds: a fraction past notAfter is still inside it
    at = (at or dt.datetime.now(dt.UTC)).replace(microsecond=0)
    try:
        try:
            leaf_cert = _certs(leaf)[0]
            inter = _certs(intermediates)
            anchors = _certs(trusted)
            crl_list = _crls(crls) if crls is not None else None
        except (ValueError, IndexError) as exc:
            raise _fail(R.BAD_CERT, "parse", f"cannot parse the input: {exc}") from None
        steps.append(
            Step(
                "parse",
                True,
                f"leaf {describe(leaf_cert)}, {len(inter)} intermediate(s) sent, {len(anchors)} trusted CA(s)",
            )
        )
        path, bad_sig = _build(leaf_cert, inter, anchors, max_depth)
        steps.append(
            Step("chain", True, " -> ".join(describe(c) for c in path) + " (trust anchor)")
        )
        _openssl_eku(path, steps, [_oid(e) for e in required_ekus])
        _key_level(path, steps)
        if crl_list is not None:
            _revocation(path, crl_list, anchors, at, steps)
        _signatures_and_times(path, bad_sig, at, steps)
        if profile == "strict":
            required = [_oid(e) for e in required_ekus]
            _strict(path, inter, anchors, at, required, max_depth, steps)
    except _Fail as fail:
        steps.append(fail.step)
        return Verdict(False, fail.reason, tuple(steps))
    except Exception as exc:  # a certificate cryptography cannot read (duplicate extensions...)
        steps.append(Step("parse", False, f"unreadable certificate: {type(exc).__name__}: {exc}"))
        return Verdict(False, R.BAD_CERT, tuple(steps))
    return Verdict(True, None, tuple(steps), tuple(path))


MAX_CANDIDATES = 256  # issuer candidates tried while building one chain (pathological graphs)


def _build(
    leaf: x509.Certificate,
    inter: list[x509.Certificate],
    anchors: list[x509.Certificate],
    max_depth: int = MAX_DEPTH,
) -> tuple[list[x509.Certificate], x509.Certificate | None]:
    """Issuer by name up to a CA of the trust bundle, as OpenSSL builds it with partial chains
    allowed (the gateway's contexts): first through issuers whose signatures verify, backtracking from dead ends (a
    cross-signed CA, an alternative chain); else along names alone, to report the first
    certificate whose signature does not verify. Returns the path and that certificate."""
    pool = anchors + [c for c in inter if c not in anchors]
    budget = [MAX_CANDIDATES]

    def walk(path: list[x509.Certificate]) -> list[x509.Certificate] | None:
        cur = path[-1]
        if cur in anchors:  # a trust anchor as listed (partial chains)
            return path
        if cur.issuer == cur.subject and (cur in anchors or _self_signed(cur)):
            return path if cur in anchors else None
        if _depth(path) > max_depth:  # cur would be one intermediate too many
            return None
        for nxt in pool:
            if nxt.subject != cur.issuer or nxt in path or budget[0] <= 0:
                continue
            budget[0] -= 1
            if _issued_by(cur, nxt) and (found := walk([*path, nxt])) is not None:
                return found
        return None

    found = walk([leaf])
    if found is not None:
        return found, None
    return _build_by_name(leaf, inter, anchors, pool, max_depth)


def _depth(path: list[x509.Certificate]) -> int:
    """Intermediates in `path` after the leaf, the self-issued ones not counted (RFC 5280
    4.2.1.9: a CA's re-keying certificate does not lengthen a path)."""
    return sum(1 for c in path[1:] if c.issuer != c.subject)


def _build_by_name(
    leaf: x509.Certificate,
    inter: list[x509.Certificate],
    anchors: list[x509.Certificate],
    pool: list[x509.Certificate],
    max_depth: int,
) -> tuple[list[x509.Certificate], x509.Certificate | None]:
    """No chain verifies: follow names (a verifying issuer first) to say what is wrong."""
    path = [leaf]
    bad_sig: x509.Certificate | None = None
    cur = leaf
    for _ in range(max_depth + 2):
        if cur in anchors:
            return path, bad_sig
        if cur.issuer == cur.subject and (cur in anchors or _self_signed(cur)):
            if cur in anchors:
                return path, bad_sig
            raise _fail(
                R.UNKNOWN_CA, "chain", f"{describe(cur)} is self-signed and not in the trust bundle"
            )
        named = [c for c in pool if c.subject == cur.issuer and c not in path]
        if not named:
            where = (
                "the trust bundle or the intermediates sent"
                if inter
                else ("the trust bundle (and the client sent no intermediates)")
            )
            raise _fail(
                R.UNKNOWN_CA,
                "chain",
                f"no issuer {cur.issuer.rfc4514_string()!r} of {describe(cur)} in {where}",
            )
        good = [c for c in named if _issued_by(cur, c)]
        nxt = (good or named)[0]
        if not good and bad_sig is None:
            bad_sig = cur
        path.append(nxt)
        cur = nxt
    raise _fail(R.BAD_CERT, "chain", f"no chain within {max_depth} intermediate certificates")


def _openssl_eku(
    path: list[x509.Certificate], steps: list[Step], purposes: Sequence[x509.ObjectIdentifier]
) -> None:
    """OpenSSL's purpose check for the purposes asked for (the gateway's handshake: clientAuth):
    a certificate that lists EKUs must list each of them, and the leaf's keyUsage (when
    present) must allow signing or key agreement."""
    for cert in path[:-1]:
        try:
            ekus = _ekus(cert)
        except ValueError as exc:
            raise _fail(
                R.BAD_CERT, "eku", f"{describe(cert)}: unreadable extension: {exc}"
            ) from None
        missing = [p for p in purposes if ekus and p not in ekus]
        if missing:
            names = ", ".join(eku_name(e) for e in ekus or ())
            raise _fail(
                R.BAD_EKU,
                "eku",
                f"{describe(cert)} lists extendedKeyUsage {names} without "
                + ", ".join(eku_name(p) for p in missing),
            )
    try:
        usage = path[0].extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    if usage is not None and not (usage.digital_signature or usage.key_agreement):
        raise _fail(
            R.BAD_EKU,
            "eku",
            f"{describe(path[0])} has a keyUsage without digitalSignature or keyAgreement: "
            "unusable for TLS authentication",
        )
    ekus = _ekus(path[0])
    steps.append(
        Step(
            "eku",
            True,
            "leaf has no extendedKeyUsage extension (OpenSSL accepts it)"
            if ekus is None
            else "leaf lists " + ", ".join(eku_name(e) for e in ekus),
        )
    )


def _key_level(path: list[x509.Certificate], steps: list[Step]) -> None:
    """OpenSSL security level 2 (the gateway's contexts): RSA/DSA >= 2048 bits, EC >= 224."""
    for i, cert in enumerate(path):
        key = cert.public_key()
        bits = None
        if isinstance(key, rsa.RSAPublicKey) and key.key_size < 2048:
            bits = f"{key.key_size}-bit RSA"
        elif _is_dsa(cert) and (size := getattr(key, "key_size", 0)) < 2048:
            bits = f"{size}-bit DSA"
        elif isinstance(key, ec.EllipticCurvePublicKey) and key.curve.key_size < 224:
            bits = f"{key.curve.name}"
        if bits:
            what = "EE_KEY_TOO_SMALL" if i == 0 else "CA_KEY_TOO_SMALL"
            raise _fail(
                R.BAD_CERT,
                "key",
                f"{describe(cert)} has a {bits} key, below OpenSSL security level 2 ({what})",
            )
    steps.append(Step("key", True, "key sizes meet OpenSSL security level 2"))


def _revocation(
    path: list[x509.Certificate],
    crl_list: list[x509.CertificateRevocationList],
    anchors: list[x509.Certificate],
    at: dt.datetime,
    steps: list[Step],
) -> None:
    """As the handshake checks: every certificate of the chain (the root against its own CRL)
    when every CA of the bundle has a CRL, else the leaf alone."""
    if len(path) < 2:
        steps.append(Step("revocation", True, "the leaf is itself a trusted root"))
        return
    whole = crls.covers(crl_list, anchors)
    leaf_detail = ""
    for i in range(len(path)) if whole else range(1):
        cert, issuer = path[i], path[min(i + 1, len(path) - 1)]
        status = crls.status(cert, issuer, crl_list, at)
        detail = status.detail if i == 0 else f"{describe(cert)}: {status.detail}"
        if status.state == "revoked":
            raise _fail(R.REVOKED, "revocation", detail)
        if status.state != "good":
            raise _fail(R.CRL_ERROR, "revocation", detail)
        leaf_detail = leaf_detail or detail
    steps.append(
        Step(
            "revocation",
            True,
            f"no certificate of the chain is listed in its issuer's CRL ({len(path)} checked)"
            if whole
            else f"{leaf_detail} (only the leaf: not every CA of the bundle has a CRL)",
        )
    )


def _signatures_and_times(
    path: list[x509.Certificate],
    bad_sig: x509.Certificate | None,
    at: dt.datetime,
    steps: list[Step],
) -> None:
    """Top down, as OpenSSL's internal_verify: each signature, then each validity window."""
    for i in range(len(path) - 1, -1, -1):
        cert = path[i]
        if cert is bad_sig:
            raise _fail(
                R.BAD_SIGNATURE,
                "signature",
                f"the signature on {describe(cert)} does not verify with the key of "
                f"{describe(path[i + 1])}",
            )
        if cert.not_valid_before_utc > at:
            raise _fail(
                R.NOT_YET_VALID,
                "validity",
                f"{describe(cert)} is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC",
            )
        if cert.not_valid_after_utc < at:
            raise _fail(
                R.EXPIRED,
                "validity",
                f"{describe(cert)} expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC",
            )
    leaf = path[0]
    steps.append(Step("signature", True, "every signature in the chain verifies"))
    steps.append(
        Step(
            "validity",
            True,
            f"valid {leaf.not_valid_before_utc:%Y-%m-%d} .. {leaf.not_valid_after_utc:%Y-%m-%d} "
            f"({(leaf.not_valid_after_utc - at).days} days left), chain valid too",
        )
    )


def _is_dsa(cert: x509.Certificate) -> bool:
    """By the key's algorithm identifier: cryptography deprecates its DSA key classes."""
    return cert.public_key_algorithm_oid == PublicKeyAlgorithmOID.DSA


def _weak_key(cert: x509.Certificate) -> str | None:
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        return f"RSA {key.key_size} bits (minimum {MIN_RSA_BITS})"
    if isinstance(key, rsa.RSAPublicKey) and key.key_size % 8:
        return f"RSA {key.key_size} bits (not a whole number of bytes)"
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.key_size < MIN_EC_BITS:
        return f"EC {key.curve.name} (minimum {MIN_EC_BITS} bits)"
    if _is_dsa(cert):
        return "DSA keys are not accepted"
    return None


def _has(cert: x509.Certificate, ext: type[x509.ExtensionType]) -> bool:
    try:
        cert.extensions.get_extension_for_class(ext)
    except x509.ExtensionNotFound:
        return False
    return True


def _strict(
    path: list[x509.Certificate],
    inter: list[x509.Certificate],
    anchors: list[x509.Certificate],
    at: dt.datetime,
    required: list[x509.ObjectIdentifier],
    max_depth: int,
    steps: list[Step],
) -> None:
    leaf = path[0]
    _strict_leaf(leaf, path, required)
    _strict_chain(path)

    def eku_ok(_policy: object, _cert: x509.Certificate, ext: x509.ExtendedKeyUsage | None) -> None:
        if ext is None or any(e not in ext for e in required):
            raise ValueError("required extendedKeyUsage missing")

    def ca_eku_ok(
        _policy: object, _cert: x509.Certificate, ext: x509.ExtendedKeyUsage | None
    ) -> None:  # a CA that lists EKUs constrains its chain to them (as OpenSSL does)
        if ext is not None and ANY_EKU not in ext and any(e not in ext for e in required):
            raise ValueError("a CA's extendedKeyUsage excludes the purpose")

    ee = xv.ExtensionPolicy.webpki_defaults_ee().may_be_present(
        x509.SubjectAlternativeName, xv.Criticality.AGNOSTIC, None
    )
    if required:
        ee = ee.require_present(x509.ExtendedKeyUsage, xv.Criticality.AGNOSTIC, eku_ok)
    else:
        ee = ee.may_be_present(x509.ExtendedKeyUsage, xv.Criticality.AGNOSTIC, None)

    def ca_usage_ok(_policy: object, _cert: x509.Certificate, ext: x509.KeyUsage | None) -> None:
        if ext is not None and not ext.key_cert_sign:  # absent: RFC 5280 6.1 lets it pass
            raise ValueError("a CA's keyUsage lacks keyCertSign")

    ca = (
        xv.ExtensionPolicy.webpki_defaults_ca()
        .may_be_present(x509.ExtendedKeyUsage, xv.Criticality.AGNOSTIC, ca_eku_ok)
        .may_be_present(x509.KeyUsage, xv.Criticality.AGNOSTIC, ca_usage_ok)
    )
    verifier = (
        xv.PolicyBuilder()
        .store(xv.Store(anchors))
        .time(at)
        .max_chain_depth(max_depth)
        .extension_policies(ca_policy=ca, ee_policy=ee)
        .build_client_verifier()
    )
    try:
        verifier.verify(leaf, [*path[1:-1], *(c for c in inter if c not in path)])
    except xv.VerificationError as exc:
        message = (
            str(exc).split(" (encountered processing", 1)[0].removeprefix("validation failed: ")
        )
        raise _fail(R.BAD_CERT, "profile", f"RFC 5280 / Web PKI profile: {message}") from None
    steps.append(
        Step(
            "profile",
            True,
            "strict profile: EKU, CA flags, key strength, key identifiers and the RFC 5280 profile hold",
        )
    )


ANY_EKU = ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE


def _strict_leaf(
    leaf: x509.Certificate, path: list[x509.Certificate], required: list[x509.ObjectIdentifier]
) -> None:
    """The end-entity rules OpenSSL lets pass."""
    ekus = _ekus(leaf)
    if ekus is None and required:
        raise _fail(
            R.BAD_EKU,
            "profile",
            "the leaf has no extendedKeyUsage extension; the strict profile requires "
            + ", ".join(eku_name(e) for e in required),
        )
    missing = [eku_name(e) for e in required if e not in (ekus or [])]
    if missing:
        raise _fail(R.BAD_EKU, "profile", f"the leaf's extendedKeyUsage lacks {', '.join(missing)}")
    if required and ANY_EKU in (ekus or []):
        raise _fail(
            R.BAD_EKU, "profile", "the leaf lists anyExtendedKeyUsage: its purposes are unbounded"
        )
    try:
        bc = leaf.extensions.get_extension_for_class(x509.BasicConstraints).value
        if bc.ca:
            raise _fail(
                R.BAD_CERT, "profile", "the leaf is marked as a CA (basicConstraints CA:TRUE)"
            )
    except x509.ExtensionNotFound:
        pass
    if not leaf.subject:
        try:
            san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        except x509.ExtensionNotFound:
            san = None
        if san is None or not san.critical:
            raise _fail(
                R.BAD_CERT,
                "profile",
                "the leaf has an empty subject and no critical subjectAltName (RFC 5280 4.2.1.6)",
            )
    if not _has(leaf, x509.SubjectAlternativeName) and any(
        _has(ca, x509.NameConstraints) for ca in path[1:]
    ):  # OpenSSL then holds the CN to the DNS constraints; the RFC 5280 verifier would not
        raise _fail(
            R.BAD_CERT,
            "profile",
            "the leaf has no subjectAltName under a name-constrained CA: its names cannot be "
            "checked against the constraints",
        )


def _strict_chain(path: list[x509.Certificate]) -> None:
    """Rules for every certificate of the chain: keys, serials, key identifiers, and the
    extensions RFC 5280 requires to be critical."""
    root = path[-1]
    for cert in path:
        weak = _weak_key(cert)
        if weak:
            raise _fail(R.BAD_CERT, "profile", f"{describe(cert)} has a weak key: {weak}")
        serial = cert.serial_number
        # positive, at most 20 octets (RFC 5280 4.1.2.2); a trust anchor is trusted as it is
        if cert is not root and (serial <= 0 or serial.bit_length() > 159):
            raise _fail(
                R.BAD_CERT,
                "profile",
                f"{describe(cert)} has serial number {serial}: RFC 5280 requires a positive "
                "one of at most 20 octets",
            )
        if cert is not root and not _has(cert, x509.AuthorityKeyIdentifier):
            raise _fail(R.BAD_CERT, "profile", f"{describe(cert)} has no authorityKeyIdentifier")
    for cert in path[1:]:
        if not _has(cert, x509.SubjectKeyIdentifier):
            raise _fail(R.BAD_CERT, "profile", f"CA {describe(cert)} has no subjectKeyIdentifier")
        for ext_type in (x509.NameConstraints, x509.PolicyConstraints):
            try:
                ext = cert.extensions.get_extension_for_class(ext_type)
            except x509.ExtensionNotFound:
                continue
            if not ext.critical:
                raise _fail(
                    R.BAD_CERT,
                    "profile",
                    f"CA {describe(cert)} has a non-critical {ext.oid._name} extension "
                    "(RFC 5280 requires it critical)",
                )
    if _self_signed(root):
        _strict_anchor_aki(root)


def _strict_anchor_aki(root: x509.Certificate) -> None:
    """A self-signed root's authorityKeyIdentifier, when present, names its own key and
    nothing else (Web PKI)."""
    try:
        aki = root.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except x509.ExtensionNotFound:
        return
    try:
        ski = root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        ski = None
    if (
        aki.key_identifier is None
        or aki.authority_cert_issuer is not None
        or aki.authority_cert_serial_number is not None
        or (ski is not None and aki.key_identifier != ski)
    ):
        raise _fail(
            R.BAD_CERT,
            "profile",
            f"root {describe(root)} has an authorityKeyIdentifier that is not its own key "
            "identifier alone",
        )
