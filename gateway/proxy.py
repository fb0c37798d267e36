"""Forwarding to an upstream: pick a target, send, retry where safe, stream the answer back, and
turn every upstream fault into 502/503/504 with its kind in the log."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable
from typing import Any, cast

from gateway.bytestream import expire
from gateway.config import UpstreamConfig
from gateway.deadlines import Deadlines
from gateway.errors import (
    ClientClosed,
    NoHealthyTarget,
    PayloadTooLarge,
    UpstreamError,
    UpstreamTimeout,
)
from gateway.exchange import (
    IDEMPOTENT,
    BodyLimit,
    ConnectFailed,
    Exchange,
    Finish,
    HeadersLate,
    Retryable,
    RetryBudget,
    TimeoutLimits,
    client_fault,
    head_of,
    response_headers,
    ssl_cause,
    tls_reason,
)
from gateway.h1messages import Request, Response, StreamResponse
from gateway.h1response import BadResponse
from gateway.headers import DEFAULT_RULES, HeaderRules
from gateway.health import HealthChecker
from gateway.log import event, proxy_log
from gateway.metrics import Metrics
from gateway.targets import Balancer, Target, upstream_tls_context
from gateway.upstreamconn import (
    Connection,
    ConnectionLost,
    ConnectTimeout,
    UpstreamResponse,
)


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
        self._deadlines: Deadlines | None = None  # header deadlines of requests sent at once

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

    def count(self, outcome: str) -> None:
        inc = self._outcomes.get(outcome)
        if inc is None:
            child = self._metrics.upstream_requests.labels(self.name, outcome)
            inc = self._outcomes[outcome] = self._metrics.tally.counter(child).inc
        inc()

    # ------------------------------------------------------------ one request

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
    ) -> tuple[Response | StreamResponse, float]:
        """Send the request and stream the answer back; map upstream faults to 502/503/504.

        Returns the response and how long the upstream took to send its headers. A body
        without Content-Length is counted while it streams: past `body_limit`, 413. `limits`
        are the route's timeouts (worked out when the config was compiled), else the upstream's."""
        started = time.perf_counter()
        data: Any = None
        replayable = True
        if request.body_exists:
            if not request.complete and request.headers.get("Expect", "").lower() == "100-continue":
                request.send_continue()  # routed and allowed: the client may send its body now
            data, replayable = await self._body(request, body_limit)
        self.inflight += 1
        self._budget.request()
        ex = Exchange(
            self, request, path, query, headers, request_id, data, replayable, limits or self.limits
        )
        ex.started = started
        ex.trailer_rules = trailer_rules
        try:
            return await self._attempts(ex, None)
        except UpstreamError:
            if body_limit is not None and body_limit.exceeded:
                raise PayloadTooLarge(f"request body over {body_limit.limit} bytes") from None
            raise
        finally:
            self.inflight -= 1

    async def _attempts(
        self, ex: Exchange, last: UpstreamError | None, picked: Target | None = None
    ) -> tuple[Response | StreamResponse, float]:
        """Attempts on targets not tried yet (the first one `picked` already, if given), while
        the retry policy and budget allow."""
        while len(ex.tried) <= self.config.retries.attempts:
            target = picked or self.balancer.pick(exclude=ex.tried)
            picked = None
            if target is None:
                if last is not None:
                    raise last
                raise NoHealthyTarget(f"{self.name}: no healthy target", kind="no_target")
            if ex.tried:
                self.count("retry")
            ex.tried.append(target)
            try:
                return await self._send(target, ex)
            except Retryable as failure:
                self.count(failure.outcome)
                last = failure.error
                if not self._budget.allow_retry():
                    break
        assert last is not None
        raise last

    async def _body(self, request: Request, body_limit: BodyLimit | None) -> tuple[Any, bool]:
        """The body to send and whether it can be sent again (buffered)."""
        length = request.content_length
        if length is not None and length <= self.config.retries.buffer_body:
            return await request.read(), True
        if body_limit is not None and length is None:
            return body_limit.wrap(request.content), False
        return request.content, False

    async def _send(self, target: Target, ex: Exchange) -> tuple[Response | StreamResponse, float]:
        """One attempt: a connection (connect timeout), the request, the response headers
        (headers timeout; `total` bounds both), then the relayed body."""
        started = time.perf_counter()
        request = ex.request
        target.inflight += 1
        conn: Connection | None = None
        try:
            try:
                wait, kind = ex.stage(ex.limits.connect, "connect")
                try:
                    conn = await target.pool.acquire(wait)
                except ConnectTimeout:
                    if kind == "total":
                        raise HeadersLate("total") from None
                    raise
                except ssl.SSLError:
                    raise  # an OSError too, but a TLS failure, not a refused connection
                except OSError as exc:
                    raise ConnectFailed(exc) from None
                if request.protocol.closed:  # left while the connection was being found
                    target.pool.release(conn, reuse=True)
                    raise ClientClosed("the client left before the request was sent")
                request.on_gone = conn.close  # the client leaving ends the exchange upstream
                data = ex.data
                streamed = data is not None and not isinstance(data, bytes)
                ex.pending = pending = conn.loop.create_future()
                conn.send(
                    head_of(target, ex), None if streamed else data, request.method != "HEAD", ex
                )
                if streamed:
                    conn.stream_body(
                        data,
                        chunked=request.content_length is None,
                        trailers=request.trailers,
                        rules=ex.trailer_rules,
                    )
                wait, kind = ex.stage(ex.limits.headers, "headers")
                timer = conn.loop.call_later(wait, expire, pending)
                try:
                    upstream = await pending
                except TimeoutError:
                    conn.abandon()
                    raise HeadersLate(kind) from None
                except BaseException:
                    conn.abandon()
                    raise
                finally:
                    timer.cancel()
                    ex.pending = None
            except Exception as exc:
                request.on_gone = None
                if request.protocol.closed:
                    raise ClientClosed("the client left before the answer") from None
                if conn is not None and conn.client_fault is not None:
                    raise client_fault(conn.client_fault) from None
                raise self._failure(target, ex, exc) from None
            headers_after = self._headers_in(target, upstream, started)
            try:
                return await self._relay(ex, upstream), headers_after
            finally:
                request.on_gone = None  # before the connection may serve another client
                upstream.release()
        finally:
            target.inflight -= 1

    def _headers_in(self, target: Target, upstream: UpstreamResponse, started: float) -> float:
        """Counted when an attempt's response headers are in: how long they took."""
        headers_after = time.perf_counter() - started
        self._observe_duration(headers_after)
        if upstream.status >= 500:
            target.failed(f"HTTP {upstream.status}")
        else:
            target.succeeded()
        return headers_after

    # ------------------------------------------------------------ one request, sent at once

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
        """The usual request (no body, or a small one received whole) sent now, without a
        task, on a kept-alive connection; `finish` is told how it ended. Opening a connection
        and retrying take a task. False when the request needs `forward`: a body still arriving
        or too large to keep for a retry."""
        data: bytes | None = None
        if request.body_exists:
            if not (
                request.complete
                and request.content_length is not None
                and request.content_length <= self.config.retries.buffer_body
            ):
                return False
            data = request.content.take_all()
        ex = Exchange(self, request, path, query, headers, request_id, data, True, limits)
        ex.finish = finish
        self.inflight += 1
        self._budget.request()
        target = self.balancer.pick()
        conn = target.pool.take_idle() if target is not None else None
        if conn is None:  # a connection to open, or no target: the general path's attempts
            asyncio.get_running_loop().create_task(self._attempts_later(ex, None, target))
            return True
        assert target is not None
        ex.target = target
        ex.conn = conn
        request.on_gone = conn.close  # the client leaving ends the exchange upstream
        ex.tried.append(target)
        target.inflight += 1
        wait, ex.kind = ex.stage(limits.headers, "headers")
        conn.send(head_of(target, ex), data, request.method != "HEAD", ex)
        if self._deadlines is None:
            self._deadlines = Deadlines(conn.loop)
        self._deadlines.add(ex, wait)
        return True

    def answered(self, ex: Exchange, upstream: UpstreamResponse) -> None:
        """The response headers of a request sent at once are in (the whole answer, usually)."""
        assert ex.target is not None and ex.finish is not None and self._deadlines is not None
        self._deadlines.discard(ex)
        headers_after = self._headers_in(ex.target, upstream, ex.started)
        whole = self._whole(ex, upstream)
        if whole is None:  # a body still streaming: relayed by a task
            ex.conn = None
            asyncio.get_running_loop().create_task(self._relay_later(ex, upstream, headers_after))
            return
        ex.request.on_gone = None
        upstream.release()
        self._ended(ex)
        ex.finish.done(whole, headers_after)

    async def _relay_later(
        self, ex: Exchange, upstream: UpstreamResponse, headers_after: float
    ) -> None:
        assert ex.finish is not None
        try:
            try:
                answer = await self._relay(ex, upstream)
            finally:
                ex.request.on_gone = None  # before the connection may serve another client
                upstream.release()
                self._ended(ex)
        except Exception as exc:  # a gateway bug: the pipeline logs it
            ex.finish.failed(exc)
            return
        ex.finish.done(answer, headers_after)

    def _ended(self, ex: Exchange) -> None:
        """A request sent at once is done with its target."""
        assert ex.target is not None
        ex.target.inflight -= 1
        self.inflight -= 1

    def attempt_failed(self, ex: Exchange, exc: BaseException, close: bool) -> None:
        """A request sent at once failed before its response headers: retried by a task where
        the policy allows, else answered with the error."""
        assert ex.target is not None and ex.conn is not None and ex.finish is not None
        if self._deadlines is not None:
            self._deadlines.discard(ex)
        if close:
            ex.conn.close()
        ex.conn = None
        ex.target.inflight -= 1
        ex.request.on_gone = None
        if ex.request.protocol.closed:  # the client left: its own outcome, not the upstream's
            self.inflight -= 1
            ex.finish.failed(ClientClosed("the client left before the answer"))
            return
        failure = self._failure(ex.target, ex, cast(Exception, exc))
        if isinstance(failure, Retryable):
            self.count(failure.outcome)
            if self._budget.allow_retry():
                asyncio.get_running_loop().create_task(self._attempts_later(ex, failure.error))
                return
            failure = failure.error
        self.inflight -= 1
        ex.finish.failed(failure)

    async def _attempts_later(
        self, ex: Exchange, last: UpstreamError | None, picked: Target | None = None
    ) -> None:
        """The general path's attempts for a request sent at once (retries, a new connection)."""
        assert ex.finish is not None
        try:
            try:
                answer, headers_after = await self._attempts(ex, last, picked)
            finally:
                self.inflight -= 1
        except Exception as exc:
            ex.finish.failed(exc)
            return
        ex.finish.done(answer, headers_after)

    def _failure(self, target: Target, ex: Exchange, exc: Exception) -> Exception:
        """What an attempt's failure becomes: an UpstreamError, or Retryable on another target."""
        where = f"{self.name} ({target.url})"
        if isinstance(exc, ssl.SSLError):
            self.count("tls_error")
            return UpstreamError(f"{where}: TLS: {tls_reason(exc)}", kind="tls")
        if isinstance(exc, ConnectTimeout):
            target.failed("connect timeout")
            return Retryable(
                "timeout", UpstreamTimeout(f"{where}: connect timed out", kind="connect")
            )
        if isinstance(exc, HeadersLate):
            self.count("timeout")
            return UpstreamTimeout(
                f"{where}: no response headers in time ({exc.kind} timeout)", kind=exc.kind
            )
        if isinstance(exc, ConnectFailed):
            target.failed("connect error")
            return Retryable(
                "connect_error",
                UpstreamError(f"{where}: cannot connect: {exc.os_error}", kind="connect"),
            )
        if isinstance(exc, BadResponse):
            self.count("bad_response")
            return UpstreamError(f"{where}: invalid response: {exc}", kind="response")
        if isinstance(exc, ConnectionLost | OSError):
            if (tls_cause := ssl_cause(exc)) is not None:
                # TLS 1.3: an upstream that refuses our client certificate says so only
                # after the handshake, on the first read
                self.count("tls_error")
                return UpstreamError(f"{where}: TLS: {tls_reason(tls_cause)}", kind="tls")
            target.failed("reset")
            error = UpstreamError(f"{where}: connection failed: {exc}", kind="reset")
            if ex.request.method in IDEMPOTENT and ex.replayable:
                return Retryable("reset", error)
            self.count("reset")
            return error
        return exc

    def _whole(self, ex: Exchange, upstream: UpstreamResponse) -> Response | None:
        """The answer in one piece when the whole of it is here already (the usual small one)."""
        if not upstream.complete or upstream.content_length is None or ex.request.method == "HEAD":
            return None
        headers, _ = response_headers(ex, upstream)
        self.count("ok")
        return Response(
            upstream.status, reason=upstream.reason, headers=headers, body=upstream.take_body()
        )

    async def _relay(self, ex: Exchange, upstream: UpstreamResponse) -> Response | StreamResponse:
        whole = self._whole(ex, upstream)
        if whole is not None:
            return whole
        request = ex.request
        headers, drop = response_headers(ex, upstream)
        out = StreamResponse(upstream.status, reason=upstream.reason, headers=headers)
        out.content_length = upstream.content_length
        kind = "reset"
        try:
            await out.prepare(request)
            while True:
                wait, kind = ex.chunk_wait()
                chunk = await upstream.read(wait)
                kind = "reset"
                if not chunk:
                    break
                await out.write(chunk)
            await out.write_eof([(k, v) for k, v in upstream.trailers if k.lower() not in drop])
        except (TimeoutError, ConnectionLost, BadResponse) as exc:
            if request.protocol.closed:  # the client left: its leaving ended the upstream read
                out.force_close()
                out.finished = True
                return out
            # Headers are gone already: the only honest signal left is to cut the connection.
            if not isinstance(exc, TimeoutError):
                kind = "reset"
            self.count("reset" if kind == "reset" else "timeout")
            proxy_log.warning(
                "upstream failed mid-response",
                extra=event(upstream=self.name, kind=kind, error=repr(exc)),
            )
            out.force_close()
            out.finished = True
            if request.transport is not None:
                request.transport.abort()
            return out
        self.count("ok")
        return out


__all__ = ["BodyLimit", "TimeoutLimits", "Upstream"]
