"""A `Snapshot`: one config compiled into everything the request path needs, swapped as a whole."""

from __future__ import annotations

import ssl
from dataclasses import dataclass

from gateway.config import GatewayConfig, RouteConfig
from gateway.listener import record_sni
from gateway.metrics import Metrics
from gateway.policy import RoutePolicy
from gateway.proxy import Upstream
from gateway.routing import Router
from gateway.tls import server_context


@dataclass(frozen=True)
class CompiledRoute:
    config: RouteConfig
    policy: RoutePolicy
    upstream: Upstream


@dataclass(frozen=True)
class Snapshot:
    """Immutable once built; the gateway holds one reference and replaces it on reload."""

    config: GatewayConfig
    router: Router
    routes: dict[str, CompiledRoute]
    upstreams: dict[str, Upstream]
    contexts: dict[str, ssl.SSLContext]

    async def close(self) -> None:
        for upstream in self.upstreams.values():
            await upstream.close()


def build_snapshot(cfg: GatewayConfig, metrics: Metrics) -> Snapshot:
    """Compile policies, create upstream pools and TLS contexts; raises ConfigError."""
    contexts = {
        lst.name: server_context(lst.tls, f"listeners[{i}].tls", sni_callback=record_sni)
        for i, lst in enumerate(cfg.listeners)
    }
    upstreams = {u.name: Upstream(u, metrics) for u in cfg.upstreams}
    routes = {
        r.name: CompiledRoute(
            r, RoutePolicy(r.policy, f"routes[{i}].policy"), upstreams[r.upstream]
        )
        for i, r in enumerate(cfg.routes)
    }
    return Snapshot(cfg, Router(cfg.routes), routes, upstreams, contexts)
