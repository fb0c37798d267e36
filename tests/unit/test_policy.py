"""Policy decisions over identities parsed from real certificates; each allow has a deny twin."""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from gateway.base.reasons import PolicyReason
from gateway.config.model import Policy
from gateway.pki import devcerts
from gateway.pki.identity import IdentityCache, parse_identity
from gateway.request.policy import RoutePolicy, glob_to_regex

ROOT = devcerts.issue(devcerts.name("Test Root", o="Example Corp"), ca=True)


def _ident(
    cn: str = "billing-api",
    *,
    o: str = "Example Corp",
    eku: Any = (ExtendedKeyUsageOID.CLIENT_AUTH,),
    sans: Any = (),
):
    issued = devcerts.issue(
        devcerts.name(cn, o=o, ou="payments"), ROOT, eku=eku, sans=sans, serial=0x1234ABCD
    )
    return parse_identity(issued.cert.public_bytes(Encoding.DER))


SANS = [
    x509.UniformResourceIdentifier("spiffe://example.org/ns/prod/sa/billing"),
    x509.DNSName("billing.prod.example.org"),
    x509.RFC822Name("billing@example.org"),
    x509.IPAddress(ipaddress.ip_address("10.1.2.3")),
]
IDENT = _ident(sans=SANS)


def _policy(**kw: Any) -> RoutePolicy:
    return RoutePolicy(Policy.model_validate(kw))


def test_identity_fields() -> None:
    assert IDENT.subject_attrs == {
        "CN": ("billing-api",),
        "O": ("Example Corp",),
        "OU": ("payments",),
    }
    assert IDENT.issuer_attrs["CN"] == ("Test Root",)
    assert IDENT.san_uri == ("spiffe://example.org/ns/prod/sa/billing",)
    assert IDENT.san_dns == ("billing.prod.example.org",) and IDENT.san_email == (
        "billing@example.org",
    )
    assert IDENT.san_ip == ("10.1.2.3",) and IDENT.serial == "1234abcd"
    assert IDENT.has_eku and IDENT.ekus == ("1.3.6.1.5.5.7.3.2",)
    assert IDENT.sha256 == hashlib.sha256(IDENT.der).hexdigest() and len(IDENT.spki_sha256) == 64
    assert IDENT.not_after > dt.datetime.now().timestamp()


def test_identity_cache_parses_once() -> None:
    cache = IdentityCache(maxsize=2)
    assert cache.get(IDENT.der) is cache.get(IDENT.der)
    cache.get(_ident("a").der)
    cache.get(_ident("b").der)
    assert len(cache) == 2


def test_unparseable_certificate_raises_value_error() -> None:
    with pytest.raises(ValueError):
        parse_identity(b"\x30\x03\x02\x01\x00")


# (allow entry, matches IDENT?) — every field with a matching and a non-matching twin
TWINS = [
    ({"subject": {"CN": "billing-api"}}, True),
    ({"subject": {"CN": "billing-web"}}, False),
    ({"subject": {"CN": "billing-*", "O": "Example Corp"}}, True),
    ({"subject": {"CN": "billing-*", "O": "Other Corp"}}, False),
    ({"subject": {"CN": "re:billing-(api|web)"}}, True),
    ({"subject": {"CN": "re:billing"}}, False),  # anchored
    ({"subject": {"OU": ["hr", "payments"]}}, True),
    ({"subject": {"OU": ["hr"]}}, False),
    ({"issuer": {"CN": "Test Root"}}, True),
    ({"issuer": {"CN": "Other Root"}}, False),
    ({"san_uri": ["spiffe://example.org/ns/prod/sa/*"]}, True),
    ({"san_uri": ["spiffe://example.org/ns/*/billing"]}, False),  # * never crosses '/'
    ({"san_uri": ["spiffe://example.org/**"]}, True),
    ({"san_dns": ["*.prod.example.org"]}, True),
    ({"san_dns": ["*.example.org"]}, False),  # * never crosses '.'
    ({"san_dns": ["BILLING.PROD.EXAMPLE.ORG"]}, True),  # DNS is case-insensitive
    ({"san_email": ["*@example.org"]}, True),
    ({"san_email": ["*@example.com"]}, False),
    ({"san_ip": ["10.1.2.3"]}, True),
    ({"san_ip": ["10.1.2.4"]}, False),
    ({"serial": ["12:34:AB:CD"]}, True),
    ({"serial": ["1234abce"]}, False),
    ({"fingerprint_sha256": [IDENT.sha256.upper()]}, True),
    ({"fingerprint_sha256": ["0" * 64]}, False),
    ({"spki_sha256": [IDENT.spki_sha256]}, True),
    ({"spki_sha256": ["f" * 64]}, False),
]


@pytest.mark.parametrize("entry, allowed", TWINS)
def test_allow_matchers(entry: dict[str, Any], allowed: bool) -> None:
    d = _policy(allow=[entry]).decide(IDENT)
    assert d.allowed is allowed
    if not allowed:
        assert d.reason is PolicyReason.NOT_ALLOWED and d.detail.startswith(
            "no entry of policy.allow matches"
        )


def test_entries_or_together_fields_and_together() -> None:
    p = _policy(
        allow=[
            {"subject": {"CN": "nope"}},
            {"san_uri": ["spiffe://example.org/**"], "subject": {"O": "Example Corp"}},
        ]
    )
    assert p.decide(IDENT).allowed
    p = _policy(allow=[{"san_uri": ["spiffe://example.org/**"], "subject": {"O": "Other"}}])
    assert not p.decide(IDENT).allowed


@pytest.mark.parametrize(
    "deny, allowed",
    [([{"subject": {"CN": "billing-api"}}], False), ([{"subject": {"CN": "other"}}], True)],
)
def test_deny_beats_allow_any(deny: list[dict[str, Any]], allowed: bool) -> None:
    d = _policy(allow="any", deny=deny).decide(IDENT)
    assert d.allowed is allowed
    if not allowed:
        assert d.reason is PolicyReason.DENIED and d.detail == "matched policy.deny[0]"


def test_required_eku_strict() -> None:
    p = _policy(allow="any", required_eku=["clientAuth"])
    assert p.decide(IDENT).allowed
    no_ext = p.decide(_ident(eku=None))
    assert (
        no_ext.reason is PolicyReason.EKU_MISSING
        and "no extendedKeyUsage extension" in no_ext.detail
    )
    server_only = p.decide(_ident(eku=[ExtendedKeyUsageOID.SERVER_AUTH]))
    assert (
        server_only.reason is PolicyReason.EKU_MISSING
        and server_only.detail == "leaf EKUs [serverAuth] lack clientAuth"
    )


def test_no_certificate() -> None:
    d = _policy(allow="any").decide(None)
    assert not d.allowed and d.reason is PolicyReason.NO_CLIENT_CERT
    assert _policy(require_client_cert=False).decide(None).allowed


def test_optional_route_still_applies_deny_to_presented_cert() -> None:
    p = _policy(require_client_cert=False, deny=[{"subject": {"CN": "billing-api"}}])
    assert not p.decide(IDENT).allowed and p.decide(_ident("other")).allowed


def test_glob_regex() -> None:
    assert glob_to_regex("a*.b", ".").fullmatch("ax.b") and not glob_to_regex(
        "a*.b", "."
    ).fullmatch("a.x.b")
    assert glob_to_regex("a**b", ".").fullmatch("a.x.b")
    assert glob_to_regex("a+b*", None).fullmatch("a+bzz") and not glob_to_regex(
        "a+b", None
    ).fullmatch("aab")


def _two_cns(*values: str) -> Any:
    """A certificate whose subject repeats CN (one RDN each, or both in one multi-valued RDN)."""
    from cryptography.x509.oid import NameOID

    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, v) for v in values]
    issued = devcerts.issue(
        x509.Name([*attrs, x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example Corp")]), ROOT
    )
    return parse_identity(issued.cert.public_bytes(Encoding.DER))


@pytest.mark.parametrize("entry", [{"subject": {"CN": "admin"}}, {"subject": {"CN": "adm*"}},
                                   {"subject": {"CN": "re:admin"}}])  # fmt: skip
def test_a_repeated_subject_attribute_must_match_in_every_value(entry: dict[str, Any]) -> None:
    """`CN: admin` must not admit CN=admin + CN=mallory (the rule fails closed)."""
    policy = _policy(allow=[entry])
    assert policy.decide(_two_cns("admin")).allowed
    decision = policy.decide(_two_cns("admin", "mallory"))
    assert not decision.allowed and decision.reason is PolicyReason.NOT_ALLOWED
    assert "CN=admin+mallory" in decision.detail and "every value" in decision.detail
    assert policy.decide(_two_cns("admin", "admin")).allowed  # every value matches


def test_a_deny_rule_matches_any_value_of_a_repeated_attribute() -> None:
    """Deny fails closed the other way: one matching value is enough."""
    policy = _policy(allow="any", deny=[{"subject": {"CN": "mallory"}}])
    assert not policy.decide(_two_cns("admin", "mallory")).allowed
    assert policy.decide(_two_cns("admin")).allowed
