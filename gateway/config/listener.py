"""The configuration's model, listener half: a TLS port, its certificates, client trust,
revocation (CRL files or URLs, OCSP) and resource limits."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag

from gateway.config.values import Bind, Duration, FilePath, HttpUrl, Model, Name, Size, SizeOrZero


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
        "again with gateway.pki.verify's stricter profile; openssl: OpenSSL's verdict alone",
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
    body_min_rate: SizeOrZero = Field(
        default=500,
        description="bytes per second that extend body_timeout (0: the body_timeout alone)",
    )
    keepalive_timeout: Duration = Field(
        default=75.0, description="idle keep-alive connections are closed after this"
    )
    max_concurrent_streams: int = Field(
        default=100,
        ge=1,
        le=1000,
        description="HTTP/2: streams a client may have open at once on one connection "
        "(SETTINGS_MAX_CONCURRENT_STREAMS); a client that opens more loses its connection",
    )
    max_stream_resets: int = Field(
        default=200,
        ge=1,
        description="HTTP/2: streams a client may reset within 10 s on one connection (rapid "
        "reset, CVE-2023-44487); beyond, the connection ends with GOAWAY ENHANCE_YOUR_CALM",
    )
    max_control_frames: int = Field(
        default=1000,
        ge=10,
        description="HTTP/2: SETTINGS, PING and PRIORITY frames a client may send within 10 s "
        "on one connection; beyond, the connection ends with GOAWAY ENHANCE_YOUR_CALM",
    )
    stall_timeout: Duration = Field(
        default=30.0,
        description="HTTP/2: a stream whose answer cannot move for this long (the client keeps "
        "its flow-control window shut) is reset, and its upstream exchange ends",
    )


class ListenerConfig(Model):
    """One TLS port."""

    name: Name = Field(description="unique; the `listener` metric label")
    bind: Bind = Field(description="host:port or [v6]:port; port 0 picks a free port")
    tls: TlsConfig
    http2: bool = Field(
        default=True,
        description="offer HTTP/2 by ALPN (h2, then http/1.1); every stream goes through the "
        "same routes, policies, identity headers, limits, metrics and access log; false: "
        "HTTP/1.1 only",
    )
    limits: ListenerLimits = ListenerLimits()
