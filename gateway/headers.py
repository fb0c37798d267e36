"""Headers between client and upstream: hop-by-hop and identity look-alikes removed, then the
gateway's own identity headers (RFC 9440, Envoy's XFCC) and X-Forwarded-* set."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass

from aiohttp import web
from multidict import CIMultiDict

from gateway.identity import Identity

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authenticate",
        "proxy-authorization",
        "expect",
    }
)

# Headers that carry a client's identity or origin: never trusted from outside (anti-spoofing).
IDENTITY_HEADERS = frozenset(
    {
        "client-cert",
        "client-cert-chain",
        "x-forwarded-client-cert",
        "x-client-cert",
        "x-ssl-client-cert",
        "x-ssl-client-dn",
        "x-ssl-client-verify",
        "ssl-client-cert",
        "ssl-client-verify",
        "x-client-verify",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-forwarded-port",
        "forwarded",
        "x-real-ip",
        "x-request-id",
    }
)

SKIP_REQUEST = HOP_BY_HOP | IDENTITY_HEADERS
SKIP_RESPONSE = HOP_BY_HOP | {"content-length"}


@dataclass(frozen=True)
class ClientContext:
    """What the proxy needs to know about the downstream connection."""

    peer_ip: str
    host: str | None
    identity: Identity | None
    chain: tuple[bytes, ...]  # DER of intermediates above the leaf, when known
    request_id: str


def connection_tokens(values: Sequence[str]) -> set[str]:
    return {t.strip().lower() for v in values for t in v.split(",") if t.strip()}


def sf_binary(der: bytes) -> str:
    """RFC 8941 byte sequence: `:base64:`."""
    return ":" + base64.b64encode(der).decode("ascii") + ":"


def _xfcc_quote(value: str) -> str:
    if any(c in value for c in ',;="'):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return value


def xfcc(ident: Identity) -> str:
    """Envoy's X-Forwarded-Client-Cert element: Hash, Subject, URI and DNS of the leaf."""
    parts = [f"Hash={ident.sha256}", f"Subject={_xfcc_quote(ident.subject)}"]
    parts += [f"URI={_xfcc_quote(u)}" for u in ident.san_uri]
    parts += [f"DNS={_xfcc_quote(d)}" for d in ident.san_dns]
    return ";".join(parts)


def upstream_headers(
    request: web.BaseRequest, ctx: ClientContext, forward_identity: tuple[str, ...]
) -> CIMultiDict[str]:
    """Copy the request's end-to-end headers, drop identity look-alikes, then set ours."""
    drop = SKIP_REQUEST
    conn = request.headers.getall("Connection", ())
    if conn:
        drop = drop | connection_tokens(conn)
    headers: CIMultiDict[str] = CIMultiDict()
    for key, value in request.headers.items():
        if key.lower() not in drop:
            headers.add(key, value)
    headers["X-Forwarded-For"] = ctx.peer_ip
    headers["X-Forwarded-Proto"] = "https"
    if ctx.host:
        headers["X-Forwarded-Host"] = request.headers.get("Host", ctx.host)
    headers["X-Request-Id"] = ctx.request_id
    ident = ctx.identity
    if ident is not None:
        if "rfc9440" in forward_identity:
            headers["Client-Cert"] = sf_binary(ident.der)
            if ctx.chain:
                headers["Client-Cert-Chain"] = ", ".join(sf_binary(c) for c in ctx.chain)
        if "xfcc" in forward_identity:
            headers["X-Forwarded-Client-Cert"] = xfcc(ident)
    return headers
