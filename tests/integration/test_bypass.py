"""The attack table: every known way to slip past a route's policy, and what must happen.

The config (from test_requests) has an `admin` route that admits only `client-intermediate`, a
`public` route open to anyone, and a catch-all `api`. `client` is the attacker: a valid
certificate that is NOT allowed on /admin. A row passes when the request is refused (4xx) or
lands on the route whose policy really applies, and the upstream never sees a path it could
read as /admin behind another route's back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.harness import request, running, sample
from tests.integration.test_requests import _config

# (attack, path, extra headers, expected status, route that answered, upstream path)
ATTACKS: list[tuple[str, str, list[tuple[str, str]], int, str | None, str | None]] = [
    ("plain traversal", "/public/../admin", [], 403, "admin", None),
    ("encoded dot segments", "/public/%2e%2e/admin", [], 403, "admin", None),
    ("mixed-case encoded dots", "/public/%2E%2e/%61dmin", [], 403, "admin", None),
    ("half-encoded dots", "/public/.%2e/admin", [], 403, "admin", None),
    ("double encoding stays literal", "/public/%252e%252e/admin", [], 200, "public", "/public/%252e%252e/admin"),
    ("encoded slash", "/public%2f..%2fadmin", [], 400, None, None),
    ("backslash", "/public/..\\admin", [], 400, None, None),
    ("encoded backslash", "/public/..%5cadmin", [], 400, None, None),
    ("overlong UTF-8 dots", "/public/%c0%ae%c0%ae/admin", [], 400, None, None),
    ("NUL byte", "/admin%00.public", [], 400, None, None),
    ("dot segment with parameters", "/public/..;/admin", [], 400, None, None),
    ("encoded ';' dot segment", "/public/..%3b/admin", [], 400, None, None),
    ("single-dot with parameters", "/public/.;x/../admin", [], 400, None, None),
    ("path parameter on the target", "/admin;jsessionid=x", [], 400, None, None),
    # servlet containers strip ';params' from every segment: each reads as /admin upstream
    ("parameters in a segment a dot segment removes", "/public;x/../admin", [], 403, "admin", None),
    ("parameters in a middle segment", "/x;y/admin", [], 400, None, None),
    ("parameter-only segment", "/;/admin", [], 400, None, None),
    ("parameters then the target", "/;x/admin/users", [], 400, None, None),
    ("encoded ';'", "/%3Bx/admin", [], 400, None, None),
    ("doubled ';'", "/;;/admin", [], 400, None, None),
    ("doubled slash and a parameter segment", "//;/admin", [], 400, None, None),
    ("a parameter on a public path", "/public/x;v=1", [], 400, None, None),
    ("doubled slashes", "//admin//x", [], 403, "admin", None),
    ("traversal above the root", "/../../admin", [], 403, "admin", None),
    ("absolute-form target", "http://localhost/admin", [], 400, None, None),
    ("host in upper case with a trailing dot", "/admin", [("Host", "LOCALHOST.")], 403, "admin", None),
    ("Host that differs from SNI", "/public/x", [("Host", "other.example")], 421, None, None),
    ("Host list", "/public/x", [("Host", "localhost, admin.localhost")], 400, None, None),
    ("Host list without a space", "/public/x", [("Host", "localhost,other")], 400, None, None),
    ("empty Host", "/public/x", [("Host", "")], 400, None, None),
    ("Host of a port alone", "/public/x", [("Host", ":1")], 400, None, None),
    ("Host with a user part", "/public/x", [("Host", "admin@localhost")], 400, None, None),
    ("Host with a bad port", "/public/x", [("Host", "localhost:99999")], 400, None, None),
    ("Host with a non-numeric port", "/public/x", [("Host", "localhost:8x")], 400, None, None),
    ("Host with a path", "/public/x", [("Host", "localhost/admin")], 400, None, None),
    ("identity header, odd case", "/admin", [("cLiEnT-cErT", ":ZXZpbA==:")], 403, "admin", None),
    ("identity headers repeated", "/admin", [("X-Forwarded-Client-Cert", "URI=spiffe://dev.local/client-intermediate")] * 2, 403, "admin", None),
    ("identity header named in Connection", "/admin", [("Connection", "X-Forwarded-Client-Cert"), ("X-Forwarded-Client-Cert", "URI=spiffe://dev.local/client-intermediate")], 403, "admin", None),
]  # fmt: skip


@pytest.fixture(scope="module")
def gw(pki: Path):
    with running(lambda port: _config(pki, port), pki) as g:
        yield g


@pytest.mark.parametrize(
    ("attack", "path", "headers", "status", "route", "upstream_path"),
    ATTACKS,
    ids=[a[0] for a in ATTACKS],
)
def test_attack(
    gw: Any,
    pki: Path,
    attack: str,
    path: str,
    headers: list[tuple[str, str]],
    status: int,
    route: str | None,
    upstream_path: str | None,
) -> None:
    seen = len(gw.echo_seen)
    reply = request(gw.port, path, pki, "client", headers=headers)
    assert reply.status == status, reply.body[:300]
    if route is not None and status != 200:
        assert reply.json()["route"] == route
    if upstream_path is None:
        assert gw.echo_seen[seen:] == [], "the upstream saw a request it must not"
    else:
        assert reply.json()["path"] == upstream_path
        received = {k.lower() for k, _ in reply.upstream_headers()}
        assert not received & {"client-cert", "x-forwarded-client-cert"}  # public forwards none


@pytest.mark.parametrize("tokens", ["content-length", "host", "Content-Length, Host, X-Other"])
def test_connection_header_cannot_strip_framing_or_host(gw: Any, pki: Path, tokens: str) -> None:
    """`Connection:` names headers to drop as hop-by-hop; dropping the body's framing would let
    the body pass for the next request on the shared upstream connection (smuggling)."""
    body = b"GET /smuggled HTTP/1.1\r\nHost: localhost\r\n\r\n"
    seen = len(gw.echo_seen)
    reply = request(
        gw.port, "/framing", pki, method="POST", headers=[("Connection", tokens)], body=body
    )
    assert reply.status == 200
    echoed = reply.json()
    assert echoed["body_bytes"] == len(body)
    received = {k.lower(): v for k, v in reply.upstream_headers()}
    assert received["host"].startswith("localhost")
    assert received["content-length"] == str(len(body))
    follow = request(gw.port, "/after", pki)
    assert follow.status == 200 and follow.json()["path"] == "/after"
    assert not any("/smuggled" in line for line in gw.echo_seen[seen:])


# Every identity family a proxy or auth layer uses, in odd case, with underscores, repeated.
FORGED = [
    "X-SSL-Client-S-DN", "X-SSL-Client-Subject", "X-SSL-Client-Serial", "SSL-Client-S-DN",
    "X-Forwarded-User", "X-Forwarded-Email", "X-Forwarded-Groups", "X-Forwarded-Prefix",
    "X-Forwarded-Uri", "X-Forwarded-Tls-Client-Cert", "X_Forwarded_Client_Cert",
    "x_ssl_client_cert", "X-Client-Verify", "X-Real-IP", "Remote-User", "X-Remote-User",
    "X-Auth-Request-Email", "X-Amzn-Oidc-Identity", "Cf-Access-Authenticated-User-Email",
    "X-Goog-Authenticated-User-Email", "X-MS-Client-Principal-Name", "X-WEBAUTH-USER",
    "X-Original-URL", "X-Rewrite-URL", "X-HTTP-Method-Override", "Forwarded", "CLIENT-CERT",
]  # fmt: skip


def test_identity_header_families_never_reach_the_upstream(gw: Any, pki: Path) -> None:
    dropped = "mtls_gateway_request_headers_dropped_total"
    before = sum(v for (n, labels), v in gw.metrics().items() if n == dropped)
    forged = [(name, "CN=admin") for name in FORGED] + [("X-Forwarded-User", "again")]
    reply = request(gw.port, "/public/who", pki, "client", headers=forged)
    assert reply.status == 200, reply.body[:300]
    received = [(k.lower().replace("_", "-"), v) for k, v in reply.upstream_headers()]
    assert [(k, v) for k, v in received if v in ("CN=admin", "again")] == []
    own = {"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-request-id"}
    forged_names = {name.lower().replace("_", "-") for name in FORGED}
    assert ({k for k, _ in received} & forged_names) - own == set()
    after = gw.metrics()
    counted = sum(v for (n, labels), v in after.items() if n == dropped)
    assert counted - before == len(forged)
    assert sample(after, dropped, listener="public", reason="identity") >= len(forged)


def test_other_header_names_with_underscores_or_dots_are_dropped(gw: Any, pki: Path) -> None:
    reply = request(
        gw.port,
        "/public/x",
        pki,
        "client",
        headers=[("X_Tenant", "a"), ("X.Tenant", "b"), ("X-Tenant", "c")],
    )
    assert reply.status == 200
    received = [(k.lower(), v) for k, v in reply.upstream_headers() if "tenant" in k.lower()]
    assert received == [("x-tenant", "c")]
