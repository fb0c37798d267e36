"""Which request fields reach an upstream: identity families and invalid names, by rule."""

from __future__ import annotations

import pytest

from gateway.base.errors import BadRequest
from gateway.http.headers import (
    IDENTITY,
    INVALID_NAME,
    KEEP,
    ClientContext,
    HeaderRules,
    upstream_headers,
)

CTX = ClientContext("192.0.2.7", "localhost", None, (), "rid-1")


def _forward(
    fields: list[tuple[str, str]], rules: HeaderRules | None = None
) -> tuple[list[tuple[str, str]], list[str]]:
    dropped: list[str] = []
    names = [k.lower() for k, _ in fields]
    out = upstream_headers(fields, names, (), "localhost", CTX, (), rules or HeaderRules(), dropped)
    return out, dropped


@pytest.mark.parametrize(
    "name",
    ["x-ssl-client-s-dn", "ssl-client-s-dn", "x-forwarded-user", "x-forwarded-tls-client-cert",
     "x_forwarded_client_cert", "x-client-verify", "forwarded", "x-real-ip", "remote-user",
     "x-remote-group", "x-auth-request-email", "client-cert", "client_cert_chain",
     "x-amzn-oidc-data", "cf-access-jwt-assertion", "x-goog-iap-jwt-assertion",
     "x-ms-client-principal", "x-original-url", "x-http-method-override", "true-client-ip"],
)  # fmt: skip
def test_identity_families_in_every_spelling(name: str) -> None:
    assert HeaderRules().verdict(name) == IDENTITY


@pytest.mark.parametrize("name", ["accept", "content-type", "x-tenant", "authorization", "te-st"])
def test_ordinary_names_are_kept(name: str) -> None:
    assert HeaderRules().verdict(name) == KEEP


@pytest.mark.parametrize("name", ["x_tenant", "x.tenant", "x-tenant.id", "a_b_c"])
def test_names_outside_letters_digits_and_dash_are_invalid(name: str) -> None:
    assert HeaderRules().verdict(name) == INVALID_NAME


def test_dropped_fields_are_named_and_ours_are_set() -> None:
    out, dropped = _forward(
        [("Accept", "*/*"), ("X-SSL-Client-S-DN", "CN=admin"), ("X_Tenant", "a"),
         ("x-forwarded-for", "10.0.0.1"), ("X-Forwarded-User", "admin")]
    )  # fmt: skip
    assert dropped == ["x-ssl-client-s-dn", "x_tenant", "x-forwarded-for", "x-forwarded-user"]
    assert ("Accept", "*/*") in out
    assert ("X-Forwarded-For", "192.0.2.7") in out
    assert all(v not in ("CN=admin", "a", "10.0.0.1", "admin") for _, v in out)


def test_reject_mode_refuses_an_invalid_name_but_still_drops_identity() -> None:
    rules = HeaderRules(reject_invalid=True)
    with pytest.raises(BadRequest, match="X_Tenant"):
        _forward([("X_Tenant", "a")], rules)
    _, dropped = _forward([("X_Forwarded_User", "admin")], rules)
    assert dropped == ["x_forwarded_user"]


def test_configured_prefixes_add_to_the_built_in_ones() -> None:
    rules = HeaderRules(["X_Tenant-"])
    assert rules.verdict("x-tenant-id") == IDENTITY
    assert rules.verdict("x_tenant_id") == IDENTITY
    assert rules.verdict("x-ssl-client-cert") == IDENTITY


def test_trailers_follow_the_same_rules() -> None:
    rules = HeaderRules()
    assert rules.forwardable_trailer("X-Checksum")
    for name in ("X-Forwarded-Client-Cert", "X_SSL_Client_Cert", "Remote-User", "X.Thing",
                 "Content-Length", "Host", "Transfer-Encoding"):  # fmt: skip
        assert not rules.forwardable_trailer(name), name


def test_the_verdict_cache_is_bounded() -> None:
    rules = HeaderRules()
    for i in range(10_000):
        assert rules.verdict(f"x-h{i}") == KEEP
    assert len(rules._verdicts) <= 4096


@pytest.mark.parametrize(
    "value, encoded",
    [
        ("plain", "plain"),
        ("CN=a,O=b", '"CN=a,O=b"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("back\\slash", '"back\\\\slash"'),
        ("a\r\nX-Injected: 1", '"a\\u000d\\u000aX-Injected: 1"'),
        ("nul\x00del\x7fnel\x85ls\u2028", '"nul\\u0000del\\u007fnel\\u0085ls\\u2028"'),
        ("café", "café"),
    ],
)
def test_xfcc_values_are_quoted_and_never_carry_a_control_character(
    value: str, encoded: str
) -> None:
    from gateway.http.headers import _xfcc_quote

    assert _xfcc_quote(value) == encoded


def test_log_lines_never_split_on_unicode_line_separators() -> None:
    import json
    import logging

    from gateway.base.log import EVENT_KEY, JsonFormatter

    record = logging.LogRecord("gateway.access", logging.INFO, __file__, 1, "request", None, None)
    setattr(record, EVENT_KEY, {"client_subject": "CN=a\u2028b\u2029c\u0085d\r\ne"})
    line = JsonFormatter().format(record)
    assert not any(c in line for c in "\u2028\u2029\u0085\r\n")
    assert json.loads(line)["client_subject"] == "CN=a\u2028b\u2029c\u0085d\r\ne"
