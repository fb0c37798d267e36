"""HTTP/1.1 to one upstream target: the I/O around `h1response`'s sans-IO core, a connection
kept alive in a pool (`upstream.pool`). The request head goes out in one write, the response
streams back with flow control, and trailers are kept.

aiohttp's client was the largest part of the gateway's per-request CPU (BENCHMARKS.md); this
is the small part of it a reverse proxy needs."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Protocol, cast

from gateway.http.bytestream import ByteStream, FlowControl, chunk, last_chunk
from gateway.http.headers import DEFAULT_RULES, HeaderRules
from gateway.upstream.h1response import ResponseHead, ResponseReader

if TYPE_CHECKING:
    from gateway.upstream.pool import Pool


# a client's trailers are forwarded like its headers: hop-by-hop fields and identity look-alikes
# dropped, and neither framing nor Host may arrive late
class ConnectionLost(Exception):
    """The upstream closed or reset the connection (`cause` holds the OS or TLS error)."""

    def __init__(self, cause: BaseException | None) -> None:
        super().__init__(repr(cause) if cause else "connection closed by the upstream")
        self.cause = cause


class ConnectTimeout(Exception):
    """No connection within the connect timeout."""


class Chunks(Protocol):
    """A request body streamed upstream: `readany()` gives the next chunk, b"" at the end."""

    async def readany(self) -> bytes: ...


class Waiter(Protocol):
    """Who waits for the answer of an exchange: told once, when its headers are in (after the
    bytes that carried them were parsed, so a small body is complete by then), or when it failed
    before that."""

    def response(self, response: UpstreamResponse) -> None: ...

    def error(self, exc: BaseException) -> None: ...


class Carrier(Protocol):
    """What an answer's body comes through: an HTTP/1.1 connection or an HTTP/2 stream."""

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def finished(self, response: UpstreamResponse) -> None: ...

    def hand_over(self, protocol: asyncio.Protocol) -> bytes | None: ...


class UpstreamResponse:
    """Status, headers and a body that streams: `read()` returns b"" at the end."""

    __slots__ = (
        "_conn",
        "body",
        "chunked",
        "connection",
        "content_length",
        "headers",
        "reason",
        "status",
        "trailers",
    )

    def __init__(self, conn: Carrier, head: ResponseHead) -> None:
        self.status = head.status
        self.reason = head.reason
        self.headers = head.fields
        self.trailers = head.trailers  # filled in by the reader after the body
        self.content_length = head.content_length
        self.chunked = head.chunked  # the body came in chunks: it may end with trailers
        self.connection = head.connection  # the values of its Connection header(s)
        self._conn = conn
        self.body = ByteStream(conn)

    @property
    def complete(self) -> bool:
        return self.body.complete

    async def read(self, within: float) -> bytes:
        """The next piece of the body (b"" once it is complete); TimeoutError when nothing
        arrives within `within` seconds, ConnectionLost or BadResponse when the upstream fails."""
        return await self.body.readany(within)

    def take_body(self) -> bytes:
        """The whole body of a complete response, at once."""
        assert self.body.complete
        return self.body.take_all()

    def release(self) -> None:
        """Give the connection back: kept alive when the whole response was read."""
        self._conn.finished(self)

    def hand_over(self, protocol: asyncio.Protocol) -> bytes | None:
        """A 101's connection, handed to a tunnel (`Connection.hand_over`)."""
        return self._conn.hand_over(protocol)


class Connection(FlowControl):
    """One upstream connection; one exchange at a time."""

    def __init__(self, pool: Pool, pooled: bool = True) -> None:
        super().__init__()
        self._pool = pool
        self.pooled = pooled  # False: opened for one exchange (an upgrade), never kept
        self.loop = asyncio.get_running_loop()
        self._reader = ResponseReader(self)
        self.idle_since = 0.0
        self._lost: BaseException | None = None
        # the exchange in progress
        self._waiter: Waiter | None = None
        self._response: UpstreamResponse | None = None
        # the client's body failed (malformed, over its limit, the client gone): the upstream
        # connection was closed for it, and the exchange's failure is the client's, not the
        # upstream's
        self.client_fault: Exception | None = None
        self._body_task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------ transport events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        if self._waiter is None and self._response is None:
            # nothing was asked (idle in the pool): these bytes would be taken for the answer
            # to the next client's request
            self._reader.surplus = True
            self.close()
            return
        if self._reader.upgraded:  # after the 101, before the tunnel took the transport over
            self._reader.tail = b"".join((self._reader.tail, data))
            return
        bad = self._reader.feed(data)
        if bad is not None:
            self._broken(bad)
            return
        if self._response is not None and self._waiter is not None:
            self._tell(None)

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._lost = exc
        self._pool.gone(self)
        response = self._response
        if response is not None and self._reader.head_done and not response.complete:
            if exc is None and response.content_length is None and not response.chunked:
                response.body.feed_eof()  # a body delimited by the end of the connection
            else:
                response.body.fail(ConnectionLost(exc))
        self._tell(ConnectionLost(exc))
        self._wake_drain()

    def _broken(self, exc: BaseException) -> None:
        if self._waiter is not None:  # nothing went to the client yet: the answer is refused
            self._response = None
        elif self._response is not None:
            self._response.body.fail(exc)  # the waiter relays what came, then this
        self._tell(exc)
        self.close()

    def _tell(self, exc: BaseException | None) -> None:
        """Tell the waiter (once): the response when its headers are in, else `exc`."""
        waiter = self._waiter
        if waiter is None:
            return
        self._waiter = None
        if self._response is not None:
            waiter.response(self._response)
        elif exc is not None:
            waiter.error(exc)

    def give_back(self) -> None:
        """Taken from the pool but never used (the exchange ended meanwhile)."""
        self._pool.release(self, True)

    def abandon(self) -> None:
        """The waiter gives up on the exchange (its deadline passed): close, tell nobody."""
        self._waiter = None
        self.close()

    def close(self) -> None:
        task = self._body_task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.abort()

    # ------------------------------------------------------------ the reader's events

    def response_head(self, head: ResponseHead) -> None:
        self._response = UpstreamResponse(self, head)

    def response_body(self, data: bytes) -> None:
        if self._response is not None:
            self._response.body.feed(data)

    def response_end(self) -> None:
        if self._response is not None:
            self._response.body.feed_eof()

    # ------------------------------------------------------------ one exchange

    def send(
        self,
        head: bytes,
        body: bytes | None,
        expect_body: bool,
        waiter: Waiter,
        upgrade: bool = False,
    ) -> None:
        """Write the request head (and a buffered body) now; `waiter` is told how it went.
        `upgrade`: the request asks to switch protocols, so a 101 is its answer."""
        assert self.transport is not None
        self._waiter = waiter
        self._response = None
        self._reader.expect(expect_body, upgrade)
        self.transport.write(b"".join((head, body)) if body else head)  # messages.BYTES_CONCAT

    def stream_body(
        self,
        body: Chunks,
        chunked: bool,
        trailers: list[tuple[str, str]],
        rules: HeaderRules = DEFAULT_RULES,
    ) -> None:
        """Send a body as it arrives from the client: chunked when its length is unknown, then
        with the `trailers` the client sent after it (the list is complete once the body is)."""
        self._body_task = self.loop.create_task(self._write_body(body, chunked, trailers, rules))

    async def _write_body(
        self, body: Chunks, chunked: bool, trailers: list[tuple[str, str]], rules: HeaderRules
    ) -> None:
        assert self.transport is not None
        try:
            while True:
                try:
                    piece = await body.readany()
                except Exception as exc:
                    self.client_fault = exc
                    raise
                if not piece:
                    break
                self.transport.write(chunk(piece) if chunked else piece)
                await self.drain()
                if self.closed:
                    return  # the response side reports it
            if chunked:
                kept = [(k, v) for k, v in trailers if rules.forwardable_trailer(k)]
                self.transport.write(last_chunk(kept))
        except Exception:
            # the client's body failed (over its limit, client gone): the upstream must not
            # take a truncated body for a complete one, and the response side reports it
            self.close()

    def hand_over(self, protocol: asyncio.Protocol) -> bytes | None:
        """After a 101: the transport's bytes go to `protocol` from now on (it is told
        `connection_made`). Returns the bytes that came after the 101's head, None when the
        upstream closed the connection already."""
        transport = self.transport
        self._waiter = None
        self._response = None
        if transport is None or self.closed or transport.is_closing():
            return None
        self.closed = True  # for this object: the connection is the tunnel's now
        self._pool.gone(self)
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        tail, self._reader.tail = self._reader.tail, b""
        return tail

    def finished(self, response: UpstreamResponse) -> None:
        task = self._body_task
        reader = self._reader
        reuse = response.complete and reader.keep_alive and not reader.surplus and not self.closed
        if task is not None:
            self._body_task = None
            if not task.done():
                task.cancel()
                reuse = False
            elif task.cancelled() or task.exception() is not None:
                reuse = False
        self._waiter = None
        self._response = None
        self._pool.release(self, reuse)
