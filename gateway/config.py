"""The configuration's model: frozen, validated pydantic classes with defaults and descriptions
(the JSON Schema is made from them); `configload` turns YAML into one."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
)

from gateway.configtypes import (
    EKU_NAMES,
    Bind,
    Cidr,
    Duration,
    EkuOid,
    FilePath,
    HexDigest,
    HexSerial,
    HostName,
    HttpUrl,
    Method,
    Model,
    Name,
    PathPrefix,
    Size,
    Values,
    parse_duration,
)
from gateway.configupstream import (
    HealthCheck,
    PassiveHealth,
    Retries,
    RouteTimeouts,
    TargetSpec,
    UpstreamConfig,
    UpstreamTimeouts,
    UpstreamTls,
)

__all__ = [
    "EKU_NAMES",
    "GatewayConfig",
    "HealthCheck",
    "Model",
    "PassiveHealth",
    "Retries",
    "RouteTimeouts",
    "TargetSpec",
    "UpstreamConfig",
    "UpstreamTimeouts",
    "UpstreamTls",
    "parse_duration",
]  # fmt: skip

# --------------------------------------------------------------------------- the model


class CrlUrl(Model):
    """A CRL fetched over HTTP on a schedule; the last good copy is kept in `cache`."""

    url: HttpUrl = Field(description="where the CRL is published (http:// or https://)")
    cache: FilePath = Field(description="file holding the last good copy (written atomically)")
    refresh: Duration = Field(default=3600.0, description="how often to download it again")
    timeout: Duration = Field(default=10.0, description="per download")


def _crl_tag(value: Any) -> str:
    return "__url__" if isinstance(value, dict) else "__file__"


CrlSource = Annotated[
    Annotated[FilePath, Tag("__file__")] | Annotated[CrlUrl, Tag("__url__")],
    Discriminator(_crl_tag),
]


class OcspConfig(Model):
    """OCSP status of client certificates, checked after the handshake, before any request."""

    mode: Literal["off", "soft", "hard"] = Field(
        default="off",
        description="soft: ask, let the client through when the responder cannot answer; "
        "hard: reject then (ocsp_error)",
    )
    responder_url: HttpUrl | None = Field(
        default=None, description="responder to ask; default: the leaf's AIA OCSP URL"
    )
    cache_ttl: Duration = Field(
        default=300.0, description="cache answers by issuer and serial this long"
    )
    timeout: Duration = Field(default=2.0, description="per query")


class TlsConfig(Model):
    """TLS of one listener: server certificate, client trust, revocation, profile."""

    cert: FilePath = Field(description="server certificate chain (PEM): leaf first")
    key: FilePath = Field(description="private key of the server certificate (PEM)")
    client_ca: tuple[FilePath, ...] = Field(
        default=(), description="trust bundles (PEM) for client certificates"
    )
    client_auth: Literal["require", "optional", "none"] = Field(
        default="require",
        description="require: no verified certificate, no handshake; optional: anonymous "
        "clients reach routes with require_client_cert: false",
    )
    min_version: Literal["1.2", "1.3"] = Field(default="1.2", description="lowest TLS version")
    handshake_timeout: Duration = Field(
        default=10.0, description="drop a client that has not finished the handshake by then"
    )
    client_hello_timeout: Duration = Field(
        default=3.0,
        description="drop a connection that has not sent a byte by then (a TCP connection "
        "that never says hello holds a handshake slot for nothing)",
    )
    crl: tuple[CrlSource, ...] = Field(
        default=(), description="CRL files (PEM/DER) or {url, cache, refresh} entries"
    )
    allow_missing_crl: bool = Field(
        default=False,
        description="start even when a CA of client_ca has no CRL (its clients fail crl_error)",
    )
    ocsp: OcspConfig = Field(default=OcspConfig(), description="OCSP for client certificates")
    verify_profile: Literal["openssl", "strict"] = Field(
        default="strict",
        description="strict (default): after OpenSSL accepted a new client chain, verify it "
        "again with gateway.verify's stricter profile; openssl: OpenSSL's verdict alone",
    )
    expiry_warning: Duration = Field(
        default=28 * 86400.0, description="warn when the server certificate has less than this left"
    )
    allow_readable_key: bool = Field(
        default=False,
        description="start even when the key file is readable by group or others "
        "(`check` warns either way)",
    )
    crl_warning: Duration = Field(
        default=86400.0, description="warn when a CRL's nextUpdate is closer than this"
    )
    session_cache: int = Field(
        default=2048,
        ge=0,
        le=1_000_000,
        description="TLS sessions each worker keeps for resumption (about 12 KB each); "
        "a full cache starts afresh; 0: stateless session tickets instead",
    )
    session_timeout: Duration = Field(
        default=300.0,
        description="longest time after its full handshake that a client may resume its TLS "
        "session",
    )


class ListenerLimits(Model):
    """Resource limits of one listener; each is counted in limits_hit_total when it bites."""

    max_connections: int = Field(
        default=10000, ge=1, description="open client connections; more wait in the backlog"
    )
    max_handshakes: int = Field(
        default=512, ge=1, description="TLS handshakes in progress at once; more wait"
    )
    max_request_line: int = Field(
        default=8190, ge=256, le=1048576, description="bytes of the request line (414 beyond)"
    )
    max_header_size: int = Field(
        default=8190, ge=256, le=1048576, description="bytes of one header line (431 beyond)"
    )
    max_headers: int = Field(default=100, ge=8, le=10000, description="header count (431 beyond)")
    max_connection_age: Duration = Field(
        default=3600.0,
        description="a connection carries no request started after this: it bounds how long "
        "the identity decision of one handshake lives",
    )
    max_request_body: Size = Field(
        default=100 * 1024**2, description="request body bytes (413 beyond)"
    )
    header_timeout: Duration = Field(
        default=10.0, description="a request head must arrive completely within this (408)"
    )
    body_timeout: Duration = Field(
        default=20.0,
        description="a request body must arrive within this, plus a second for every "
        "body_min_rate bytes received (408)",
    )
    body_min_rate: Size = Field(
        default=500,
        description="bytes per second that extend body_timeout (0: the body_timeout alone)",
    )
    keepalive_timeout: Duration = Field(
        default=75.0, description="idle keep-alive connections are closed after this"
    )


class ListenerConfig(Model):
    """One TLS port."""

    name: Name = Field(description="unique; the `listener` metric label")
    bind: Bind = Field(description="host:port or [v6]:port; port 0 picks a free port")
    tls: TlsConfig
    limits: ListenerLimits = ListenerLimits()


class RouteMatch(Model):
    """What a request must look like for the route to apply."""

    host: HostName | None = Field(
        default=None, description="exact host or *.example.org; default: any"
    )
    path_prefix: PathPrefix = Field(
        default="/", description="normalised path prefix, matched on whole segments"
    )
    methods: tuple[Method, ...] | None = Field(default=None, description="default: any")
    path_parameters: bool = Field(
        default=False,
        description="accept ';' in the path (also as %3B): the route must then match both with "
        "and without every segment's ;parameters, as servlet containers strip them",
    )


class NameMatch(Model):
    """Distinguished-name attributes; each value is exact, a glob, or `re:` + regex."""

    CN: Values | None = Field(default=None, description="commonName")
    O: Values | None = Field(default=None, description="organizationName")  # noqa: E741
    OU: Values | None = Field(default=None, description="organizationalUnitName")
    C: Values | None = Field(default=None, description="countryName")
    L: Values | None = Field(default=None, description="localityName")
    ST: Values | None = Field(default=None, description="stateOrProvinceName")
    emailAddress: Values | None = Field(default=None, description="emailAddress")
    serialNumber: Values | None = Field(default=None, description="serialNumber attribute")

    def items(self) -> Iterable[tuple[str, tuple[str, ...]]]:
        return ((k, v) for k, v in self.__dict__.items() if v is not None)


class Matcher(Model):
    """One allow/deny entry: every field given must match (AND)."""

    subject: NameMatch | None = Field(default=None, description="subject attributes")
    issuer: NameMatch | None = Field(default=None, description="issuer attributes")
    san_dns: Values | None = Field(default=None, description="SAN DNS names (glob * stops at .)")
    san_uri: Values | None = Field(default=None, description="SAN URIs (glob * stops at /)")
    san_email: Values | None = Field(default=None, description="SAN e-mail addresses")
    san_ip: Values | None = Field(default=None, description="SAN IP addresses")
    serial: HexSerial | None = Field(default=None, description="certificate serial (hex)")
    fingerprint_sha256: HexDigest | None = Field(
        default=None, description="SHA-256 of the certificate DER (hex)"
    )
    spki_sha256: HexDigest | None = Field(
        default=None, description="SHA-256 of the SubjectPublicKeyInfo (hex): a key pin"
    )


def _allow_tag(value: Any) -> str:
    return "__any__" if isinstance(value, str) else "__list__"


def _any(value: Any) -> str:
    if value != "any":
        raise ValueError(f"{value!r} is not allowed; write `any` or a list of matchers")
    return "any"


AllowSpec = Annotated[
    Annotated[Literal["any"], BeforeValidator(_any), Tag("__any__")]
    | Annotated[tuple[Matcher, ...], Tag("__list__")],
    Discriminator(_allow_tag),
]


class Policy(Model):
    """Who may use the route: fail closed, deny first, then required_eku, then allow."""

    require_client_cert: bool = Field(
        default=True, description="false admits anonymous clients (client_auth: optional)"
    )
    required_eku: tuple[EkuOid, ...] = Field(
        default=(), description="EKU names or dotted OIDs the leaf must list"
    )
    allow: AllowSpec | None = Field(
        default=None, description="`any` (every verified client) or matchers (OR)"
    )
    deny: tuple[Matcher, ...] = Field(default=(), description="matchers checked first")


class RouteConfig(Model):
    """First match wins."""

    name: Name = Field(description="unique; the `route` metric label")
    match: RouteMatch = RouteMatch()
    upstream: Name = Field(description="an upstream name")
    policy: Policy = Policy()
    forward_identity: tuple[Literal["rfc9440", "xfcc"], ...] = Field(
        default=(), description="identity headers the upstream gets"
    )
    timeouts: RouteTimeouts = Field(
        default=RouteTimeouts(), description="overrides of the upstream's timeouts"
    )
    max_request_body: Size | None = Field(
        default=None, description="request body limit for this route (default: the listener's)"
    )
    strip_prefix: bool = Field(
        default=False, description="remove match.path_prefix from the path sent upstream"
    )
    rewrite_prefix: PathPrefix | None = Field(
        default=None, description="replace match.path_prefix with this in the path sent upstream"
    )
    websocket: bool = Field(
        default=False, description="allow WebSocket upgrades (same policy as other requests)"
    )


class AdminConfig(Model):
    """Plain-HTTP admin port: /, /status, /certs, /metrics, /healthz, /readyz, POST /reload."""

    bind: Bind = Field(default="127.0.0.1:9901", description="keep it on loopback")
    ready_requires_upstreams: bool | tuple[Name, ...] = Field(
        default=False,
        description="/readyz is 503 while these upstreams (true: all) have no healthy target",
    )


class RequestIdConfig(Model):
    """Where request ids come from: generated, or an incoming X-Request-Id from trusted peers."""

    trust_from: tuple[Cidr, ...] = Field(
        default=(), description="peer networks whose X-Request-Id is kept (CIDRs)"
    )


HeaderPrefix = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9_\-]+$", to_lower=True, min_length=2)
]


class RequestHeadersConfig(Model):
    """Incoming request fields (headers and trailers) that never reach an upstream, besides
    hop-by-hop ones: identity families (built in: x-ssl-, ssl-, x-client-, x-forwarded-,
    forwarded, x-real-ip, remote-, x-auth-request-, client-cert, … see docs/configuration.md),
    matched in any case with `_` read as `-`, and names with other characters."""

    strip_prefixes: tuple[HeaderPrefix, ...] = Field(
        default=(), description="more identity header name prefixes (added to the built-in ones)"
    )
    invalid_names: Literal["drop", "reject"] = Field(
        default="drop",
        description="a field name with a character other than letters, digits and '-' "
        "('_', '.'): dropped (counted and logged), or the request refused with 400",
    )


class ReloadConfig(Model):
    """Reload triggers besides SIGHUP and POST /reload."""

    watch: bool = Field(default=True, description="reload when a referenced file changes")
    debounce: Duration = Field(default=0.5, description="wait for writes to settle")


class LoggingConfig(Model):
    """JSON lines on stdout."""

    level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="least severe level written"
    )
    access_log: bool = Field(default=True, description="one JSON line per request")


def _non_empty(items: tuple[Any, ...]) -> tuple[Any, ...]:
    if not items:
        raise ValueError("must list at least one entry")
    return items


class GatewayConfig(Model):
    """mtls-gateway configuration (relative file paths resolve against the file's folder)."""

    listeners: Annotated[tuple[ListenerConfig, ...], AfterValidator(_non_empty)] = Field(
        description="TLS ports", json_schema_extra={"minItems": 1}
    )
    upstreams: Annotated[tuple[UpstreamConfig, ...], AfterValidator(_non_empty)] = Field(
        description="services to forward to", json_schema_extra={"minItems": 1}
    )
    routes: Annotated[tuple[RouteConfig, ...], AfterValidator(_non_empty)] = Field(
        description="first match wins", json_schema_extra={"minItems": 1}
    )
    admin: AdminConfig | None = Field(default=AdminConfig(), description="null disables it")
    logging: LoggingConfig = LoggingConfig()
    reload: ReloadConfig = ReloadConfig()
    request_id: RequestIdConfig = RequestIdConfig()
    request_headers: RequestHeadersConfig = RequestHeadersConfig()
    shutdown_timeout: Duration = Field(
        default=30.0, description="SIGTERM: how long in-flight requests may finish"
    )
