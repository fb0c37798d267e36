"""Path normalisation and route matching."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.base.errors import BadRequest
from gateway.config.load import parse_config
from gateway.request.routing import (
    BadPath,
    MethodNotAllowed,
    NoRoute,
    Router,
    normalise_host,
    normalise_target,
    parse_host,
    without_parameters,
)


@pytest.mark.parametrize(
    "raw, path, encoded, query",
    [
        ("/", "/", "/", ""),
        ("/a/b?x=1", "/a/b", "/a/b", "x=1"),
        ("/a/../b", "/b", "/b", ""),
        ("/a/./b/", "/a/b/", "/a/b/", ""),
        ("//a///b", "/a/b", "/a/b", ""),
        ("/../../etc", "/etc", "/etc", ""),
        ("/a/..", "/", "/", ""),
        ("/a/%2e%2e/b", "/b", "/b", ""),
        ("/%61%62c", "/abc", "/abc", ""),
        ("/caf%C3%A9", "/café", "/caf%C3%A9", ""),
        ("/a%20b", "/a b", "/a%20b", ""),
        ("/a;p=1/b", "/a;p=1/b", "/a;p=1/b", ""),
        (
            "/%25252e",
            "/%252e",
            "/%25252e",
            "",
        ),  # double encoding stays literal, never decoded twice
    ],
)
def test_normalise(raw: str, path: str, encoded: str, query: str) -> None:
    t = normalise_target(raw)
    assert (t.path, t.encoded, t.query) == (path, encoded, query)


@pytest.mark.parametrize(
    "raw",
    [
        "/a%2fb",
        "/a%2F",
        "/%5c",
        "/a\\b",
        "/a%00",
        "/\x01",
        "/a%zz",
        "/a%",
        "/%c0%ae",
        "/%ff",
        "http://x/",
        "*",
        "a/b",
        "/a#f",
    ],
)
def test_rejected_targets(raw: str) -> None:
    with pytest.raises(BadPath):
        normalise_target(raw)


def test_targets_seen_again_are_remembered_within_a_bound() -> None:
    from gateway.request import routing

    first = normalise_target("/a/./b/../c?q=1")
    assert normalise_target("/a/./b/../c?q=1") is first
    assert (first.path, first.encoded, first.query) == ("/a/c", "/a/c", "q=1")
    for i in range(routing._SEEN_MAX + 10):  # ids in paths: the memory stays bounded
        assert normalise_target(f"/items/{i}").path == f"/items/{i}"
    assert len(routing._SEEN) <= routing._SEEN_MAX
    long = "/" + "a" * routing._SEEN_LONGEST
    assert normalise_target(long).path == long and long not in routing._SEEN  # size, too
    for _ in range(2):  # a refused target is refused every time, never remembered
        with pytest.raises(BadPath):
            normalise_target("/a/%2fetc")


@given(st.text(max_size=60))
def test_normaliser_only_raises_bad_path(text: str) -> None:
    try:
        t = normalise_target("/" + text)
    except BadPath:
        return
    assert t.path.startswith("/")
    assert "/../" not in t.path + "/" and "/./" not in t.path + "/" and "//" not in t.path
    assert (
        normalise_target(t.encoded + ("?" + t.query if t.query else "")).path == t.path
    )  # idempotent


@pytest.mark.parametrize(
    "header, host",
    [
        ("Example.COM", "example.com"),
        ("example.com.:8443", "example.com"),
        ("[::1]:8443", "::1"),
        ("127.0.0.1:1", "127.0.0.1"),
        ("", None),
        (None, None),
    ],
)
def test_normalise_host(header: str | None, host: str | None) -> None:
    assert normalise_host(header) == host


def _router() -> Router:
    return _table(
        [
            {
                "name": "orders-read",
                "match": {
                    "host": "api.example.internal",
                    "path_prefix": "/orders",
                    "methods": ["GET"],
                },
                "upstream": "u",
                "policy": {"allow": "any"},
            },
            {
                "name": "wild",
                "match": {"host": "*.svc.internal", "path_prefix": "/v1/"},
                "upstream": "u",
                "policy": {"allow": "any"},
            },
            {
                "name": "health",
                "match": {"path_prefix": "/healthz"},
                "upstream": "u",
                "policy": {"allow": "any"},
            },
        ]
    )


@pytest.mark.parametrize(
    "host, path, method, route",
    [
        ("api.example.internal", "/orders", "GET", "orders-read"),
        ("api.example.internal", "/orders/1", "GET", "orders-read"),
        ("api.example.internal", "/orders;x", "GET", "orders-read"),
        ("a.svc.internal", "/v1/x", "POST", "wild"),
        (None, "/healthz", "GET", "health"),
        ("anything", "/healthz/deep", "GET", "health"),
    ],
)
def test_first_match_wins(host: str | None, path: str, method: str, route: str) -> None:
    assert _router().match(host, path, method).name == route


@pytest.mark.parametrize(
    "host, path, method, error",
    [
        ("api.example.internal", "/ordersx", "GET", NoRoute),  # prefix ends at a segment boundary
        ("other.internal", "/orders", "GET", NoRoute),
        ("a.b.svc.internal", "/v1/x", "GET", NoRoute),  # '*.' is one label
        ("svc.internal", "/v1/x", "GET", NoRoute),
        ("a.svc.internal", "/v1", "GET", NoRoute),  # prefix with trailing slash
        ("api.example.internal", "/orders", "DELETE", MethodNotAllowed),
    ],
)
def test_no_match(host: str, path: str, method: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        _router().match(host, path, method)


def _table(routes: list[dict[str, object]]) -> Router:
    """The router of a minimal config with these routes (all to one upstream)."""
    doc = {
        "listeners": [
            {
                "name": "l",
                "bind": "127.0.0.1:1",
                "tls": {"cert": "c", "key": "k", "client_ca": ["ca"]},
            }
        ],
        "upstreams": [{"name": "u", "url": "http://127.0.0.1:2"}],
        "routes": routes,
    }
    return Router(parse_config(doc, "/").routes)


def _nested(path_parameters: bool) -> Router:
    """/api/admin (admins) before /api (anyone): the layout a ';' could slip past."""
    return _table(
        [
            {
                "name": "admin",
                "match": {"path_prefix": "/api/admin"},
                "upstream": "u",
                "policy": {"allow": "any"},
            },
            {
                "name": "api",
                "match": {"path_prefix": "/api", "path_parameters": path_parameters},
                "upstream": "u",
                "policy": {"allow": "any"},
            },
        ]
    )


# each reads as /api/admin/... to Tomcat or Jetty, which strip ';params' from every segment
SMUGGLED = ["/api;x/admin/users", "/api;/admin", "/api%3B/admin", "/api/;/admin", "/api/;x/admin",
            "/api//;/admin", "/api;;/admin", "/api%3bx/admin/x"]  # fmt: skip


@pytest.mark.parametrize("raw", SMUGGLED)
@pytest.mark.parametrize("opt_in", [False, True])
def test_path_parameters_cannot_change_the_route(raw: str, opt_in: bool) -> None:
    path = normalise_target(raw).path
    with pytest.raises(BadPath):
        _nested(opt_in).route(None, path, "GET")


@pytest.mark.parametrize("raw", ["/api/items;v=2", "/api;v=2/items", "/api/a;b/c;d"])
def test_path_parameters_need_the_routes_opt_in(raw: str) -> None:
    path = normalise_target(raw).path
    with pytest.raises(BadPath, match="path_parameters"):
        _nested(False).route(None, path, "GET")
    assert _nested(True).route(None, path, "GET").name == "api"
    assert normalise_target(raw).encoded == raw  # forwarded as the client sent it


def test_paths_without_parameters_route_as_before() -> None:
    assert _nested(False).route(None, "/api/admin/x", "GET").name == "admin"
    assert _nested(False).route(None, "/api/x", "GET").name == "api"


@pytest.mark.parametrize(
    "path, stripped",
    [("/a;x/b", "/a/b"), ("/a/;/b", "/a/b"), ("/a//;/b", "/a/b"), ("/a;;/b;c", "/a/b"),
     ("/a/b;x/", "/a/b/"), ("/;", "/"), ("/a", "/a")],
)  # fmt: skip
def test_without_parameters(path: str, stripped: str) -> None:
    assert without_parameters(path) == stripped


@pytest.mark.parametrize(
    "value, host",
    [("localhost", "localhost"), ("LOCALHOST.:8443", "localhost"), ("a.b-c_d.example", "a.b-c_d.example"),
     ("[::1]:8443", "::1"), ("[0:0::1]", "::1"), ("127.0.0.1:1", "127.0.0.1"), ("example.com:", "example.com"),
     (" example.com ", "example.com")],
)  # fmt: skip
def test_parse_host(value: str, host: str) -> None:
    assert parse_host(value) == host


@pytest.mark.parametrize(
    "value",
    ["", " ", ":1", ":", "a, b", "a,b", "a b", "user@host", "host:99999", "host:8x", "host/path",
     "[::1", "[zz::1]", "[::1]x", "a..b", ".", "..", "h\x00", "h:1:2", "*.example", "host?x", "a.b%2e"],
)  # fmt: skip
def test_parse_host_refuses_anything_but_one_authority(value: str) -> None:
    with pytest.raises(BadRequest):
        parse_host(value)
