"""The instances behind an upstream: one keep-alive pool each, health state (active checks and
passive ejection with back-off), and the balancer that picks one for each attempt."""

from __future__ import annotations

import ssl
import time
from collections.abc import Collection
from types import SimpleNamespace

import aiohttp
from yarl import URL

from gateway.base.errors import ConfigError
from gateway.base.log import event, proxy_log
from gateway.config.model import HealthCheck, PassiveHealth, TargetSpec, UpstreamConfig
from gateway.observe.metrics import Metrics
from gateway.upstream.h2pool import H2Pool
from gateway.upstream.pool import Endpoint, Pool


def upstream_tls_context(cfg: UpstreamConfig, where: str) -> ssl.SSLContext | None:
    """Client TLS for https:// targets: verify against `tls.ca` (or the system store), present
    the gateway's own certificate when configured. None for plain http."""
    if not any(t.url.startswith("https://") for t in cfg.target_specs()):
        return None
    tls = cfg.tls
    try:
        ctx = ssl.create_default_context(cafile=None)
        if tls.ca:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            for ca in tls.ca:
                ctx.load_verify_locations(cafile=ca)
        if tls.client_cert and tls.client_key:
            ctx.load_cert_chain(tls.client_cert, tls.client_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot set up TLS to the upstream: {exc}", f"{where}.tls") from None
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.minimum_version = (
        ssl.TLSVersion.TLSv1_3 if tls.min_version == "1.3" else ssl.TLSVersion.TLSv1_2
    )
    if cfg.protocol == "h2":
        ctx.set_alpn_protocols(["h2"])
    return ctx


async def _headers_sent(
    _session: aiohttp.ClientSession, ctx: SimpleNamespace, _params: object
) -> None:
    """Trace hook: the request head is on the wire (the connect stage is over); the caller's
    `on_sent` moves its deadline from the connect budget to the headers budget."""
    on_sent = getattr(ctx.trace_request_ctx, "on_sent", None)
    if on_sent is not None:
        on_sent()


class Target:
    """One instance: base URL, pool, in-flight count, and whether it may get traffic."""

    def __init__(
        self,
        upstream: str,
        spec: TargetSpec,
        cfg: UpstreamConfig,
        tls: ssl.SSLContext | None,
        metrics: Metrics,
    ) -> None:
        self.upstream = upstream
        self.url = spec.url
        base = URL(spec.url)
        self.origin = f"{base.scheme}://{base.raw_authority}"
        self.base_path = base.raw_path.rstrip("/")
        self.weight = spec.weight
        self.inflight = 0
        self.current_weight = 0  # smooth weighted round robin state
        self._tls = tls
        self._limit = cfg.max_connections
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=cfg.timeouts.connect, sock_connect=cfg.timeouts.connect
        )
        self._passive = cfg.passive
        self._session: aiohttp.ClientSession | None = None  # HTTP/1.1 health checks
        assert base.host is not None and base.port is not None
        endpoint = Endpoint(base.host, base.port, tls, cfg.tls.server_name or base.host)
        self.pool: Pool | H2Pool
        if cfg.protocol == "h1":
            self.pool = Pool(endpoint, cfg.max_connections)
        else:
            self.pool = H2Pool(endpoint, cfg.max_connections, cfg.max_streams)
        # active checks (healthy until proven otherwise) and passive ejection
        self.active_healthy = True
        self._passes = 0
        self._fails = 0
        self._consecutive_failures = 0
        self._ejections = 0
        self.ejected_until = 0.0
        # set on every change (set_function does not work across worker processes)
        self._gauge = metrics.upstream_target_healthy.labels(upstream, spec.url)
        self._published: bool | None = None
        self.available()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._limit,
                keepalive_timeout=30,
                ttl_dns_cache=60,
                ssl=self._tls if self._tls is not None else False,
            )
            trace = aiohttp.TraceConfig()
            trace.on_request_headers_sent.append(_headers_sent)
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self._timeout,
                trace_configs=[trace],
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
                trust_env=False,
            )
        return self._session

    async def close(self) -> None:
        await self.pool.close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def available(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        up = self.active_healthy and self.ejected_until <= now
        if up is not self._published:
            self._published = up
            self._gauge.set(1.0 if up else 0.0)
        return up

    # ------------------------------------------------------------ passive health

    def succeeded(self) -> None:
        self._consecutive_failures = 0
        if self.ejected_until and self.ejected_until <= time.monotonic():
            self._ejections = 0  # it came back and works: the next ejection starts short again
            self.ejected_until = 0.0

    def failed(self, why: str) -> None:
        """A connect error or a 5xx: eject after `consecutive_failures` in a row."""
        self._consecutive_failures += 1
        passive: PassiveHealth = self._passive
        if self._consecutive_failures < passive.consecutive_failures:
            return
        seconds = min(passive.base_ejection * (2**self._ejections), passive.max_ejection)
        self._ejections += 1
        self._consecutive_failures = 0
        self.ejected_until = time.monotonic() + seconds
        self.available()
        proxy_log.warning(
            "upstream target ejected",
            extra=event(upstream=self.upstream, target=self.url, seconds=seconds, why=why),
        )

    # ------------------------------------------------------------ active health

    def checked(self, ok: bool, health: HealthCheck, detail: str) -> None:
        if ok:
            self._passes, self._fails = self._passes + 1, 0
            if not self.active_healthy and self._passes >= health.healthy_threshold:
                self.active_healthy = True
                self.available()
                proxy_log.info(
                    "upstream target healthy",
                    extra=event(upstream=self.upstream, target=self.url, detail=detail),
                )
        else:
            self._fails, self._passes = self._fails + 1, 0
            if self.active_healthy and self._fails >= health.unhealthy_threshold:
                self.active_healthy = False
                self.available()
                proxy_log.warning(
                    "upstream target unhealthy",
                    extra=event(upstream=self.upstream, target=self.url, detail=detail),
                )


class Balancer:
    """Picks the next target among those available and not yet tried for this request."""

    def __init__(self, targets: list[Target], kind: str) -> None:
        self.targets = targets
        self.kind = kind
        self._next = 0

    def pick(self, exclude: Collection[Target] = ()) -> Target | None:
        now = time.monotonic()
        if len(self.targets) == 1 and not exclude:  # the usual upstream: nothing to choose
            only = self.targets[0]
            return only if only.available(now) else None
        skip = set(map(id, exclude))
        candidates = [t for t in self.targets if id(t) not in skip and t.available(now)]
        if not candidates:
            return None
        if self.kind == "least_request":
            self._next = (self._next + 1) % len(candidates)
            rotated = candidates[self._next :] + candidates[: self._next]
            return min(rotated, key=lambda t: t.inflight / t.weight)
        total = 0
        best = candidates[0]
        for t in candidates:  # smooth weighted round robin (nginx's)
            t.current_weight += t.weight
            total += t.weight
            if t.current_weight > best.current_weight:
                best = t
        best.current_weight -= total
        return best
