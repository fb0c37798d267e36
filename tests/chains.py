"""Client chains with the faults real PKIs have, built with `cryptography`: for the differential
tests that hold the strict profile and `explain` to what OpenSSL and the running gateway do.

A `Spec` says what the leaf and its optional intermediate look like; `build` makes them under a
given root. `specs()` is the hypothesis strategy over every combination; `NAMED` is a fixed
corpus of the cases that matter most, for the slower tests that run a real gateway."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from functools import cache

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import strategies as st

from gateway.pki import devcerts

NOW = dt.datetime.now(dt.UTC)
DAY = dt.timedelta(days=1)
CLIENT, SERVER, ANY = (
    ExtendedKeyUsageOID.CLIENT_AUTH,
    ExtendedKeyUsageOID.SERVER_AUTH,
    ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,
)
EKUS = {"none": None, "client": [CLIENT], "server": [SERVER], "both": [SERVER, CLIENT],
        "any": [ANY]}  # fmt: skip


@dataclass(frozen=True)
class Spec:
    """One chain: leaf <- [intermediate] <- root."""

    eku: str = "client"  # a key of EKUS
    key_usage: str = "sign"  # sign | certsign | absent
    leaf_ca: str = "false"  # false | true | absent (basicConstraints)
    san: str = "dns-in"  # none | dns-in | dns-out | email-in | email-out
    cn: str = "in"  # in | out (the CN as a host name, inside the name constraint or not)
    aki: bool = True
    validity: str = "now"  # now | expired | future
    key: str = "p256"  # p256 | p384 | rsa2048 | rsa1024 | p192
    intermediate: bool = False
    inter_ca: bool = True  # the intermediate's basicConstraints CA flag
    inter_pathlen: int | None = None
    inter_certsign: bool = True
    inter_eku: str = "none"  # a key of EKUS: an EKU on the CA constrains the chain in OpenSSL
    constraint: str = "none"  # none | dns | email (a permitted subtree on the issuing CA)
    critical_unknown: bool = False  # an unknown critical extension on the leaf
    wrong_signer: bool = False  # the leaf is signed by a key that is not its issuer's


CHOICES: dict[str, list[object]] = {
    "eku": sorted(EKUS),
    "key_usage": ["sign", "certsign", "absent"],
    "leaf_ca": ["false", "true", "absent"],
    "san": ["none", "dns-in", "dns-out", "email-in", "email-out"],
    "cn": ["in", "out"],
    "aki": [True, False],
    "validity": ["now", "expired", "future"],
    "key": ["p256", "p384", "rsa2048", "rsa1024", "p192"],
    "intermediate": [True, False],
    "inter_ca": [True, False],
    "inter_pathlen": [None, 0],
    "inter_certsign": [True, False],
    "inter_eku": ["none", "client", "server"],
    "constraint": ["none", "dns", "email"],
    "critical_unknown": [True, False],
    "wrong_signer": [True, False],
}


@st.composite
def specs(draw: st.DrawFn) -> Spec:
    """A good chain with one to four of its properties changed: faults come alone or in
    small groups, as they do in real PKIs, and each gets a chance to be the deciding one."""
    fields = draw(st.lists(st.sampled_from(sorted(CHOICES)), min_size=1, max_size=4, unique=True))
    changes = {f: draw(st.sampled_from(CHOICES[f])) for f in fields}
    if any(f.startswith("inter_") or f == "constraint" for f in fields):
        changes.setdefault("intermediate", True)
    return replace(Spec(), **changes)  # type: ignore[arg-type]


GOOD = Spec()
NAMED: dict[str, Spec] = {
    "good": GOOD,
    "good-via-intermediate": replace(GOOD, intermediate=True),
    "no-eku": replace(GOOD, eku="none"),
    "server-eku": replace(GOOD, eku="server"),
    "any-eku": replace(GOOD, eku="any"),
    "leaf-is-ca": replace(GOOD, leaf_ca="true"),
    "leaf-keycertsign": replace(GOOD, key_usage="certsign"),
    "no-aki": replace(GOOD, aki=False),
    "expired": replace(GOOD, validity="expired"),
    "not-yet-valid": replace(GOOD, validity="future"),
    "rsa-1024": replace(GOOD, key="rsa1024"),
    "p-192": replace(GOOD, key="p192"),
    "rsa-2048": replace(GOOD, key="rsa2048"),
    "intermediate-not-ca": replace(GOOD, intermediate=True, inter_ca=False),
    "intermediate-no-certsign": replace(GOOD, intermediate=True, inter_certsign=False),
    "intermediate-server-eku": replace(GOOD, intermediate=True, inter_eku="server"),
    "dns-constraint-violated": replace(GOOD, intermediate=True, constraint="dns", san="dns-out"),
    "dns-constraint-cn-only": replace(
        GOOD, intermediate=True, constraint="dns", san="none", cn="out"
    ),
    "dns-constraint-cn-beside-email-san": replace(
        GOOD, intermediate=True, constraint="dns", san="email-in", cn="out"
    ),
    "email-constraint-violated": replace(
        GOOD, intermediate=True, constraint="email", san="email-out"
    ),
    "email-constraint-kept": replace(GOOD, intermediate=True, constraint="email", san="email-in"),
    "unknown-critical-extension": replace(GOOD, critical_unknown=True),
    "wrong-signer": replace(GOOD, wrong_signer=True),
    "pathlen-0-kept": replace(GOOD, intermediate=True, inter_pathlen=0),
}


@cache
def _key(kind: str) -> devcerts.PrivateKey:
    """One key per kind for the whole session (RSA generation is slow)."""
    if kind.startswith("rsa"):
        return rsa.generate_private_key(65537, int(kind[3:]))
    curves = {"p256": ec.SECP256R1(), "p384": ec.SECP384R1(), "p192": ec.SECP192R1(),
              "ca": ec.SECP256R1()}  # fmt: skip
    return ec.generate_private_key(curves[kind])


def root(cn: str = "chains root") -> devcerts.Issued:
    return devcerts.issue(devcerts.name(cn), ca=True, not_after=NOW + 3650 * DAY)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def build(spec: Spec, anchor: devcerts.Issued) -> tuple[devcerts.Issued, list[x509.Certificate]]:
    """The leaf (with its key) and the intermediates a client would send."""
    issuer = anchor
    sent: list[x509.Certificate] = []
    if spec.intermediate:
        issuer = _intermediate(spec, anchor)
        sent.append(issuer.cert)
    key = _key(spec.key)
    start, end = NOW - DAY, NOW + 30 * DAY
    if spec.validity == "expired":
        start, end = NOW - 30 * DAY, NOW - DAY
    elif spec.validity == "future":
        start, end = NOW + DAY, NOW + 30 * DAY
    cn = "app.good.test" if spec.cn == "in" else "app.evil.test"
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    )
    if spec.leaf_ca != "absent":
        b = b.add_extension(x509.BasicConstraints(spec.leaf_ca == "true", None), True)
    if spec.key_usage != "absent":
        sign = spec.key_usage == "sign"
        b = b.add_extension(_usage(digital_signature=sign, key_cert_sign=not sign), True)
    ekus = EKUS[spec.eku]
    if ekus is not None:
        b = b.add_extension(x509.ExtendedKeyUsage(ekus), False)
    sans: list[x509.GeneralName] = {
        "none": [],
        "dns-in": [x509.DNSName("app.good.test")],
        "dns-out": [x509.DNSName("app.evil.test")],
        "email-in": [x509.RFC822Name("app@good.test")],
        "email-out": [x509.RFC822Name("app@evil.test")],
    }[spec.san]
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), False)
    if spec.aki:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key())
        b = b.add_extension(aki, False)
    if spec.critical_unknown:
        unknown = x509.UnrecognizedExtension(
            x509.ObjectIdentifier("1.3.6.1.4.1.55738.666.1"), b"\x05\x00"
        )
        b = b.add_extension(unknown, True)
    signer = _key("p384") if spec.wrong_signer else issuer.key
    return devcerts.Issued(b.sign(signer, hashes.SHA256()), key), sent


def _usage(*, digital_signature: bool, key_cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=key_cert_sign,
        crl_sign=key_cert_sign, encipher_only=False, decipher_only=False,
    )  # fmt: skip


INTERMEDIATE = _name("chains intermediate")


def intermediate_crl(revoked: list[int] = []) -> x509.CertificateRevocationList:  # noqa: B006
    """The CRL of every intermediate `build` makes (they share their name and key)."""
    issuer = devcerts.Issued(
        x509.CertificateBuilder()
        .subject_name(INTERMEDIATE).issuer_name(INTERMEDIATE).public_key(_key("ca").public_key())
        .serial_number(1).not_valid_before(NOW - DAY).not_valid_after(NOW + DAY)
        .sign(_key("ca"), hashes.SHA256()),
        _key("ca"),
    )  # fmt: skip
    return devcerts.make_crl(issuer, revoked)


def _intermediate(spec: Spec, anchor: devcerts.Issued) -> devcerts.Issued:
    key = _key("ca")  # one intermediate key: one CRL of "chains intermediate" covers them all
    b = (
        x509.CertificateBuilder()
        .subject_name(INTERMEDIATE)
        .issuer_name(anchor.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - DAY)
        .not_valid_after(NOW + 365 * DAY)
        .add_extension(
            x509.BasicConstraints(spec.inter_ca, spec.inter_pathlen if spec.inter_ca else None),
            True,
        )
        .add_extension(_usage(digital_signature=True, key_cert_sign=spec.inter_certsign), True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(anchor.key.public_key()), False
        )
    )
    if EKUS[spec.inter_eku] is not None:
        b = b.add_extension(x509.ExtendedKeyUsage(EKUS[spec.inter_eku]), False)
    if spec.constraint == "dns":
        b = b.add_extension(x509.NameConstraints([x509.DNSName("good.test")], None), True)
    elif spec.constraint == "email":
        b = b.add_extension(x509.NameConstraints([x509.RFC822Name("good.test")], None), True)
    return devcerts.Issued(b.sign(anchor.key, hashes.SHA256()), key)
