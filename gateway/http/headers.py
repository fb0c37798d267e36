"""Headers between client and upstream: hop-by-hop and identity look-alikes removed, then the
gateway's own identity headers (RFC 9440, Envoy's XFCC) and X-Forwarded-* set."""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from typing import Final

from gateway.base.bounded import Bounded
from gateway.base.errors import BadRequest
from gateway.pki.identity import Identity

HOP_BY_HOP: Final = frozenset(
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
IDENTITY_HEADERS: Final = frozenset(
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
    }
)

# Families of names that proxies and auth layers use to pass a verified user, a client
# certificate or the client's origin (nginx and Apache mod_ssl setups, HAProxy, Traefik,
# oauth2-proxy, Authelia, Kubernetes' auth proxy, Grafana's, Kong, AWS ALB, Google IAP,
# Cloudflare Access, Azure App Service, Tailscale), and the overrides some frameworks honour
# for the path or the method a route decided on. Matched after lower-casing and reading `_`
# as `-` (CGI-style servers map both to one variable).
IDENTITY_PREFIXES: Final = (
    "x-ssl-",
    "ssl-",
    "x-client-",
    "x-forwarded-",
    "forwarded",
    "x-real-ip",
    "remote-",
    "x-remote-",
    "x-auth-request-",
    "x-authenticated-",
    "x-webauth-",
    "x-user",
    "x-email",
    "x-consumer-",
    "x-credential-",
    "client-cert",
    "x-amzn-oidc-",
    "x-amzn-mtls-",
    "x-goog-authenticated-",
    "x-goog-iap-",
    "cf-access-",
    "cf-connecting-ip",
    "true-client-ip",
    "x-cluster-client-ip",
    "x-ms-client-principal",
    "x-arr-clientcert",
    "tailscale-user-",
    "x-original-url",
    "x-original-uri",
    "x-rewrite-url",
    "x-http-method",
    "x-method-override",
)

# the body's framing is set by the proxy from what it actually sends, never copied; the
# gateway sets its own X-Request-Id. Identity look-alikes go by HeaderRules (counted).
SKIP_REQUEST: Final = HOP_BY_HOP | {"content-length", "x-request-id"}
_NOT_TRAILERS: Final = SKIP_REQUEST | {"host"}
SKIP_RESPONSE: Final = HOP_BY_HOP | {"content-length"}


class ClientContext:
    """What the proxy needs to know about the downstream connection (a compiled class: a
    NamedTuple is built by interpreted code, once per request)."""

    def __init__(
        self,
        peer_ip: str,
        host: str | None,
        identity: Identity | None,
        chain: tuple[bytes, ...],  # DER of intermediates above the leaf, when known
        request_id: str,
    ) -> None:
        self.peer_ip = peer_ip
        self.host = host
        self.identity = identity
        self.chain = chain
        self.request_id = request_id


KEEP: Final = 0
IDENTITY: Final = 1
INVALID_NAME: Final = 2
_NAME_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")


class HeaderRules:
    """Which incoming field names never reach an upstream, in headers and trailers alike:
    identity families (IDENTITY_PREFIXES plus the config's `strip_prefixes`) and names with a
    character other than a letter, a digit or `-` (dropped, or the request refused)."""

    def __init__(self, extra_prefixes: Sequence[str] = (), reject_invalid: bool = False) -> None:
        self.prefixes = IDENTITY_PREFIXES + tuple(
            p.lower().replace("_", "-") for p in extra_prefixes
        )
        self.reject_invalid = reject_invalid
        self._verdicts: dict[str, int] = {}

    def verdict(self, name: str) -> int:
        """KEEP, IDENTITY or INVALID_NAME for a lower-cased field name (cached: clients repeat
        the same few names; bounded, since they choose them)."""
        verdict = self._verdicts.get(name)
        if verdict is None:
            verdict = self._judge(name)
            if len(self._verdicts) < 4096:
                self._verdicts[name] = verdict
        return verdict

    def _judge(self, name: str) -> int:
        spelled = name.replace("_", "-")
        if spelled in IDENTITY_HEADERS or spelled.startswith(self.prefixes):
            return IDENTITY
        if not _NAME_CHARS.issuperset(name):
            return INVALID_NAME
        return KEEP

    def forwardable_trailer(self, name: str) -> bool:
        lower = name.lower()
        return lower not in _NOT_TRAILERS and self.verdict(lower) == KEEP


DEFAULT_RULES: Final = HeaderRules()


def connection_tokens(values: Sequence[str]) -> set[str]:
    return {t.strip().lower() for v in values for t in v.split(",") if t.strip()}


_REQUEST_DROPS: Final[Bounded[tuple[str, ...], frozenset[str]]] = Bounded(
    256
)  # clients choose them


def _request_drop(conn: tuple[str, ...]) -> frozenset[str]:
    """The request headers not to forward given its Connection header(s): the usual values
    ("keep-alive") are worked out once."""
    drop = _REQUEST_DROPS.get(conn)
    if drop is None:
        drop = _REQUEST_DROPS.put(conn, SKIP_REQUEST | (connection_tokens(conn) - {"host"}))
    return drop


_RESPONSE_DROPS: Final[Bounded[tuple[bool, tuple[str, ...]], frozenset[str]]] = Bounded(256)


def response_drop(chunked: bool, conn: tuple[str, ...]) -> frozenset[str]:
    """The response fields (and trailers) not to pass on: hop-by-hop ones, the framing (a
    chunked answer keeps its Trailer header), those its Connection header(s) name, and the
    X-Request-Id the gateway sets itself. The usual values are worked out once."""
    key = (chunked, conn)
    drop = _RESPONSE_DROPS.get(key)
    if drop is None:
        base = SKIP_RESPONSE - {"trailer"} if chunked else SKIP_RESPONSE
        drop = _RESPONSE_DROPS.put(key, base | connection_tokens(conn) | {"x-request-id"})
    return drop


def sf_binary(der: bytes) -> str:
    """RFC 8941 byte sequence: `:base64:`."""
    return ":" + base64.b64encode(der).decode("ascii") + ":"


# characters a certificate may carry that must never reach a head or a log line raw: C0 and C1
# controls (CR, LF, NUL, NEL, ...), DEL and the Unicode line and paragraph separators
_UNSAFE: Final = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _escape_unsafe(value: str) -> str:
    return _UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", value)


def _xfcc_quote(value: str) -> str:
    """An XFCC value: quoted (backslash escapes) when it holds a delimiter, a quote, a
    backslash or a character that is not safe in a head, which is escaped as \\uXXXX."""
    if any(c in value for c in ',;="\\') or _UNSAFE.search(value):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return '"' + _escape_unsafe(escaped) + '"'
    return value


def xfcc(ident: Identity) -> str:
    """Envoy's X-Forwarded-Client-Cert element: Hash, Subject, URI and DNS of the leaf."""
    parts = [f"Hash={ident.sha256}", f"Subject={_xfcc_quote(ident.subject)}"]
    parts += [f"URI={_xfcc_quote(u)}" for u in ident.san_uri]
    parts += [f"DNS={_xfcc_quote(d)}" for d in ident.san_dns]
    return ";".join(parts)


def upstream_headers(
    fields: list[tuple[str, str]],
    names: list[str],
    connection: tuple[str, ...],
    host: str | None,
    ctx: ClientContext,
    forward_identity: tuple[str, ...],
    rules: HeaderRules = DEFAULT_RULES,
    dropped: list[str] | None = None,
) -> list[tuple[str, str]]:
    """Copy the request's end-to-end fields, drop identity look-alikes, then add ours.

    `names` are the fields' names in lower case, `connection` the values of its Connection
    fields and `host` its first Host field, all as the request's head gave them. The names
    `rules` dropped are added to `dropped`; a name it refuses raises BadRequest."""
    drop = _request_drop(connection) if connection else SKIP_REQUEST
    headers = []
    for i in range(len(fields)):
        name = names[i]
        if name in drop:
            continue
        verdict = rules.verdict(name)
        if verdict == KEEP:
            headers.append(fields[i])
            continue
        if verdict == INVALID_NAME and rules.reject_invalid:
            raise BadRequest(
                f"header name {fields[i][0][:100]!r} has a character other than "
                "letters, digits and '-' (request_headers.invalid_names: reject)"
            )
        if dropped is not None:
            dropped.append(name)
    headers.append(("X-Forwarded-For", ctx.peer_ip))
    headers.append(("X-Forwarded-Proto", "https"))
    if ctx.host:
        headers.append(("X-Forwarded-Host", host if host is not None else ctx.host))
    headers.append(("X-Request-Id", ctx.request_id))
    ident = ctx.identity
    if ident is not None and forward_identity:
        headers += _identity_headers(ident, ctx.chain, forward_identity)
    return headers


_IDENTITY_HEADERS: Final[
    Bounded[tuple[str, tuple[bytes, ...], tuple[str, ...]], list[tuple[str, str]]]
] = Bounded(4096)


def _identity_headers(
    ident: Identity, chain: tuple[bytes, ...], forward_identity: tuple[str, ...]
) -> list[tuple[str, str]]:
    """The identity headers of a certificate, encoded once per certificate and route kind."""
    key = (ident.sha256, chain, forward_identity)
    cached = _IDENTITY_HEADERS.get(key)
    if cached is None:
        cached = []
        if "rfc9440" in forward_identity:
            cached.append(("Client-Cert", sf_binary(ident.der)))
            if chain:
                cached.append(("Client-Cert-Chain", ", ".join(sf_binary(c) for c in chain)))
        if "xfcc" in forward_identity:
            cached.append(("X-Forwarded-Client-Cert", xfcc(ident)))
        for name, value in cached:  # defence in depth: built above to be safe, checked once
            if _UNSAFE.search(value):
                raise ValueError(f"unsafe character in the {name} built for {ident.sha256}")
        _IDENTITY_HEADERS.put(key, cached)
    return cached
