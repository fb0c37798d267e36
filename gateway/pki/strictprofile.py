"""The strict profile (`verify_profile: strict`, the default): the rules OpenSSL lets pass,
checked after OpenSSL accepted a chain, then `cryptography`'s RFC 5280 verifier. It can only
take away from OpenSSL's verdict (tests/unit/test_strict_vs_openssl.py)."""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509 import verification as xv

from gateway.base.reasons import HandshakeReason as R
from gateway.pki.chainsteps import (
    ANY_EKU,
    Step,
    describe,
    eku_name,
    ekus,
    fail,
    has,
    is_dsa,
    self_signed,
)

MIN_RSA_BITS = 2048
MIN_EC_BITS = 256


def _weak_key(cert: x509.Certificate) -> str | None:
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        return f"RSA {key.key_size} bits (minimum {MIN_RSA_BITS})"
    if isinstance(key, rsa.RSAPublicKey) and key.key_size % 8:
        return f"RSA {key.key_size} bits (not a whole number of bytes)"
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.key_size < MIN_EC_BITS:
        return f"EC {key.curve.name} (minimum {MIN_EC_BITS} bits)"
    if is_dsa(cert):
        return "DSA keys are not accepted"
    return None


def strict(
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
        raise fail(R.BAD_CERT, "profile", f"RFC 5280 / Web PKI profile: {message}") from None
    steps.append(
        Step(
            "profile",
            True,
            "strict profile: EKU, CA flags, key strength, key identifiers and the RFC 5280 profile hold",
        )
    )


def _strict_leaf(
    leaf: x509.Certificate, path: list[x509.Certificate], required: list[x509.ObjectIdentifier]
) -> None:
    """The end-entity rules OpenSSL lets pass."""
    listed = ekus(leaf)
    if listed is None and required:
        raise fail(
            R.BAD_EKU,
            "profile",
            "the leaf has no extendedKeyUsage extension; the strict profile requires "
            + ", ".join(eku_name(e) for e in required),
        )
    missing = [eku_name(e) for e in required if e not in (listed or [])]
    if missing:
        raise fail(R.BAD_EKU, "profile", f"the leaf's extendedKeyUsage lacks {', '.join(missing)}")
    if required and ANY_EKU in (listed or []):
        raise fail(
            R.BAD_EKU, "profile", "the leaf lists anyExtendedKeyUsage: its purposes are unbounded"
        )
    try:
        bc = leaf.extensions.get_extension_for_class(x509.BasicConstraints).value
        if bc.ca:
            raise fail(
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
            raise fail(
                R.BAD_CERT,
                "profile",
                "the leaf has an empty subject and no critical subjectAltName (RFC 5280 4.2.1.6)",
            )
    _strict_cn_under_constraints(leaf, path)


def _dns_subtrees(ca: x509.Certificate) -> bool:
    try:
        nc = ca.extensions.get_extension_for_class(x509.NameConstraints).value
    except x509.ExtensionNotFound:
        return False
    trees = [*(nc.permitted_subtrees or ()), *(nc.excluded_subtrees or ())]
    return any(isinstance(t, x509.DNSName) for t in trees)


def _strict_cn_under_constraints(leaf: x509.Certificate, path: list[x509.Certificate]) -> None:
    """A leaf's names must be where the RFC 5280 verifier checks them against name
    constraints: in its subjectAltName. OpenSSL also holds a CN to DNS constraints when the
    SAN has no DNS name; the RFC 5280 verifier never looks at the CN, so such a leaf is
    refused here rather than judged by half the rules."""
    try:
        sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        sans = None
    constrained = [ca for ca in path[1:] if has(ca, x509.NameConstraints)]
    if sans is None and constrained:
        raise fail(
            R.BAD_CERT,
            "profile",
            "the leaf has no subjectAltName under a name-constrained CA: its names cannot be "
            "checked against the constraints",
        )
    has_cn = bool(leaf.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME))
    if (
        sans is not None
        and has_cn
        and not sans.get_values_for_type(x509.DNSName)
        and any(_dns_subtrees(ca) for ca in constrained)
    ):
        raise fail(
            R.BAD_CERT,
            "profile",
            "the leaf's CN falls under DNS name constraints but its subjectAltName has no DNS "
            "name: name the host in the subjectAltName",
        )


def _strict_chain(path: list[x509.Certificate]) -> None:
    """Rules for every certificate of the chain: keys, serials, key identifiers, and the
    extensions RFC 5280 requires to be critical."""
    root = path[-1]
    for cert in path:
        weak = _weak_key(cert)
        if weak:
            raise fail(R.BAD_CERT, "profile", f"{describe(cert)} has a weak key: {weak}")
        serial = cert.serial_number
        # positive, at most 20 octets (RFC 5280 4.1.2.2); a trust anchor is trusted as it is
        if cert is not root and (serial <= 0 or serial.bit_length() > 159):
            raise fail(
                R.BAD_CERT,
                "profile",
                f"{describe(cert)} has serial number {serial}: RFC 5280 requires a positive "
                "one of at most 20 octets",
            )
        if cert is not root and not has(cert, x509.AuthorityKeyIdentifier):
            raise fail(R.BAD_CERT, "profile", f"{describe(cert)} has no authorityKeyIdentifier")
    for cert in path[1:]:
        if not has(cert, x509.SubjectKeyIdentifier):
            raise fail(R.BAD_CERT, "profile", f"CA {describe(cert)} has no subjectKeyIdentifier")
        for ext_type in (x509.NameConstraints, x509.PolicyConstraints):
            try:
                ext = cert.extensions.get_extension_for_class(ext_type)
            except x509.ExtensionNotFound:
                continue
            if not ext.critical:
                raise fail(
                    R.BAD_CERT,
                    "profile",
                    f"CA {describe(cert)} has a non-critical {ext.oid._name} extension "
                    "(RFC 5280 requires it critical)",
                )
    if self_signed(root):
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
        raise fail(
            R.BAD_CERT,
            "profile",
            f"root {describe(root)} has an authorityKeyIdentifier that is not its own key "
            "identifier alone",
        )
