"""The configuration's model: frozen, validated pydantic classes with defaults and descriptions
(the JSON Schema is made from them); `config.load` turns YAML into one. Its listener half
is `config.listener`, its upstream half `config.upstream`."""

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

from gateway.config.listener import (
    ListenerConfig,
)
from gateway.config.upstream import (
    HealthCheck,
    PassiveHealth,
    Retries,
    RouteTimeouts,
    TargetSpec,
    UpstreamConfig,
    UpstreamTimeouts,
    UpstreamTls,
)
from gateway.config.values import (
    EKU_NAMES,
    Bind,
    Cidr,
    Duration,
    EkuOid,
    HexDigest,
    HexSerial,
    HostName,
    Method,
    Model,
    Name,
    PathPrefix,
    Size,
    Values,
    parse_duration,
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
