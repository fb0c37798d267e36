"""Config table tests: a valid baseline, one change per case, the exact path and message."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from gateway.base.errors import ConfigError
from gateway.config.load import load_config, parse_config
from gateway.config.model import parse_duration

BASE: dict[str, Any] = {
    "listeners": [
        {
            "name": "public",
            "bind": "127.0.0.1:8443",
            "tls": {"cert": "server.pem", "key": "server.key", "client_ca": ["ca.pem"]},
        }
    ],
    "upstreams": [{"name": "orders", "url": "http://127.0.0.1:9000"}],
    "routes": [
        {
            "name": "orders-read",
            "match": {"host": "api.example.internal", "path_prefix": "/orders", "methods": ["GET"]},
            "upstream": "orders",
            "policy": {
                "required_eku": ["clientAuth"],
                "allow": [{"subject": {"CN": "billing-*", "O": "Example Corp"}}],
            },
        },
        {
            "name": "health",
            "match": {"path_prefix": "/healthz"},
            "upstream": "orders",
            "policy": {"allow": "any"},
        },
    ],
    "admin": {"bind": "127.0.0.1:9901"},
}


def _with(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    doc = copy.deepcopy(BASE)
    change(doc)
    return doc


def test_baseline_is_valid_and_resolves_paths() -> None:
    cfg = parse_config(BASE, "/etc/gw")
    tls = cfg.listeners[0].tls
    assert tls.cert == "/etc/gw/server.pem" and tls.client_ca == ("/etc/gw/ca.pem",)
    assert (
        tls.client_auth == "require" and tls.min_version == "1.2" and tls.handshake_timeout == 10.0
    )
    route = cfg.routes[0]
    assert route.match.methods == ("GET",) and route.policy.required_eku == ("1.3.6.1.5.5.7.3.2",)
    with pytest.raises(ValidationError):  # frozen
        cfg.routes[0].name = "x"  # type: ignore[misc]


CASES: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    (
        "bad enum",
        lambda d: d["listeners"][0]["tls"].update(client_auth="sometimes"),
        "listeners[0].tls.client_auth: Input should be 'require', 'optional' or 'none' (got 'sometimes')",
    ),
    (
        "unknown key",
        lambda d: d["listeners"][0]["tls"].update(ciphers="ALL"),
        "listeners[0].tls.ciphers: unknown key 'ciphers'; allowed keys here: cert, key, client_ca, client_auth, min_version, handshake_timeout, client_hello_timeout, crl, allow_missing_crl, ocsp, verify_profile, expiry_warning, allow_readable_key, crl_warning, session_cache, session_timeout",
    ),
    (
        "unknown top-level key",
        lambda d: d.update(listener=[]),
        "listener: unknown key 'listener'; allowed keys here: listeners, upstreams, routes, admin, logging, reload, request_id, request_headers, shutdown_timeout",
    ),
    (
        "unknown subject attribute",
        lambda d: d["routes"][0]["policy"]["allow"][0]["subject"].update(XX="a"),
        "routes[0].policy.allow[0].subject.XX: unknown key 'XX'; allowed keys here: CN, O, OU, C, L, ST, emailAddress, serialNumber",
    ),
    (
        "missing cert",
        lambda d: d["listeners"][0]["tls"].pop("cert"),
        "listeners[0].tls.cert: required key is missing",
    ),
    (
        "bad duration",
        lambda d: d["listeners"][0]["tls"].update(handshake_timeout="10"),
        "listeners[0].tls.handshake_timeout: '10' is not a duration; write it like 500ms, 10s, 5m, 1h or 28d",
    ),
    (
        "bad bind",
        lambda d: d["listeners"][0].update(bind="8443"),
        "listeners[0].bind: '8443' is not host:port (e.g. 127.0.0.1:8443 or [::1]:8443)",
    ),
    (
        "bad port",
        lambda d: d["listeners"][0].update(bind="127.0.0.1:99999"),
        "listeners[0].bind: '127.0.0.1:99999': port must be a number from 0 to 65535",
    ),
    (
        "bad min_version",
        lambda d: d["listeners"][0]["tls"].update(min_version="1.1"),
        "listeners[0].tls.min_version: Input should be '1.2' or '1.3' (got '1.1')",
    ),
    (
        "allow missing",
        lambda d: d["routes"][0]["policy"].pop("allow"),
        "routes[0].policy.allow: a route that requires a client certificate must say who may pass: `allow: any` (every verified client) or a list of matchers",
    ),
    (
        "allow empty",
        lambda d: d["routes"][0]["policy"].update(allow=[]),
        "routes[0].policy.allow: an empty allow list admits nobody; write `allow: any` or list matchers",
    ),
    (
        "allow typo",
        lambda d: d["routes"][1]["policy"].update(allow="anybody"),
        "routes[1].policy.allow: 'anybody' is not allowed; write `any` or a list of matchers",
    ),
    (
        "empty matcher",
        lambda d: d["routes"][0]["policy"].update(allow=[{}]),
        "routes[0].policy.allow[0]: an empty matcher would match every certificate; name at least one field (subject, san_uri, fingerprint_sha256, ...)",
    ),
    (
        "bad regex",
        lambda d: d["routes"][0]["policy"]["allow"][0]["subject"].update(CN="re:(("),
        "routes[0].policy.allow[0].subject.CN: 're:((' is not a valid regular expression: missing ), unterminated subpattern at position 1",
    ),
    (
        "bad fingerprint",
        lambda d: d["routes"][0]["policy"].update(deny=[{"fingerprint_sha256": "abc"}]),
        "routes[0].policy.deny[0].fingerprint_sha256: 'abc' is not 64 hex digits (colons allowed)",
    ),
    (
        "bad eku",
        lambda d: d["routes"][0]["policy"].update(required_eku=["clientauth"]),
        "routes[0].policy.required_eku[0]: 'clientauth' is not an EKU; use one of serverAuth, clientAuth, codeSigning, emailProtection, timeStamping, OCSPSigning or a dotted OID",
    ),
    (
        "unknown upstream",
        lambda d: d["routes"][0].update(upstream="billing"),
        "routes[0].upstream: unknown upstream 'billing'; defined: orders",
    ),
    (
        "duplicate route",
        lambda d: d["routes"][1].update(name="orders-read"),
        "routes[1].name: duplicate name 'orders-read' (also routes[0])",
    ),
    (
        "bad path prefix",
        lambda d: d["routes"][0]["match"].update(path_prefix="/a/../b"),
        "routes[0].match.path_prefix: '/a/../b' is not a normalised path (no '//', '.', '..', '%' or '\\'); routes match the normalised request path",
    ),
    (
        "bad host",
        lambda d: d["routes"][0]["match"].update(host="api_example"),
        "routes[0].match.host: 'api_example' is not a host name (letters, digits, '-', '.', optionally '*.' first)",
    ),
    (
        "ftp upstream",
        lambda d: d["upstreams"][0].update(url="ftp://x"),
        "upstreams[0].url: 'ftp://x' is not an upstream URL; write http(s)://host:port or http(s)://host:port/base-path",
    ),
    (
        "url and targets",
        lambda d: d["upstreams"][0].update(targets=["http://127.0.0.1:1"]),
        "upstreams[0].url: give either `url` (one target) or `targets` (several), not both",
    ),
    (
        "client cert without key",
        lambda d: d["upstreams"][0].update(tls={"client_cert": "c.pem"}),
        "upstreams[0].tls: client_cert and client_key go together",
    ),
    (
        "h2c to an https target",
        lambda d: d["upstreams"][0].update(url="https://127.0.0.1:9000", protocol="h2c"),
        "upstreams[0].protocol: h2c is HTTP/2 in clear, to http:// targets; for https:// targets use h2",
    ),
    (
        "h2 to an http target",
        lambda d: d["upstreams"][0].update(protocol="h2"),
        "upstreams[0].protocol: h2 is HTTP/2 over TLS, to https:// targets; for http:// targets use h2c",
    ),
    (
        "unknown upstream protocol",
        lambda d: d["upstreams"][0].update(protocol="h3"),
        "upstreams[0].protocol: Input should be 'h1', 'h2c' or 'h2' (got 'h3')",
    ),
    (
        "websocket to an http2 upstream",
        lambda d: (d["upstreams"][0].update(protocol="h2c"), d["routes"][0].update(websocket=True)),
        "routes[0].websocket: WebSocket upgrades need an HTTP/1.1 upstream; 'orders' has protocol h2c",
    ),
    (
        "strip and rewrite",
        lambda d: d["routes"][0].update(strip_prefix=True, rewrite_prefix="/v2"),
        "routes[0].rewrite_prefix: use strip_prefix or rewrite_prefix, not both",
    ),
    (
        "bad trusted request-id source",
        lambda d: d.update(request_id={"trust_from": ["nope"]}),
        "request_id.trust_from[0]: 'nope' is not an IP network (e.g. 10.0.0.0/8 or 127.0.0.1)",
    ),
    (
        "readiness on an unknown upstream",
        lambda d: d["admin"].update(ready_requires_upstreams=["ghost"]),
        "admin.ready_requires_upstreams[0]: unknown upstream 'ghost'",
    ),
    (
        "no trust bundle",
        lambda d: d["listeners"][0]["tls"].update(client_ca=[]),
        "listeners[0].tls.client_ca: client_auth is 'require' but no trust bundle is given; list the CA file(s) that issue client certificates",
    ),
    ("no routes", lambda d: d.update(routes=[]), "routes: must list at least one entry"),
    (
        "admin port clash",
        lambda d: d["admin"].update(bind="127.0.0.1:8443"),
        "admin.bind: 127.0.0.1:8443 is already used by listeners[0]",
    ),
    (
        "no cert possible",
        lambda d: d["listeners"][0]["tls"].update(client_auth="none"),
        "routes[0].policy.require_client_cert: every listener has client_auth: none, so no request could ever pass",
    ),
]


@pytest.mark.parametrize(
    "change, expected", [(c, e) for _, c, e in CASES], ids=[n for n, _, _ in CASES]
)
def test_one_change_one_precise_error(
    change: Callable[[dict[str, Any]], None], expected: str
) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(_with(change), "/etc/gw")
    assert expected in [str(p) for p in err.value.problems], err.value.problems


def test_several_problems_reported_at_once() -> None:
    def change(d: dict[str, Any]) -> None:
        d["listeners"][0]["tls"]["client_auth"] = "x"
        d["routes"][0]["colour"] = "blue"
        d["upstreams"][0]["url"] = 5

    with pytest.raises(ConfigError) as err:
        parse_config(_with(change), "/")
    paths = {p.path for p in err.value.problems}
    assert paths == {"listeners[0].tls.client_auth", "routes[0].colour", "upstreams[0].url"}


def test_load_config_reports_yaml_syntax_with_line(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("listeners:\n  - name: [unclosed\n")
    with pytest.raises(ConfigError, match=r"is not valid YAML at line 3"):
        load_config(p)


def test_load_config_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read .*nope\.yaml: No such file or directory"):
        load_config(tmp_path / "nope.yaml")


def test_load_config_not_a_mapping(tmp_path: Path) -> None:
    p = tmp_path / "list.yaml"
    p.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must be a YAML mapping"):
        load_config(p)


@pytest.mark.parametrize(
    "text, seconds", [("500ms", 0.5), ("10s", 10), ("5m", 300), ("1h", 3600), ("1.5s", 1.5)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["10", "10 sec", "-1s", "", "s"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_example_configs_are_valid() -> None:
    root = Path(__file__).resolve().parents[2] / "config"
    files = sorted(root.glob("*.yaml"))
    assert files, "config/ holds the example configs"
    for f in files:
        load_config(f)
