"""What the attempts of an exchange share and meet: the route's timeouts, the limit on a
streamed body, the retry budget, the faults an attempt meets and what each becomes (the
client's or the upstream's, retried on another target or answered), and the request head an
attempt sends. `exchange.Exchange` runs the attempts."""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from gateway.base.errors import (
    BadRequest,
    DownstreamError,
    PayloadTooLarge,
    UpstreamError,
    UpstreamTimeout,
)
from gateway.config.model import RouteTimeouts, UpstreamConfig
from gateway.downstream.messages import Body
from gateway.upstream.connection import ConnectionLost, ConnectTimeout
from gateway.upstream.h1response import BadResponse
from gateway.upstream.targets import Target

if TYPE_CHECKING:
    from gateway.request.exchange import Exchange

IDEMPOTENT: Final = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
# the hop-by-hop fields of a WebSocket upgrade, which the upstream's copy of the head lacks
UPGRADE: Final = "Upgrade: websocket\r\nConnection: Upgrade\r\n"


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

    def within(self, seconds: float) -> TimeoutLimits:
        """These timeouts, none longer than `seconds` (a gRPC call's own deadline)."""
        return TimeoutLimits(
            connect=min(self.connect, seconds),
            headers=min(self.headers, seconds),
            idle=min(self.idle, seconds),
            total=seconds if self.total is None else min(self.total, seconds),
        )

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


def head_of(target: Target, ex: Exchange) -> bytes:
    """An attempt's request head, for `target`."""
    request = ex.request
    return request_head(
        request.method,
        target.base_path + ex.path,
        ex.query,
        ex.headers,
        UPGRADE if ex.upgrade else framing(ex.data, request.content_length),
    )


# fields HTTP/2 has no place for (RFC 9113 8.2.2), and Host, which becomes :authority
H2_SKIP: Final = frozenset(
    {"host", "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te"}
)


def h2_fields(target: Target, ex: Exchange) -> list[tuple[bytes, bytes]]:
    """An attempt's request head for a target that speaks HTTP/2: pseudo-fields first, names
    in lower case, `te: trailers` (gRPC servers require it), the body's length when known."""
    request = ex.request
    path = target.base_path + ex.path
    authority = ""
    rest: list[tuple[bytes, bytes]] = []
    for name, value in ex.headers:
        lower = name.lower()
        if lower == "host":
            authority = value
        elif lower not in H2_SKIP:
            rest.append((lower.encode("ascii"), value.encode("utf-8", "surrogateescape")))
    data = ex.data
    length = len(data) if isinstance(data, bytes) else request.content_length
    if data is not None and length is not None:
        rest.append((b"content-length", str(length).encode("ascii")))
    rest.append((b"te", b"trailers"))
    return [
        (b":method", request.method.encode("ascii")),
        (b":scheme", b"https" if target.origin.startswith("https") else b"http"),
        (b":authority", authority.encode("utf-8", "surrogateescape")),
        (b":path", (f"{path}?{ex.query}" if ex.query else path).encode("utf-8", "surrogateescape")),
        *rest,
    ]


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


def classify(
    exc: BaseException,
    upstream: str,
    target: Target,
    retry_safe: bool,
    count: Callable[[str], None],
) -> BaseException:
    """What an attempt's failure becomes: an UpstreamError (counted under its outcome, the
    target told where the fault is its own), or Retryable on another target. `retry_safe`: the
    request may be sent again (idempotent, its body kept). Anything else is returned as it is."""
    where = f"{upstream} ({target.url})"
    if isinstance(exc, ssl.SSLError):
        count("tls_error")
        return UpstreamError(f"{where}: TLS: {tls_reason(exc)}", kind="tls")
    if isinstance(exc, ConnectTimeout):
        target.failed("connect timeout")
        return Retryable("timeout", UpstreamTimeout(f"{where}: connect timed out", kind="connect"))
    if isinstance(exc, HeadersLate):
        count("timeout")
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
        count("bad_response")
        return UpstreamError(f"{where}: invalid response: {exc}", kind="response")
    if isinstance(exc, ConnectionLost | OSError):
        if (tls_cause := ssl_cause(exc)) is not None:
            # TLS 1.3: an upstream that refuses our client certificate says so only after the
            # handshake, on the first read
            count("tls_error")
            return UpstreamError(f"{where}: TLS: {tls_reason(tls_cause)}", kind="tls")
        target.failed("reset")
        error = UpstreamError(f"{where}: connection failed: {exc}", kind="reset")
        if retry_safe:
            return Retryable("reset", error)
        count("reset")
        return error
    return exc
