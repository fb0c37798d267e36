"""Forwarding to an upstream: pick a target, send, retry where safe, stream the answer back, and
turn every upstream fault into 502/503/504 with its kind in the log."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, cast

from gateway.bytestream import expire
from gateway.config import RouteTimeouts, UpstreamConfig
from gateway.deadlines import Deadlines
from gateway.errors import (
    BadRequest,
    ClientClosed,
    DownstreamError,
    NoHealthyTarget,
    PayloadTooLarge,
    UpstreamError,
    UpstreamTimeout,
)
from gateway.headers import DEFAULT_RULES, HeaderRules, response_drop
from gateway.health import HealthChecker
from gateway.http1 import Body, Request, Response, StreamResponse
from gateway.log import event, proxy_log
from gateway.metrics import Metrics
from gateway.targets import Balancer, Target, upstream_tls_context
from gateway.upstreamconn import (
    BadResponse,
    Connection,
    ConnectionLost,
    ConnectTimeout,
    UpstreamResponse,
)

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})


class BodyLimit:
    """Counts a streamed request body; stops it (and remembers) past `limit` bytes."""

    def __init__(self, limit: int, on_hit: Callable[[], None]) -> None:
        self.limit = limit
        self.exceeded = False
        self._on_hit = on_hit
        self._stream: Body | None = None
        self._total = 0

    def wrap(self, stream: Body) -> BodyLimit:
        """`stream`, read through this limit."""
        self._stream = stream
        return self

    async def readany(self) -> bytes:
        """The next chunk, b"" at the end. (No async-iterator protocol: mypyc's compiled
        `raise StopAsyncIteration` crashes the process.)"""
        assert self._stream is not None, "wrap() first"
        chunk = await self._stream.readany()
        self._total += len(chunk)
        if self._total > self.limit:
            self.exceeded = True
            self._on_hit()
            raise PayloadTooLarge(f"request body over {self.limit} bytes")
        return chunk


@dataclass(frozen=True)
class TimeoutLimits:
    """The timeouts of an upstream with a route's overrides, worked out once per route."""

    connect: float
    headers: float
    idle: float
    total: float | None

    @classmethod
    def of(cls, cfg: UpstreamConfig, route: RouteTimeouts | None) -> TimeoutLimits:
        t = cfg.timeouts
        r = route or RouteTimeouts()
        return cls(
            connect=r.connect or t.connect,
            headers=r.headers or t.headers or t.read,
            idle=r.idle or t.idle or t.read,
            total=r.total or t.total,
        )


class Finish(Protocol):
    """Who is told how a request sent at once (`Upstream.send_now`) ended."""

    def done(self, answer: Response | StreamResponse, upstream_seconds: float) -> None: ...

    def failed(self, exc: Exception) -> None: ...


class _Exchange:
    """One request on its way upstream, shared by every attempt: its clock against its limits,
    and the waiter of the attempt in progress (a future on the general path; the upstream's own
    callbacks when it was sent at once)."""

    __slots__ = (
        "conn",
        "data",
        "finish",
        "headers",
        "kind",
        "limits",
        "path",
        "pending",
        "query",
        "replayable",
        "request",
        "request_id",
        "started",
        "target",
        "trailer_rules",
        "tried",
        "upstream",
    )

    def __init__(
        self,
        upstream: Upstream,
        request: Request,
        path: str,
        query: str,
        headers: list[tuple[str, str]],
        request_id: str,
        data: Any,
        replayable: bool,  # the body can be sent again (none, or buffered)
        limits: TimeoutLimits,
    ) -> None:
        self.upstream = upstream
        self.request = request
        self.path = path
        self.query = query
        self.headers = headers
        self.request_id = request_id
        self.data = data
        self.replayable = replayable
        self.limits = limits
        self.started = time.perf_counter()
        self.tried: list[Target] = []
        self.trailer_rules = DEFAULT_RULES  # which request trailers may go upstream
        self.pending: asyncio.Future[UpstreamResponse] | None = None
        # sent at once: the attempt in progress, its header deadline's kind, whom to tell
        self.target: Target | None = None
        self.conn: Connection | None = None
        self.kind = "headers"
        self.finish: Finish | None = None

    # ------------------------------------------------------------ the clock

    def _left(self) -> float | None:
        total = self.limits.total
        if total is None:
            return None
        return max(total - (time.perf_counter() - self.started), 0.0)

    def stage(self, wait: float, kind: str) -> tuple[float, str]:
        """How long the next stage may take, and which limit that is (`total` when closer)."""
        left = self._left()
        if left is not None and left < wait:
            return left, "total"
        return wait, kind

    def chunk_wait(self) -> tuple[float, str]:
        """How long to wait for the next body chunk, and which limit that is."""
        return self.stage(self.limits.idle, "idle")

    # ------------------------------------------------------------ the attempt's waiter

    def response(self, response: UpstreamResponse) -> None:
        pending = self.pending
        if pending is not None:
            if not pending.done():
                pending.set_result(response)
        elif self.finish is not None:
            self.upstream._answered(self, response)

    def error(self, exc: BaseException) -> None:
        pending = self.pending
        if pending is not None:
            if not pending.done():
                pending.set_exception(exc)
        elif self.finish is not None:
            self.upstream._attempt_failed(self, exc, close=True)

    def expire(self) -> None:
        """The header deadline of a request sent at once passed."""
        assert self.conn is not None
        self.conn.abandon()
        self.upstream._attempt_failed(self, _HeadersLate(self.kind), close=False)


class RetryBudget:
    """Retries may add at most `ratio` of the requests of the last 10 s, plus a floor."""

    WINDOW = 10

    def __init__(self, ratio: float, min_per_second: float) -> None:
        self._ratio = ratio
        self._floor = min_per_second * self.WINDOW
        self._requests = [0] * self.WINDOW
        self._retries = [0] * self.WINDOW
        self._second = 0

    def _roll(self) -> int:
        now = int(time.monotonic())
        if now != self._second:
            for s in range(max(self._second + 1, now - self.WINDOW + 1), now + 1):
                self._requests[s % self.WINDOW] = 0
                self._retries[s % self.WINDOW] = 0
            self._second = now
        return now % self.WINDOW

    def request(self) -> None:
        self._requests[self._roll()] += 1

    def allow_retry(self) -> bool:
        slot = self._roll()
        if sum(self._retries) >= max(self._floor, self._ratio * sum(self._requests)):
            return False
        self._retries[slot] += 1
        return True


class _ConnectFailed(Exception):
    """No connection to the target (refused, unreachable, DNS)."""

    def __init__(self, os_error: OSError) -> None:
        self.os_error = os_error


class _HeadersLate(Exception):
    def __init__(self, kind: str) -> None:
        self.kind = kind


class _Retryable(Exception):
    """An attempt failed in a way another target may fix."""

    def __init__(self, outcome: str, error: UpstreamError) -> None:
        self.outcome = outcome
        self.error = error


def _ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    """The ssl.SSLError behind a connection or OS error, if there is one."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return current
        seen.add(id(current))
        current = (
            getattr(current, "os_error", None)
            or getattr(current, "cause", None)
            or current.__cause__
            or current.__context__
        )
    return None


def _tls_reason(exc: BaseException) -> str:
    """Why TLS to the upstream failed, in words an operator can act on."""
    cause = getattr(exc, "certificate_error", None) or getattr(exc, "os_error", None) or exc
    if isinstance(cause, ssl.SSLCertVerificationError):
        code = cause.verify_code
        if code in (2, 18, 19, 20, 21):
            return "unknown CA: the upstream's chain does not lead to upstreams[].tls.ca"
        if code == 62:
            return f"name mismatch: {cause.verify_message}"
        if code == 10:
            return "the upstream's certificate has expired"
        if code == 9:
            return "the upstream's certificate is not valid yet"
        return f"verify error {code}: {cause.verify_message}"
    text = str(cause)
    if "ALERT" in text.upper():
        return f"the upstream refused the gateway's TLS client: {text}"
    return text


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
        ex = _Exchange(
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
        self, ex: _Exchange, last: UpstreamError | None, picked: Target | None = None
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
            except _Retryable as failure:
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

    async def _send(self, target: Target, ex: _Exchange) -> tuple[Response | StreamResponse, float]:
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
                        raise _HeadersLate("total") from None
                    raise
                except ssl.SSLError:
                    raise  # an OSError too, but a TLS failure, not a refused connection
                except OSError as exc:
                    raise _ConnectFailed(exc) from None
                if request.protocol.closed:  # left while the connection was being found
                    target.pool.release(conn, reuse=True)
                    raise ClientClosed("the client left before the request was sent")
                request.on_gone = conn.close  # the client leaving ends the exchange upstream
                data = ex.data
                streamed = data is not None and not isinstance(data, bytes)
                ex.pending = pending = conn.loop.create_future()
                conn.send(
                    _head_of(target, ex), None if streamed else data, request.method != "HEAD", ex
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
                    raise _HeadersLate(kind) from None
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
                    raise _client_fault(conn.client_fault) from None
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
        ex = _Exchange(self, request, path, query, headers, request_id, data, True, limits)
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
        conn.send(_head_of(target, ex), data, request.method != "HEAD", ex)
        if self._deadlines is None:
            self._deadlines = Deadlines(conn.loop)
        self._deadlines.add(ex, wait)
        return True

    def _answered(self, ex: _Exchange, upstream: UpstreamResponse) -> None:
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
        self, ex: _Exchange, upstream: UpstreamResponse, headers_after: float
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

    def _ended(self, ex: _Exchange) -> None:
        """A request sent at once is done with its target."""
        assert ex.target is not None
        ex.target.inflight -= 1
        self.inflight -= 1

    def _attempt_failed(self, ex: _Exchange, exc: BaseException, close: bool) -> None:
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
        if isinstance(failure, _Retryable):
            self.count(failure.outcome)
            if self._budget.allow_retry():
                asyncio.get_running_loop().create_task(self._attempts_later(ex, failure.error))
                return
            failure = failure.error
        self.inflight -= 1
        ex.finish.failed(failure)

    async def _attempts_later(
        self, ex: _Exchange, last: UpstreamError | None, picked: Target | None = None
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

    def _failure(self, target: Target, ex: _Exchange, exc: Exception) -> Exception:
        """What an attempt's failure becomes: an UpstreamError, or _Retryable on another target."""
        where = f"{self.name} ({target.url})"
        if isinstance(exc, ssl.SSLError):
            self.count("tls_error")
            return UpstreamError(f"{where}: TLS: {_tls_reason(exc)}", kind="tls")
        if isinstance(exc, ConnectTimeout):
            target.failed("connect timeout")
            return _Retryable(
                "timeout", UpstreamTimeout(f"{where}: connect timed out", kind="connect")
            )
        if isinstance(exc, _HeadersLate):
            self.count("timeout")
            return UpstreamTimeout(
                f"{where}: no response headers in time ({exc.kind} timeout)", kind=exc.kind
            )
        if isinstance(exc, _ConnectFailed):
            target.failed("connect error")
            return _Retryable(
                "connect_error",
                UpstreamError(f"{where}: cannot connect: {exc.os_error}", kind="connect"),
            )
        if isinstance(exc, BadResponse):
            self.count("bad_response")
            return UpstreamError(f"{where}: invalid response: {exc}", kind="response")
        if isinstance(exc, ConnectionLost | OSError):
            if (tls_cause := _ssl_cause(exc)) is not None:
                # TLS 1.3: an upstream that refuses our client certificate says so only
                # after the handshake, on the first read
                self.count("tls_error")
                return UpstreamError(f"{where}: TLS: {_tls_reason(tls_cause)}", kind="tls")
            target.failed("reset")
            error = UpstreamError(f"{where}: connection failed: {exc}", kind="reset")
            if ex.request.method in IDEMPOTENT and ex.replayable:
                return _Retryable("reset", error)
            self.count("reset")
            return error
        return exc

    def _whole(self, ex: _Exchange, upstream: UpstreamResponse) -> Response | None:
        """The answer in one piece when the whole of it is here already (the usual small one)."""
        if not upstream.complete or upstream.content_length is None or ex.request.method == "HEAD":
            return None
        headers, _ = _response_headers(ex, upstream)
        self.count("ok")
        return Response(
            upstream.status, reason=upstream.reason, headers=headers, body=upstream.take_body()
        )

    async def _relay(self, ex: _Exchange, upstream: UpstreamResponse) -> Response | StreamResponse:
        whole = self._whole(ex, upstream)
        if whole is not None:
            return whole
        request = ex.request
        headers, drop = _response_headers(ex, upstream)
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


def _client_fault(exc: Exception) -> DownstreamError:
    """The client's body failed while it streamed upstream: a 4xx of the client's own, never
    an upstream failure (no retry, no passive ejection, no upstream_requests_total)."""
    if isinstance(exc, DownstreamError):
        return exc  # e.g. the body went over max_request_body: 413
    return BadRequest(f"the request body failed while it was forwarded: {exc}")


def _response_headers(
    ex: _Exchange, upstream: UpstreamResponse
) -> tuple[list[tuple[str, str]], frozenset[str]]:
    """The response headers to send on, and the fields dropped from them (and its trailers)."""
    # a chunked answer stays chunked (to an HTTP/1.1 client), so its trailers can follow it
    drop = response_drop(upstream.chunked, upstream.connection)
    pairs = [(k, v) for k, v in upstream.headers if k.lower() not in drop]
    pairs.append(("X-Request-Id", ex.request_id))
    return pairs, drop


def _head_of(target: Target, ex: _Exchange) -> bytes:
    """An attempt's request head, for `target`."""
    request = ex.request
    return _request_head(
        request.method,
        target.base_path + ex.path,
        ex.query,
        ex.headers,
        _framing(ex.data, request.content_length),
    )


def _request_head(
    method: str, path: str, query: str, headers: list[tuple[str, str]], framing: str
) -> bytes:
    """The request line, the headers (the client's Host among them) and the body's framing."""
    target = f"{path}?{query}" if query else path
    lines = "".join([f"{k}: {v}\r\n" for k, v in headers])
    return f"{method} {target} HTTP/1.1\r\n{lines}{framing}\r\n".encode("utf-8", "surrogateescape")


def _framing(data: Any, length: int | None) -> str:
    """Content-Length of what is sent (buffered, or announced by the client), else chunked."""
    if isinstance(data, bytes):
        return f"Content-Length: {len(data)}\r\n"
    if length is not None:
        return f"Content-Length: {length}\r\n"
    return "" if data is None else "Transfer-Encoding: chunked\r\n"
