"""One request on its way upstream, and what every attempt at it shares: its limits and
clock, the waiter of the attempt in progress, the retry budget, the faults an attempt meets
and how they are told apart (the client's or the upstream's), and the request head an
attempt sends. `proxy.Upstream` runs the attempts."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from gateway.config import RouteTimeouts, UpstreamConfig
from gateway.errors import BadRequest, DownstreamError, PayloadTooLarge, UpstreamError
from gateway.h1messages import Body, Request, Response, StreamResponse
from gateway.headers import DEFAULT_RULES, response_drop
from gateway.targets import Target
from gateway.upstreamconn import Connection, UpstreamResponse

if TYPE_CHECKING:
    from gateway.proxy import Upstream

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


class Exchange:
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
            self.upstream.answered(self, response)

    def error(self, exc: BaseException) -> None:
        pending = self.pending
        if pending is not None:
            if not pending.done():
                pending.set_exception(exc)
        elif self.finish is not None:
            self.upstream.attempt_failed(self, exc, close=True)

    def expire(self) -> None:
        """The header deadline of a request sent at once passed."""
        assert self.conn is not None
        self.conn.abandon()
        self.upstream.attempt_failed(self, HeadersLate(self.kind), close=False)


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


class ConnectFailed(Exception):
    """No connection to the target (refused, unreachable, DNS)."""

    def __init__(self, os_error: OSError) -> None:
        self.os_error = os_error


class HeadersLate(Exception):
    def __init__(self, kind: str) -> None:
        self.kind = kind


class Retryable(Exception):
    """An attempt failed in a way another target may fix."""

    def __init__(self, outcome: str, error: UpstreamError) -> None:
        self.outcome = outcome
        self.error = error


def ssl_cause(exc: BaseException) -> ssl.SSLError | None:
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


def tls_reason(exc: BaseException) -> str:
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


def client_fault(exc: Exception) -> DownstreamError:
    """The client's body failed while it streamed upstream: a 4xx of the client's own, never
    an upstream failure (no retry, no passive ejection, no upstream_requests_total)."""
    if isinstance(exc, DownstreamError):
        return exc  # e.g. the body went over max_request_body: 413
    return BadRequest(f"the request body failed while it was forwarded: {exc}")


def response_headers(
    ex: Exchange, upstream: UpstreamResponse
) -> tuple[list[tuple[str, str]], frozenset[str]]:
    """The response headers to send on, and the fields dropped from them (and its trailers)."""
    # a chunked answer stays chunked (to an HTTP/1.1 client), so its trailers can follow it
    drop = response_drop(upstream.chunked, upstream.connection)
    pairs = [(k, v) for k, v in upstream.headers if k.lower() not in drop]
    pairs.append(("X-Request-Id", ex.request_id))
    return pairs, drop


def head_of(target: Target, ex: Exchange) -> bytes:
    """An attempt's request head, for `target`."""
    request = ex.request
    return request_head(
        request.method,
        target.base_path + ex.path,
        ex.query,
        ex.headers,
        framing(ex.data, request.content_length),
    )


def request_head(
    method: str, path: str, query: str, headers: list[tuple[str, str]], framing: str
) -> bytes:
    """The request line, the headers (the client's Host among them) and the body's framing."""
    target = f"{path}?{query}" if query else path
    lines = "".join([f"{k}: {v}\r\n" for k, v in headers])
    return f"{method} {target} HTTP/1.1\r\n{lines}{framing}\r\n".encode("utf-8", "surrogateescape")


def framing(data: Any, length: int | None) -> str:
    """Content-Length of what is sent (buffered, or announced by the client), else chunked."""
    if isinstance(data, bytes):
        return f"Content-Length: {len(data)}\r\n"
    if length is not None:
        return f"Content-Length: {length}\r\n"
    return "" if data is None else "Transfer-Encoding: chunked\r\n"
