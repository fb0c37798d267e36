"""One request on its way upstream, from its head to the last byte of its answer: the one state
machine every proxied request goes through.

`Exchange.start` counts it in flight and makes the first attempt: a target from the balancer,
a kept-alive connection from its pool (or one opened by a task), the request sent, the answer's
head awaited under a shared deadline (`deadlines`). The upstream connection tells the exchange
what happened (`response`, `error`), and so does the deadline (`expire`). A failure is
classified once (`attempts.classify`): the client's own fault or departure ends the exchange
as the client's outcome; an upstream fault that another target may fix is retried while the
policy and the budget allow; any other is answered. A whole answer is handed on at once; one
that streams is relayed by a task. However it ends, `finish` is told once and every counter
(the upstream's and the target's requests in flight, the client's departure hook) is undone in
one place. The usual request runs without a task; `proxy.Upstream.forward` awaits the same
machine for requests that need one, and for a WebSocket upgrade, whose 101 hands the
connection to a tunnel (`tunnel`) that ends the exchange when it closes."""

from __future__ import annotations

import asyncio
import ssl
import time
from typing import TYPE_CHECKING, Any, Protocol

from gateway.base.errors import ClientClosed, NoHealthyTarget, UpstreamError
from gateway.downstream.messages import Request, Response, StreamResponse
from gateway.http.headers import DEFAULT_RULES
from gateway.request.answer import relay, whole_answer
from gateway.request.attempts import (
    IDEMPOTENT,
    ConnectFailed,
    HeadersLate,
    Retryable,
    TimeoutLimits,
    classify,
    client_fault,
    h2_fields,
    head_of,
)
from gateway.upstream.connection import Connection, ConnectTimeout, UpstreamResponse
from gateway.upstream.h2call import H2Call
from gateway.upstream.pool import Pool
from gateway.upstream.targets import Target

if TYPE_CHECKING:
    from gateway.request.proxy import Upstream


class Finish(Protocol):
    """Who is told, once, how an exchange ended."""

    def done(self, answer: Response | StreamResponse, upstream_seconds: float) -> None: ...

    def failed(self, exc: Exception) -> None: ...

    def stream(self, upstream: UpstreamResponse, upstream_seconds: float) -> bool:
        """An answer that streams: True when whoever awaits the exchange relays it itself
        (`Exchange.relay_here`), False to have the exchange relay it in a task of its own."""
        ...


class Exchange:
    """One request on its way upstream, shared by every attempt (see the module's text)."""

    __slots__ = (
        "_task",
        "conn",
        "data",
        "ended",
        "finish",
        "headers",
        "kind",
        "last",
        "limits",
        "path",
        "query",
        "replayable",
        "request",
        "request_id",
        "sent_at",
        "started",
        "target",
        "trailer_rules",
        "tried",
        "upgrade",
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
        finish: Finish,
    ) -> None:
        self.upstream = upstream
        self.request = request
        self.path = path
        self.query = query
        self.headers = headers
        self.request_id = request_id
        self.data = data  # None, the whole body, or a stream of it
        self.replayable = replayable
        self.limits = limits
        self.finish = finish
        self.started = time.perf_counter()  # the total timeout counts from here
        self.sent_at = 0.0  # when the attempt in progress began
        self.tried: list[Target] = []
        self.trailer_rules = DEFAULT_RULES  # which request trailers may go upstream
        self.upgrade = False  # a WebSocket upgrade: a fresh connection, a 101 becomes a tunnel
        self.last: UpstreamError | None = None  # the failure of the attempt before
        # the attempt in progress: its target and connection, its header deadline's kind
        self.target: Target | None = None
        self.conn: Connection | H2Call | None = None  # HTTP/1.1, or a stream of HTTP/2
        self.kind = "headers"
        self._task: asyncio.Task[None] | None = None  # a connection opening or a body relayed
        self.ended = False

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

    # ------------------------------------------------------------ attempts

    def start(self) -> None:
        """Counted in flight from here until `finish` is told; then the first attempt."""
        self.upstream.began()
        self._attempt()

    def _attempt(self) -> None:
        upstream = self.upstream
        target = upstream.balancer.pick(exclude=self.tried)
        if target is None:
            self._fail(self.last or NoHealthyTarget(f"{upstream.name}: no healthy target"))
            return
        if self.tried:
            upstream.count("retry")
        self.tried.append(target)
        self.target = target
        self.sent_at = time.perf_counter()
        target.inflight += 1
        conn = None if self.upgrade else target.pool.take_idle()
        if conn is not None:
            self._send(conn)
        else:
            self._task = asyncio.get_running_loop().create_task(self._connect(target))

    async def _connect(self, target: Target) -> None:
        wait, kind = self.stage(self.limits.connect, "connect")
        failure: BaseException | None = None
        # (a name per clause: mypyc types a shared one by the first clause)
        pool = target.pool
        conn: Connection | H2Call
        try:
            if self.upgrade and isinstance(pool, Pool):  # a fresh one: it becomes the tunnel
                conn = await pool.open_fresh(wait)
            else:
                conn = await pool.acquire(wait)
        except ConnectTimeout as late:
            failure = HeadersLate("total") if kind == "total" else late
        except ssl.SSLError as tls:  # an OSError too, but a TLS failure, not a refusal
            failure = tls
        except OSError as refused:
            failure = ConnectFailed(refused)
        except Exception as bug:  # a gateway bug: answered as one
            failure = bug
        self._task = None
        if failure is not None:
            self._attempt_failed(failure)
            return
        if self.ended:  # stopped while the connection opened
            conn.give_back()
            return
        if self.request.protocol.closed:  # the client left while its connection was found
            conn.give_back()
            self._detach()
            self._fail(ClientClosed("the client left before the request was sent"))
            return
        self._send(conn)

    def _send(self, conn: Connection | H2Call) -> None:
        target = self.target
        assert target is not None
        request = self.request
        self.conn = conn
        request.on_gone = conn.close  # the client leaving ends the exchange upstream
        data = self.data
        streamed = data is not None and not isinstance(data, bytes)
        if isinstance(conn, H2Call):
            conn.send(h2_fields(target, self), None if streamed else data, streamed, True, self)
        else:
            conn.send(
                head_of(target, self),
                None if streamed else data,
                request.method != "HEAD",
                self,
                self.upgrade,
            )
        if streamed:
            chunked = request.content_length is None
            conn.stream_body(data, chunked, request.trailers, self.trailer_rules)
        wait, self.kind = self.stage(self.limits.headers, "headers")
        self.upstream.deadlines(conn.loop).add(self, wait)

    # ------------------------------------------------------------ what the attempt meets

    def response(self, upstream: UpstreamResponse) -> None:
        """The answer's head is in (after the bytes that carried it: a small answer is whole)."""
        target = self.target
        assert target is not None and self.conn is not None
        self.upstream.deadlines(self.conn.loop).discard(self)
        headers_after = time.perf_counter() - self.sent_at
        self.upstream.observe(headers_after)
        if upstream.status >= 500:
            target.failed(f"HTTP {upstream.status}")
        else:
            target.succeeded()
        self.conn = None
        if upstream.status == 101:  # the switch an upgrade asked for: a tunnel, joined by
            if not self.finish.stream(upstream, headers_after):  # whoever awaits (`tunnel`)
                self.request.on_gone = None
                upstream.release()
                self._detach()
                self._fail(ClientClosed("the client left before its tunnel opened"))
            return
        whole = whole_answer(self, upstream)
        if whole is None:  # a body still streaming: relayed by whoever awaits, else by a task
            if self.finish.stream(upstream, headers_after):
                return
            self._task = asyncio.get_running_loop().create_task(
                self._relay_task(upstream, headers_after)
            )
            return
        self.request.on_gone = None
        upstream.release()
        self._detach()
        self._done(whole, headers_after)

    def error(self, exc: BaseException) -> None:
        """The attempt failed before the answer's head was in (the connection is done for)."""
        if self.conn is not None:
            self.upstream.deadlines(self.conn.loop).discard(self)
            self.conn.close()
        self._attempt_failed(exc)

    def expire(self) -> None:
        """The answer's head did not come in time."""
        if self.conn is not None:
            self.conn.abandon()
        self._attempt_failed(HeadersLate(self.kind))

    def _attempt_failed(self, exc: BaseException) -> None:
        conn, self.conn = self.conn, None
        self.request.on_gone = None
        target = self.target
        assert target is not None
        self._detach()
        if self.ended:
            return
        if self.request.protocol.closed:  # the client left: its own outcome, not the upstream's
            self._fail(ClientClosed("the client left before the answer"))
            return
        if conn is not None and conn.client_fault is not None:
            self._fail(client_fault(conn.client_fault))  # its body failed: a 4xx of its own
            return
        upstream = self.upstream
        retry_safe = self.request.method in IDEMPOTENT and self.replayable
        failure = classify(exc, upstream.name, target, retry_safe, upstream.count)
        if isinstance(failure, Retryable):
            upstream.count(failure.outcome)
            self.last = failure.error
            if len(self.tried) <= upstream.config.retries.attempts and upstream.may_retry():
                self._attempt()
                return
            failure = failure.error
        self._fail(failure if isinstance(failure, Exception) else UpstreamError(repr(failure)))

    # ------------------------------------------------------------ the answer

    async def _relay_task(self, upstream: UpstreamResponse, headers_after: float) -> None:
        try:
            try:
                answer = await relay(self, upstream)
            finally:
                self._task = None
                self.request.on_gone = None  # before the connection may serve another client
                upstream.release()
                self._detach()
        except asyncio.CancelledError:
            self._fail(ClientClosed("the exchange was stopped while its answer streamed"))
            raise
        except Exception as exc:  # a gateway bug: the pipeline logs it
            self._fail(exc)
            return
        self._done(answer, headers_after)

    async def relay_here(self, upstream: UpstreamResponse) -> StreamResponse:
        """Relay a streamed answer in the awaiting task (`Finish.stream` said so), so that its
        end and whatever the awaiting task does next (the access line) come in one go."""
        try:
            return await relay(self, upstream)
        finally:
            self.request.on_gone = None  # before the connection may serve another client
            upstream.release()
            self._detach()
            self._end()

    def tunnel(self, upstream: UpstreamResponse, tunnel: asyncio.Protocol) -> bytes:
        """A 101: its connection is handed to `tunnel`, which calls `tunnel_closed` when it
        ends (the exchange is in flight until then). Returns the bytes that came after the
        101; UpstreamError when the upstream closed the connection already."""
        self.request.on_gone = None
        early = upstream.hand_over(tunnel)
        if early is None:
            self.upstream.count("reset")
            self.tunnel_closed()
            raise UpstreamError(
                f"{self.upstream.name}: the upstream closed the connection after its 101",
                kind="reset",
            )
        self.upstream.count("ok")
        return early

    def tunnel_closed(self) -> None:
        self._detach()
        self._end()

    # ------------------------------------------------------------ the end, once

    def stop(self) -> None:
        """Whoever awaited the exchange went away: whatever is in progress is dropped."""
        if self.ended:
            return
        task, self._task = self._task, None
        conn, self.conn = self.conn, None
        gone, self.request.on_gone = self.request.on_gone, None
        if conn is not None:
            self.upstream.deadlines(conn.loop).discard(self)
            conn.abandon()
        elif gone is not None:  # an answer (or a 101) that nobody will read: its connection
            gone()  # is closed, not left holding a slot of its pool
        self._detach()
        self._end()
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    def _detach(self) -> None:
        """The attempt in progress is over for its target."""
        target, self.target = self.target, None
        if target is not None:
            target.inflight -= 1

    def _end(self) -> bool:
        if self.ended:
            return False
        self.ended = True
        self.upstream.ended()
        return True

    def _done(self, answer: Response | StreamResponse, headers_after: float) -> None:
        if self._end():
            self.finish.done(answer, headers_after)

    def _fail(self, exc: Exception) -> None:
        if self._end():
            self.finish.failed(exc)
