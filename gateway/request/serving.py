"""A `ServingConfig`: one config compiled into everything the request path needs (per listener
its settings, the router, each route's policy and timeouts, each upstream), swapped as a whole."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import partial
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network

from gateway.config.model import GatewayConfig, RouteConfig
from gateway.downstream.admission import Admission
from gateway.downstream.connections import ListenerSettings
from gateway.downstream.listener import record_sni
from gateway.downstream.messages import Request
from gateway.http.headers import DEFAULT_RULES, HeaderRules
from gateway.observe.metrics import Metrics
from gateway.pki.ocsp import OcspChecker
from gateway.pki.tls import ServerContexts, server_context
from gateway.request.attempts import TimeoutLimits
from gateway.request.policy import RoutePolicy
from gateway.request.proxy import Upstream
from gateway.request.routing import Router

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


@dataclass(frozen=True)
class CompiledRoute:
    config: RouteConfig
    policy: RoutePolicy
    upstream: Upstream
    timeouts: TimeoutLimits  # the upstream's, with the route's overrides


@dataclass(frozen=True)
class ServingConfig:
    """Immutable once built; the gateway holds one reference and replaces it on reload."""

    config: GatewayConfig
    router: Router
    routes: dict[str, CompiledRoute]
    upstreams: dict[str, Upstream]
    listeners: dict[str, ListenerSettings]  # what each listener's new connections take
    admissions: dict[str, Admission]
    trusted_id_sources: tuple[IPv4Network | IPv6Network, ...] = ()
    header_rules: HeaderRules = DEFAULT_RULES

    def request_id(self, request: Request, peer_ip: str) -> str | None:
        """The client's X-Request-Id when its address is trusted and the id is sane."""
        if not self.trusted_id_sources:
            return None
        incoming = request.headers.get("X-Request-Id")
        if not incoming or not _REQUEST_ID.fullmatch(incoming):
            return None
        try:
            addr = ip_address(peer_ip)
        except ValueError:
            return None
        if any(addr in net for net in self.trusted_id_sources):
            return incoming
        return None

    async def close(self) -> None:
        for upstream in self.upstreams.values():
            await upstream.close()

    def retired_by(self, new: ServingConfig) -> list[Upstream]:
        """Upstream pools of this snapshot that `new` does not reuse."""
        keep = {id(u) for u in new.upstreams.values()}
        return [u for u in self.upstreams.values() if id(u) not in keep]


@dataclass(frozen=True)
class ReloadResult:
    """What one reload attempt did: ok, or every problem that made it keep the old config."""

    ok: bool
    trigger: str
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0


def build_snapshot(
    cfg: GatewayConfig,
    metrics: Metrics,
    previous: ServingConfig | None = None,
    ocsp: OcspChecker | None = None,
) -> ServingConfig:
    """Compile policies, create upstream pools and TLS contexts; raises ConfigError.

    Upstreams whose config did not change keep their pool (and its warm connections)."""
    contexts = {
        lst.name: ServerContexts(
            partial(
                server_context,
                lst.tls,
                f"listeners[{i}].tls",
                sni_callback=record_sni,
                alpn=("h2", "http/1.1") if lst.http2 else (),
            ),
            lst.tls,
            f"listeners[{i}].tls",
        )
        for i, lst in enumerate(cfg.listeners)
    }
    ocsp = ocsp or OcspChecker()
    admissions = {
        lst.name: Admission(lst.name, lst.tls, f"listeners[{i}].tls", ocsp, metrics)
        for i, lst in enumerate(cfg.listeners)
    }
    old = previous.upstreams if previous is not None else {}
    upstreams = {
        u.name: old[u.name]
        if u.name in old and old[u.name].config == u
        else Upstream(u, metrics, f"upstreams[{i}]")
        for i, u in enumerate(cfg.upstreams)
    }
    routes = {
        r.name: CompiledRoute(
            r,
            RoutePolicy(r.policy, f"routes[{i}].policy"),
            upstreams[r.upstream],
            TimeoutLimits.of(upstreams[r.upstream].config, r.timeouts),
        )
        for i, r in enumerate(cfg.routes)
    }
    listeners = {
        lst.name: ListenerSettings(lst.name, lst, contexts[lst.name], admissions[lst.name], metrics)
        for lst in cfg.listeners
    }
    trusted = tuple(ip_network(n) for n in cfg.request_id.trust_from)
    rh = cfg.request_headers
    rules = HeaderRules(rh.strip_prefixes, reject_invalid=rh.invalid_names == "reject")
    return ServingConfig(
        cfg, Router(cfg.routes), routes, upstreams, listeners, admissions, trusted, rules
    )
