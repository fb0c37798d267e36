"""The configuration's model, upstream half: an upstream, its targets, timeouts, health
checks, retries and TLS (`config` holds the rest and re-exports these)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    Field,
)

from gateway.config.values import (
    Duration,
    FilePath,
    Model,
    Name,
    PathPrefix,
    Size,
    UpstreamUrl,
)


class UpstreamTimeouts(Model):
    """How long the gateway waits for an upstream (exceeded: 504 upstream_timeout)."""

    connect: Duration = Field(default=5.0, description="TCP (and TLS) connect")
    read: Duration = Field(
        default=30.0, description="default for `headers` and `idle` when those are not set"
    )
    headers: Duration | None = Field(
        default=None, description="from the request sent to the response headers"
    )
    idle: Duration | None = Field(default=None, description="longest pause between body chunks")
    total: Duration | None = Field(default=None, description="the whole exchange; default none")


class RouteTimeouts(Model):
    """Per-route overrides of the upstream's timeouts (unset keys keep the upstream's)."""

    connect: Duration | None = Field(default=None, description="TCP (and TLS) connect")
    headers: Duration | None = Field(default=None, description="until the response headers")
    idle: Duration | None = Field(default=None, description="longest pause between body chunks")
    total: Duration | None = Field(default=None, description="the whole exchange")


class TargetSpec(Model):
    """One instance of an upstream."""

    url: UpstreamUrl = Field(description="http(s)://host:port[/base-path]")
    weight: int = Field(default=1, ge=1, le=1000, description="share of the traffic")


def _target(value: Any) -> Any:
    return {"url": value} if isinstance(value, str) else value


Target = Annotated[
    TargetSpec, BeforeValidator(_target, json_schema_input_type=UpstreamUrl | TargetSpec)
]


class HealthCheck(Model):
    """Active health checks: GET `path` on every target every `interval`."""

    path: PathPrefix = Field(description="request path, e.g. /healthz")
    interval: Duration = Field(default=5.0, description="time between checks of one target")
    timeout: Duration = Field(default=2.0, description="a slower answer counts as a failure")
    healthy_threshold: int = Field(default=2, ge=1, le=100, description="passes to be healthy")
    unhealthy_threshold: int = Field(default=3, ge=1, le=100, description="fails to be down")
    expect_status: tuple[int, int] = Field(
        default=(200, 399), description="[lowest, highest] status that passes"
    )


class PassiveHealth(Model):
    """Ejection after consecutive failures seen on real traffic."""

    consecutive_failures: int = Field(
        default=5, ge=1, le=1000, description="connect errors or 5xx in a row before ejection"
    )
    base_ejection: Duration = Field(default=10.0, description="first ejection; doubles each time")
    max_ejection: Duration = Field(default=300.0, description="longest ejection")


class Retries(Model):
    """Retries to another target, only where safe (connect failures; resets before any
    response byte for idempotent methods)."""

    attempts: int = Field(default=1, ge=0, le=5, description="extra tries per request")
    budget: float = Field(
        default=0.2, ge=0, le=1, description="retries at most this share of requests"
    )
    min_per_second: float = Field(
        default=3.0, ge=0, description="retries always allowed per second"
    )
    buffer_body: Size = Field(
        default=64 * 1024, description="bodies up to this size are buffered so they can be retried"
    )


class UpstreamTls(Model):
    """TLS to https:// targets."""

    ca: tuple[FilePath, ...] = Field(
        default=(), description="CA bundles that verify the upstream; default: the system store"
    )
    server_name: str | None = Field(
        default=None, description="name to send (SNI) and verify; default: the URL's host"
    )
    client_cert: FilePath | None = Field(
        default=None, description="the gateway's own certificate chain for mTLS to the upstream"
    )
    client_key: FilePath | None = Field(default=None, description="its private key")
    min_version: Literal["1.2", "1.3"] = Field(default="1.2", description="lowest TLS version")


class UpstreamConfig(Model):
    """A service requests are forwarded to: one `url`, or several `targets`."""

    name: Name = Field(description="unique; the `upstream` metric label")
    url: UpstreamUrl | None = Field(
        default=None, description="http(s)://host:port[/base-path] (one target)"
    )
    targets: tuple[Target, ...] = Field(
        default=(), description="several instances: URLs or {url, weight}"
    )
    balance: Literal["round_robin", "least_request"] = Field(
        default="round_robin", description="how a target is picked"
    )
    timeouts: UpstreamTimeouts = UpstreamTimeouts()
    max_connections: int = Field(
        default=100, ge=1, le=100000, description="keep-alive pool size per target"
    )
    protocol: Literal["h1", "h2c", "h2"] = Field(
        default="h1",
        description="what the targets speak: HTTP/1.1, HTTP/2 in clear (h2c, http:// targets) "
        "or HTTP/2 over TLS (h2, https:// targets, agreed by ALPN)",
    )
    max_streams: int = Field(
        default=100,
        ge=1,
        le=10000,
        description="h2c/h2: requests at once on one connection (fewer if the upstream says so)",
    )
    health: HealthCheck | None = Field(default=None, description="active health checks")
    passive: PassiveHealth = PassiveHealth()
    retries: Retries = Retries()
    tls: UpstreamTls = UpstreamTls()

    def target_specs(self) -> tuple[TargetSpec, ...]:
        return self.targets or ((TargetSpec(url=self.url),) if self.url else ())
