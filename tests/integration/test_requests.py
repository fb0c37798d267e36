"""Route policy, identity headers, path normalisation and Host/SNI checks through a real gateway."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from tests.harness import base_config, request, running, sample


def _config(pki: Path, port: int) -> dict[str, Any]:
    # the OpenSSL profile alone: a leaf without EKU reaches the routes' required_eku check
    cfg = base_config(pki, port, client_auth="optional", verify_profile="openssl")
    fp = hashlib.sha256(
        x509.load_pem_x509_certificate((pki / "client.pem").read_bytes()).public_bytes(Encoding.DER)
    ).hexdigest()
    cfg["routes"] = [
        {
            "name": "admin",
            "match": {"path_prefix": "/admin"},
            "upstream": "echo",
            "policy": {"allow": [{"san_uri": ["spiffe://dev.local/client-intermediate"]}]},
        },
        {
            "name": "orders-read",
            "match": {"path_prefix": "/orders", "methods": ["GET"]},
            "upstream": "echo",
            "policy": {
                "required_eku": ["clientAuth"],
                "allow": [{"subject": {"CN": "client*", "OU": "clients"}}],
                "deny": [{"fingerprint_sha256": [fp]}],
            },
            "forward_identity": ["rfc9440", "xfcc"],
        },
        {
            "name": "pinned",
            "match": {"path_prefix": "/pinned"},
            "upstream": "echo",
            "policy": {"allow": [{"fingerprint_sha256": [fp]}]},
            "forward_identity": ["rfc9440"],
        },
        {
            "name": "public",
            "match": {"path_prefix": "/public"},
            "upstream": "echo",
            "policy": {"require_client_cert": False},
        },
        {
            "name": "api",
            "match": {"path_prefix": "/"},
            "upstream": "echo",
            "policy": {
                "required_eku": ["clientAuth"],
                "allow": [{"san_uri": ["spiffe://dev.local/*"]}],
            },
            "forward_identity": ["rfc9440", "xfcc"],
        },
    ]
    return cfg


@pytest.fixture(scope="module")
def gw(pki: Path):
    with running(lambda port: _config(pki, port), pki) as g:
        yield g


def _denials(gw, route: str, reason: str) -> float:
    return sample(gw.metrics(), "mtls_gateway_policy_denials_total", route=route, reason=reason)


# ---- allow / deny twins ------------------------------------------------------------------


def test_allowlist_by_san_uri_allows_listed_client(gw, pki: Path) -> None:
    r = request(gw.port, "/admin/x", pki, "client-intermediate")
    assert r.status == 200 and r.json()["path"] == "/admin/x"


def test_allowlist_by_san_uri_denies_other_client(gw, pki: Path) -> None:
    before = _denials(gw, "admin", "not_allowed")
    r = request(gw.port, "/admin/x", pki, "client")
    assert r.status == 403
    body = r.json()
    assert body["error"] == "client_cert_not_allowed" and body["route"] == "admin"
    assert body["request_id"] == r.headers["x-request-id"]
    assert "spiffe" not in r.body.decode()  # the allowlist is never revealed
    assert _denials(gw, "admin", "not_allowed") == before + 1


def test_deny_list_beats_allow(gw, pki: Path) -> None:
    # `client` matches allow (CN client*) but its fingerprint is on the deny list
    before = _denials(gw, "orders-read", "denied")
    r = request(gw.port, "/orders/1", pki, "client")
    assert r.status == 403 and r.json()["error"] == "client_cert_not_allowed"
    assert _denials(gw, "orders-read", "denied") == before + 1


def test_subject_glob_allows_other_client(gw, pki: Path) -> None:
    r = request(gw.port, "/orders/1", pki, "client-intermediate")
    assert r.status == 200


def test_method_not_in_route_falls_through_to_next_route(gw, pki: Path) -> None:
    r = request(gw.port, "/orders/1", pki, "client-intermediate", method="POST", body=b"{}")
    assert r.status == 200 and r.json()["method"] == "POST"  # first match wins: the catch-all


def test_fingerprint_pin_allows_pinned_client(gw, pki: Path) -> None:
    assert request(gw.port, "/pinned", pki, "client").status == 200


def test_fingerprint_pin_denies_other_client(gw, pki: Path) -> None:
    assert request(gw.port, "/pinned", pki, "client-intermediate").status == 403


def test_strict_eku_allows_client_auth_leaf(gw, pki: Path) -> None:
    assert request(gw.port, "/anything", pki, "client").status == 200


def test_strict_eku_denies_leaf_without_eku(gw, pki: Path) -> None:
    before = _denials(gw, "api", "eku_missing")
    r = request(gw.port, "/anything", pki, "client-noeku")
    assert r.status == 403 and r.json()["error"] == "eku_missing"
    assert _denials(gw, "api", "eku_missing") == before + 1


def test_anonymous_client_allowed_on_open_route(gw, pki: Path) -> None:
    r = request(gw.port, "/public/info", pki, None)
    assert r.status == 200
    assert not any(
        k.lower() in ("client-cert", "x-forwarded-client-cert") for k, _ in r.upstream_headers()
    )


def test_anonymous_client_denied_on_route_requiring_cert(gw, pki: Path) -> None:
    before = _denials(gw, "api", "no_client_cert")
    r = request(gw.port, "/anything", pki, None)
    assert r.status == 403 and r.json()["error"] == "client_cert_required"
    assert _denials(gw, "api", "no_client_cert") == before + 1


# ---- identity headers ---------------------------------------------------------------------

SPOOFS = [
    ("Client-Cert", ":ZXZpbA==:"),
    ("client-cert-chain", ":ZXZpbA==:"),
    ("X-FORWARDED-CLIENT-CERT", 'Hash=evil;Subject="CN=admin"'),
    ("x-forwarded-client-cert", "By=spoof"),
    ("X-Forwarded-For", "10.9.9.9"),
    ("X-SSL-Client-Cert", "evil"),
    ("Forwarded", "for=10.9.9.9"),
    ("X-Request-Id", "chosen-by-client"),
]


def test_spoofed_identity_headers_never_reach_upstream(gw, pki: Path) -> None:
    r = request(
        gw.port,
        "/anything",
        pki,
        "client",
        headers=[*SPOOFS, ("Connection", "X-Forwarded-Client-Cert, keep-alive")],
    )
    assert r.status == 200
    got = r.upstream_headers()
    values = [v for _, v in got]
    assert not any(
        "evil" in v or "spoof" in v or "10.9.9.9" in v or v == "chosen-by-client" for v in values
    ), got
    lower = [k.lower() for k, _ in got]
    assert lower.count("client-cert") == 1 and lower.count("x-forwarded-client-cert") == 1
    assert (
        "forwarded" not in lower and "x-ssl-client-cert" not in lower and "connection" not in lower
    )


def test_spoofed_identity_headers_stripped_on_route_without_forwarding(gw, pki: Path) -> None:
    r = request(gw.port, "/public/x", pki, "client", headers=SPOOFS)
    lower = [k.lower() for k, _ in r.upstream_headers()]
    assert "client-cert" not in lower and "x-forwarded-client-cert" not in lower


def test_rfc9440_and_xfcc_describe_the_client(gw, pki: Path) -> None:
    r = request(gw.port, "/anything", pki, "client-intermediate")
    h = dict((k.lower(), v) for k, v in r.upstream_headers())
    der = x509.load_pem_x509_certificate(
        (pki / "client-intermediate.pem").read_bytes()
    ).public_bytes(Encoding.DER)
    assert h["client-cert"] == ":" + base64.b64encode(der).decode() + ":"
    chain = h["client-cert-chain"].split(", ")
    inter = x509.load_pem_x509_certificate((pki / "intermediate.pem").read_bytes())
    assert len(chain) == 1 and base64.b64decode(chain[0].strip(":")) == inter.public_bytes(
        Encoding.DER
    )
    xfcc = h["x-forwarded-client-cert"]
    assert xfcc.startswith(f"Hash={hashlib.sha256(der).hexdigest()};")
    assert 'Subject="OU=clients,O=mtls-gateway dev,CN=client-intermediate"' in xfcc
    assert xfcc.endswith("URI=spiffe://dev.local/client-intermediate")
    assert h["x-forwarded-for"] == "127.0.0.1" and h["x-forwarded-proto"] == "https"
    assert h["x-forwarded-host"] == f"localhost:{gw.port}"
    assert h["x-request-id"] == r.headers["x-request-id"]


@pytest.mark.parametrize("spell", [str, str.swapcase], ids=["as-usual", "swapped-case"])
def test_hop_by_hop_headers_removed(gw, pki: Path, spell: Any) -> None:
    """Host and the fields Connection names are recognised in any case (RFC 9110 7.6.1); what
    goes upstream keeps the client's spelling."""
    r = request(
        gw.port,
        "/anything",
        pki,
        "client",
        headers=[
            (spell("Host"), f"localhost:{gw.port}"),
            (spell("Connection"), "X-Secret"),
            (spell("X-Secret"), "1"),
            (spell("Keep-Alive"), "timeout=5"),
            (spell("TE"), "trailers"),
            (spell("X-Kept"), "yes"),
        ],
    )
    assert r.status == 200
    got = r.upstream_headers()
    lower = {k.lower(): v for k, v in got}
    assert "x-secret" not in lower and "keep-alive" not in lower and "te" not in lower
    assert "connection" not in lower
    assert (spell("X-Kept"), "yes") in got
    assert [k.lower() for k, _ in got].count("host") == 1
    assert lower["x-forwarded-host"] == f"localhost:{gw.port}"


# ---- paths ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, route, upstream_path",
    [
        ("/public/../admin/x", "admin", "/admin/x"),
        ("/public/%2e%2e/admin", "admin", "/admin"),
        ("/public/%2E%2e/%61dmin", "admin", "/admin"),
        ("//admin//x", "admin", "/admin/x"),
        ("/public/./../admin/", "admin", "/admin/"),
        ("/../../admin", "admin", "/admin"),
    ],
)
def test_traversal_hits_the_target_routes_policy(
    gw, pki: Path, raw: str, route: str, upstream_path: str
) -> None:
    # `client` is not allowed on admin: every spelling of /admin must be denied by admin's policy
    denied = request(gw.port, raw, pki, "client")
    assert denied.status == 403 and denied.json()["route"] == route
    allowed = request(gw.port, raw, pki, "client-intermediate")
    assert allowed.status == 200 and allowed.json()["path"] == upstream_path


@pytest.mark.parametrize(
    "raw",
    ["/a%2fb", "/a%2Fb", "/a%5cb", "/a\\b", "/a%00b", "/a%zz", "/a%c0%ae%c0%ae/admin", "/a%ff"],
)
def test_encoded_separators_and_bad_encoding_are_400(gw, pki: Path, raw: str) -> None:
    r = request(gw.port, raw, pki, "client")
    assert r.status == 400 and r.json()["error"] == "bad_path"


def test_query_string_passes_through(gw, pki: Path) -> None:
    r = request(gw.port, "/public/q?a=1&b=%2F", pki, None)
    assert r.json()["query"] == "a=1&b=%2F"


def test_upstream_receives_normalised_encoded_path(gw, pki: Path) -> None:
    r = request(gw.port, "/public/a%20b/./c/%7E", pki, None)
    assert r.json()["path"] == "/public/a%20b/c/~"


# ---- Host / SNI -----------------------------------------------------------------------------


def test_host_differs_from_sni_is_421(gw, pki: Path) -> None:
    r = request(gw.port, "/anything", pki, "client", headers=[("Host", "other.example")])
    assert r.status == 421 and r.json()["error"] == "misdirected_request"


def test_host_matching_sni_case_and_trailing_dot(gw, pki: Path) -> None:
    r = request(gw.port, "/anything", pki, "client", headers=[("Host", f"LOCALHOST.:{gw.port}")])
    assert r.status == 200


def test_no_route_is_404(pki: Path) -> None:
    def cfg(port: int) -> dict[str, Any]:
        c = base_config(pki, port)
        c["routes"][0]["match"] = {"path_prefix": "/only", "methods": ["GET"]}
        return c

    with running(cfg, pki) as g:
        r = request(g.port, "/elsewhere", pki, "client")
        assert r.status == 404 and r.json() == {
            "error": "no_route",
            "route": None,
            "request_id": r.headers["x-request-id"],
        }
        assert request(g.port, "/only/x", pki, "client").status == 200
        r = request(g.port, "/only/x", pki, "client", method="DELETE")
        assert r.status == 405 and r.json()["error"] == "method_not_allowed"
        assert request(g.port, "/onlyx", pki, "client").status == 404  # prefixes end at a segment
        m = g.metrics()
        assert sample(m, "mtls_gateway_requests_total", route="", method="GET", code="404") == 2
        assert sample(m, "mtls_gateway_requests_total", route="all", method="GET", code="200") == 1
