"""An upstream: its targets and their pools, balancing, health checks, the retry budget and
the counters of its requests. Each request is an `exchange.Exchange`; `send_now` starts the
usual one without a task, `forward` awaits one whose body needs reading first."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from gateway.base.deadlines import Deadlines
from gateway.base.errors import PayloadTooLarge, UpstreamError
from gateway.config.model import UpstreamConfig
from gateway.downstream.messages import Hijacked, Request, Response, StreamResponse
from gateway.http.headers import DEFAULT_RULES, HeaderRules
from gateway.observe.metrics import Metrics
from gateway.request.attempts import BodyLimit, RetryBudget, TimeoutLimits
from gateway.request.exchange import Exchange, Finish
from gateway.request.websocket import join
from gateway.upstream.connection import UpstreamResponse
from gateway.upstream.health import HealthChecker
from gateway.upstream.targets import Balancer, Target, upstream_tls_context


class Upstream:
    """One upstream: its targets and their pools, balancing, retries, timeouts, counters."""

    def __init__(self, cfg: UpstreamConfig, metrics: Metrics, where: str = "upstreams[0]") -> None:
        self.name = cfg.name
        self.config = cfg
        self._metrics = metrics
        tls = upstream_tls_context(cfg, where)
        self.targets = [Target(cfg.name, spec, cfg, tls, metrics) for spec in cfg.target_specs()]
        self.balancer = Balancer(self.targets, cfg.balance)
        self._budget = RetryBudget(cfg.retries.budget, cfg.retries.min_per_second)
        self._health = HealthChecker(self.targets, cfg.health) if cfg.health else None
        self.inflight = 0  # requests between forward() and the end of the relayed body
        self._outcomes: dict[str, Callable[[], None]] = {}
        self._observe_duration = metrics.tally.histogram(
            metrics.upstream_duration.labels(cfg.name)
        ).observe
        self.limits = TimeoutLimits.of(cfg, None)  # without a route's overrides
        self._deadlines: Deadlines | None = None  # the header deadlines of its exchanges

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self._health is not None:
            self._health.start()

    async def close(self) -> None:
        if self._health is not None:
            await self._health.stop()
        if self._deadlines is not None:
            self._deadlines.close()
        for target in self.targets:
            await target.close()

    async def close_when_idle(self) -> None:
        """Retired by a reload: no new request comes here. Health checks stop and idle
        connections close now; the pools close once the last request in flight has ended
        (each bounded by its own timeouts; the gateway's stop closes whatever is left)."""
        if self._health is not None:
            await self._health.stop()
            self._health = None
        for target in self.targets:
            target.pool.close_idle()
        while True:  # (inflight changes on the request path: polled, not signalled)
            if not self.inflight:
                break
            await asyncio.sleep(0.1)
        await self.close()

    def healthy(self) -> bool:
        return any(t.available() for t in self.targets)

    # ------------------------------------------------------------ what its exchanges report

    def began(self) -> None:
        """An exchange began: in flight until it ends, and counted for the retry budget."""
        self.inflight += 1
        self._budget.request()

    def ended(self) -> None:
        self.inflight -= 1

    def may_retry(self) -> bool:
        return self._budget.allow_retry()

    def observe(self, headers_after: float) -> None:
        """How long an attempt's answer head took."""
        self._observe_duration(headers_after)

    def deadlines(self, loop: asyncio.AbstractEventLoop) -> Deadlines:
        """The one timer its exchanges' header deadlines share."""
        if self._deadlines is None:
            self._deadlines = Deadlines(loop)
        return self._deadlines

    def count(self, outcome: str) -> None:
        inc = self._outcomes.get(outcome)
        if inc is None:
            child = self._metrics.upstream_requests.labels(self.name, outcome)
            inc = self._outcomes[outcome] = self._metrics.tally.counter(child).inc
        inc()

    # ------------------------------------------------------------ one request

    def send_now(
        self,
        request: Request,
        path: str,
        query: str,
        headers: list[tuple[str, str]],
        request_id: str,
        limits: TimeoutLimits,
        finish: Finish,
    ) -> bool:
        """The usual request (no body, or a small one received whole) started now, without a
        task; `finish` is told how it ended. False when the request needs `forward`: a body
        still arriving or too large to keep for a retry."""
        data: bytes | None = None
        if request.body_exists:
            if not (
                request.complete
                and request.content_length is not None
                and request.content_length <= self.config.retries.buffer_body
            ):
                return False
            data = request.content.take_all()
        Exchange(
            self, request, path, query, headers, request_id, data, True, limits, finish
        ).start()
        return True

    async def forward(
        self,
        request: Request,
        path: str,
        query: str,
        headers: list[tuple[str, str]],
        request_id: str,
        body_limit: BodyLimit | None = None,
        limits: TimeoutLimits | None = None,
        trailer_rules: HeaderRules = DEFAULT_RULES,
        upgrade: bool = False,
    ) -> tuple[Response | StreamResponse | Hijacked, float]:
        """The request whose body must be read first (or streams), through the same exchange,
        awaited. Returns the answer and how long the upstream took to send its head. A body
        without Content-Length is counted while it streams: past `body_limit`, 413. `limits`
        are the route's timeouts (worked out when the config was compiled), else the upstream's.
        `upgrade`: a WebSocket upgrade, whose 101 opens a tunnel (`websocket.join`)."""
        started = time.perf_counter()
        data: Any = None
        replayable = True
        if request.body_exists:
            if not request.complete and request.headers.get("Expect", "").lower() == "100-continue":
                request.send_continue()  # routed and allowed: the client may send its body now
            data, replayable = await self._body(request, body_limit)
        outcome: asyncio.Future[tuple[Response | StreamResponse | UpstreamResponse, float]]
        outcome = asyncio.get_running_loop().create_future()
        ex = Exchange(
            self,
            request,
            path,
            query,
            headers,
            request_id,
            data,
            replayable,
            limits or self.limits,
            _Awaited(outcome),
        )
        ex.started = started
        ex.trailer_rules = trailer_rules
        ex.upgrade = upgrade
        ex.start()
        try:
            answer, upstream_seconds = await outcome
            if isinstance(answer, UpstreamResponse):
                if answer.status == 101:
                    return join(ex, answer), upstream_seconds
                return await ex.relay_here(answer), upstream_seconds  # streams: relayed here
            return answer, upstream_seconds
        except UpstreamError:
            if body_limit is not None and body_limit.exceeded:
                raise PayloadTooLarge(f"request body over {body_limit.limit} bytes") from None
            raise
        except asyncio.CancelledError:
            ex.stop()
            raise

    async def _body(self, request: Request, body_limit: BodyLimit | None) -> tuple[Any, bool]:
        """The body to send and whether it can be sent again (buffered)."""
        length = request.content_length
        if length is not None and length <= self.config.retries.buffer_body:
            return await request.read(), True
        if body_limit is not None and length is None:
            return body_limit.wrap(request.content), False
        return request.content, False


class _Awaited:
    """An exchange's end, for the coroutine that awaits it."""

    __slots__ = ("_outcome",)

    def __init__(
        self, outcome: asyncio.Future[tuple[Response | StreamResponse | UpstreamResponse, float]]
    ) -> None:
        self._outcome = outcome

    def done(self, answer: Response | StreamResponse, upstream_seconds: float) -> None:
        if not self._outcome.done():
            self._outcome.set_result((answer, upstream_seconds))

    def failed(self, exc: Exception) -> None:
        if not self._outcome.done():
            self._outcome.set_exception(exc)

    def stream(self, upstream: UpstreamResponse, upstream_seconds: float) -> bool:
        if self._outcome.done():
            return False
        self._outcome.set_result((upstream, upstream_seconds))
        return True
