"""Client chain verification on `cryptography`: the verdict behind `explain` and the strict profile.

`verify_chain` reproduces, step by step and with a reason from the fixed set, what OpenSSL's
handshake check decides (chain to a CA of the trust bundle, EKU of every certificate in the
chain, the leaf's CRL, then signatures and validity windows, in OpenSSL's order), and with
`profile="strict"` adds the rules OpenSSL does not enforce (`strictprofile`)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gateway.base.reasons import HandshakeReason as R
from gateway.pki import crl as crls
from gateway.pki.chainsteps import (
    CLIENT_AUTH,
    MAX_DEPTH,
    Fail,
    Step,
    Verdict,
    describe,
    eku_name,
    ekus,
    fail,
    is_dsa,
    issued_by,
    load_certs,
    oid,
    self_signed,
)
from gateway.pki.strictprofile import strict

__all__ = ["CLIENT_AUTH", "MAX_DEPTH", "Step", "Verdict", "eku_name", "load_certs", "verify_chain"]

CertsIn = bytes | x509.Certificate | Iterable[bytes | x509.Certificate]
Profile = Literal["openssl", "strict"]


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
            raise fail(R.BAD_CERT, "parse", f"cannot parse the input: {exc}") from None
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
        _openssl_eku(path, steps, [oid(e) for e in required_ekus])
        _key_level(path, steps)
        if crl_list is not None:
            _revocation(path, crl_list, anchors, at, steps)
        _signatures_and_times(path, bad_sig, at, steps)
        if profile == "strict":
            required = [oid(e) for e in required_ekus]
            strict(path, inter, anchors, at, required, max_depth, steps)
    except Fail as failed:
        steps.append(failed.step)
        return Verdict(False, failed.reason, tuple(steps))
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
        if cur.issuer == cur.subject and (cur in anchors or self_signed(cur)):
            return path if cur in anchors else None
        if _depth(path) > max_depth:  # cur would be one intermediate too many
            return None
        for nxt in pool:
            if nxt.subject != cur.issuer or nxt in path or budget[0] <= 0:
                continue
            budget[0] -= 1
            if issued_by(cur, nxt) and (found := walk([*path, nxt])) is not None:
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
        if cur.issuer == cur.subject and (cur in anchors or self_signed(cur)):
            if cur in anchors:
                return path, bad_sig
            raise fail(
                R.UNKNOWN_CA, "chain", f"{describe(cur)} is self-signed and not in the trust bundle"
            )
        named = [c for c in pool if c.subject == cur.issuer and c not in path]
        if not named:
            where = (
                "the trust bundle or the intermediates sent"
                if inter
                else ("the trust bundle (and the client sent no intermediates)")
            )
            raise fail(
                R.UNKNOWN_CA,
                "chain",
                f"no issuer {cur.issuer.rfc4514_string()!r} of {describe(cur)} in {where}",
            )
        good = [c for c in named if issued_by(cur, c)]
        nxt = (good or named)[0]
        if not good and bad_sig is None:
            bad_sig = cur
        path.append(nxt)
        cur = nxt
    raise fail(R.BAD_CERT, "chain", f"no chain within {max_depth} intermediate certificates")


def _openssl_eku(
    path: list[x509.Certificate], steps: list[Step], purposes: Sequence[x509.ObjectIdentifier]
) -> None:
    """OpenSSL's purpose check for the purposes asked for (the gateway's handshake: clientAuth):
    a certificate that lists EKUs must list each of them, and the leaf's keyUsage (when
    present) must allow signing or key agreement."""
    for cert in path[:-1]:
        try:
            listed = ekus(cert)
        except ValueError as exc:
            raise fail(
                R.BAD_CERT, "eku", f"{describe(cert)}: unreadable extension: {exc}"
            ) from None
        missing = [p for p in purposes if listed and p not in listed]
        if missing:
            names = ", ".join(eku_name(e) for e in listed or ())
            raise fail(
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
        raise fail(
            R.BAD_EKU,
            "eku",
            f"{describe(path[0])} has a keyUsage without digitalSignature or keyAgreement: "
            "unusable for TLS authentication",
        )
    listed = ekus(path[0])
    steps.append(
        Step(
            "eku",
            True,
            "leaf has no extendedKeyUsage extension (OpenSSL accepts it)"
            if listed is None
            else "leaf lists " + ", ".join(eku_name(e) for e in listed),
        )
    )


def _key_level(path: list[x509.Certificate], steps: list[Step]) -> None:
    """OpenSSL security level 2 (the gateway's contexts): RSA/DSA >= 2048 bits, EC >= 224."""
    for i, cert in enumerate(path):
        key = cert.public_key()
        bits = None
        if isinstance(key, rsa.RSAPublicKey) and key.key_size < 2048:
            bits = f"{key.key_size}-bit RSA"
        elif is_dsa(cert) and (size := getattr(key, "key_size", 0)) < 2048:
            bits = f"{size}-bit DSA"
        elif isinstance(key, ec.EllipticCurvePublicKey) and key.curve.key_size < 224:
            bits = f"{key.curve.name}"
        if bits:
            what = "EE_KEY_TOO_SMALL" if i == 0 else "CA_KEY_TOO_SMALL"
            raise fail(
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
            raise fail(R.REVOKED, "revocation", detail)
        if status.state != "good":
            raise fail(R.CRL_ERROR, "revocation", detail)
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
            raise fail(
                R.BAD_SIGNATURE,
                "signature",
                f"the signature on {describe(cert)} does not verify with the key of "
                f"{describe(path[i + 1])}",
            )
        if cert.not_valid_before_utc > at:
            raise fail(
                R.NOT_YET_VALID,
                "validity",
                f"{describe(cert)} is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC",
            )
        if cert.not_valid_after_utc < at:
            raise fail(
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
