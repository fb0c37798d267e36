"""The messages of the proxy listeners, in either HTTP version: the parsed request (its head,
its body as a stream, its trailers), the answers (whole, streamed, or a connection taken over),
and `ClientStream`, what a request is answered on: an HTTP/1.1 connection (`http1`, its bytes
from `h1writer`) or one HTTP/2 stream (`h2stream`)."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from http import HTTPStatus
from typing import TYPE_CHECKING, Final

from multidict import CIMultiDict

from gateway.http.bytestream import ByteStream, FlowControl

if TYPE_CHECKING:
    from gateway.downstream.connections import ConnInfo, ListenerSettings

Fields = list[tuple[str, str]]  # header fields in order, names as given

# BYTES_CONCAT: in the request path's compiled modules, bytes are joined with b"".join, never
# `a + b`: mypyc 1.20's primitive for it is declared to consume its left operand but does not
# release it, so every compiled `a + b` leaked `a` (an answer head per request).
# tests/integration/test_leaks.py::test_requests_leave_no_memory_behind holds it.

_REASONS: Final = {s.value: s.phrase for s in HTTPStatus}
NO_BODY: Final = frozenset({204, 304})  # statuses whose answers carry no body


def reason_phrase(status: int) -> str:
    return _REASONS.get(status, "Unknown")


class _Dates:
    """The Date header, formatted once a second."""

    def __init__(self) -> None:
        self._second = 0
        self._value = ""

    def now(self) -> str:
        second = int(time.time())
        if second != self._second:
            self._second = second
            self._value = formatdate(second, usegmt=True)
        return self._value


DATES: Final = _Dates()


class _RequestIds:
    """Unpredictable request ids without a getrandom() call per request: 8 random bytes each,
    taken from a 4 KiB pool."""

    def __init__(self) -> None:
        self._pool = b""
        self._at = 0

    def next(self) -> str:
        if self._at >= len(self._pool):
            self._pool, self._at = os.urandom(4096), 0
        at = self._at
        self._at = at + 8
        return self._pool[at : at + 8].hex()


request_ids: Final = _RequestIds()


# --------------------------------------------------------------------------- requests


Body = ByteStream  # a request body as it arrives


class ClientChannel(FlowControl):
    """What carries a client's requests: an HTTP/1.1 connection, an HTTP/2 connection, or one
    of its streams. It knows its listener's settings and the client (set once the connection is
    open), may have a deadline (the listener's sweep calls `expire` once it passes), and closes.
    The listener keeps its connections as these."""

    def __init__(self) -> None:
        super().__init__()
        self.settings: ListenerSettings | None = None
        self.info: ConnInfo | None = None
        self.deadline = 0.0
        self.deadline_kind: str | None = None  # the deadline armed, if any

    def expire(self) -> None:
        """Its deadline passed."""

    def is_idle(self) -> bool:
        """Nothing in progress: it may close now."""
        return True

    def close(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    def close_when_answered(self) -> None:
        """No new requests: close once those in progress are answered."""
        raise NotImplementedError


class ClientStream(ClientChannel):
    """What a request is answered on. The pipeline and the exchange see only this; an HTTP/1.1
    connection frames the answers as bytes, an HTTP/2 stream as frames. As a `FlowControl` it
    stops the client's body while the request's stream is full."""

    def respond(self, request: Request, answer: Response | StreamResponse) -> None:
        """The answer to `request`: a Response is sent whole; a StreamResponse has been sent."""
        raise NotImplementedError

    def keeps_alive(self, request: Request) -> bool:
        """Whether another request may follow this one's answer."""
        return False

    def send_continue(self) -> None:
        """`100 Continue`: the client may send the body it announced."""
        raise NotImplementedError

    def start_stream(self, request: Request, answer: StreamResponse) -> None:
        """Send the head of an answer whose body follows in pieces."""
        raise NotImplementedError

    def stream_data(self, answer: StreamResponse, data: bytes) -> None:
        raise NotImplementedError

    def stream_end(self, answer: StreamResponse, trailers: Fields) -> None:
        raise NotImplementedError


class Request:
    """One parsed request head, its body as a stream, and the trailers that followed it.

    The fields the gateway itself reads (Host, Content-Length, Transfer-Encoding, Connection)
    are picked out in one pass over the head; the case-insensitive multidict `headers` is made
    only when something asks for another field."""

    __slots__ = (
        "_content",
        "_headers",
        "chunked",
        "complete",
        "connection",
        "content_length",
        "fields",
        "host",
        "host_count",
        "keep_alive",
        "method",
        "names",
        "on_gone",
        "protocol",
        "raw_path",
        "trailers",
        "transfer_encoding",
        "upgrade",
        "version",
    )

    def __init__(
        self,
        conn: ClientStream,
        method: str,
        raw_path: str,
        version: tuple[int, int],
        fields: Fields,
        keep_alive: bool,
        upgrade: bool,
    ) -> None:
        self.protocol = conn
        self.method = method
        self.raw_path = raw_path
        self.version = version
        self.fields = fields  # as received, in order
        self._headers: CIMultiDict[str] | None = None
        self.keep_alive = keep_alive
        self.upgrade = upgrade
        self._content: Body | None = None  # made on first use: most requests have no body
        self.trailers: list[tuple[str, str]] = []
        self.complete = False
        # called if the client leaves while this request is being answered: ends the upstream
        # exchange (set by the proxy while one is open)
        self.on_gone: Callable[[], None] | None = None
        self.chunked = False
        self.content_length: int | None = None
        self.host: str | None = None  # the first Host field
        self.host_count = 0
        self.transfer_encoding: tuple[str, ...] = ()
        self.connection: tuple[str, ...] = ()
        self.names: list[str] = []  # the field names in lower case, in order
        names = self.names
        length: str | None = None
        for name, value in fields:
            lower = name.lower()
            names.append(lower)
            if lower == "host":
                self.host_count += 1
                if self.host is None:
                    self.host = value
            elif lower == "content-length":
                if length is None:
                    length = value
            elif lower == "transfer-encoding":
                self.transfer_encoding += (value,)
            elif lower == "connection":
                self.connection += (value,)
        if length is not None:
            # the value as llhttp framed the body: optional whitespace around it is allowed
            # (RFC 9110 5.5), and the body, the 413 check and the Upgrade rule go by it
            length = length.strip(" \t")
            if length.isascii() and length.isdigit():
                self.content_length = int(length)
        if self.transfer_encoding:
            te = self.transfer_encoding[0]
            self.chunked = te.rsplit(",", 1)[-1].strip().lower() == "chunked"

    @property
    def headers(self) -> CIMultiDict[str]:
        """Every field, looked up by any case (made on first use)."""
        headers = self._headers
        if headers is None:
            headers = self._headers = CIMultiDict(self.fields)
        return headers

    @property
    def transport(self) -> asyncio.Transport | None:
        return self.protocol.transport

    @property
    def content(self) -> Body:
        """The body as it arrives (ended already once the request is complete)."""
        body = self._content
        if body is None:
            body = self._content = ByteStream(self.protocol)
            if self.complete:
                body.feed_eof()
        return body

    def end(self) -> None:
        """The whole request is in: its body (if it was asked for yet) ends."""
        self.complete = True
        if self._content is not None:
            self._content.feed_eof()

    @property
    def body_exists(self) -> bool:
        return self.chunked or bool(self.content_length)

    async def read(self) -> bytes:
        return await self.content.read()

    def send_continue(self) -> None:
        """`100 Continue`: the client may send the body it announced."""
        self.protocol.send_continue()


# --------------------------------------------------------------------------- responses


class Response:
    """A whole answer: status, headers and body, written in one piece."""

    def __init__(
        self,
        status: int = 200,
        *,
        reason: str | None = None,
        body: bytes = b"",
        text: str | None = None,
        content_type: str | None = None,
        headers: Fields | dict[str, str] | None = None,
    ) -> None:
        self.status = status
        self.reason = reason or reason_phrase(status)
        self.headers: Fields = (
            headers if isinstance(headers, list) else list((headers or {}).items())
        )
        if text is not None:
            body = text.encode("utf-8")
            if content_type is not None:
                content_type += "; charset=utf-8"
        if content_type is not None:
            self.headers.append(("Content-Type", content_type))
        self.body = body
        self.keep_alive = True
        self.outcome = status  # the status metrics and the access log report

    def force_close(self) -> None:
        self.keep_alive = False


class StreamResponse:
    """An answer whose body is sent as it comes. On HTTP/1.1 (`h1writer`) with its length when
    known, else chunked (trailers at the end), else (an HTTP/1.0 client) delimited by closing
    the connection; on HTTP/2 as DATA frames."""

    def __init__(
        self,
        status: int = 200,
        *,
        reason: str | None = None,
        headers: Fields | None = None,
    ) -> None:
        self.status = status
        self.reason = reason or reason_phrase(status)
        self.headers: Fields = headers if headers is not None else []
        self.content_length: int | None = None
        self.keep_alive = True
        self.prepared = False
        self.finished = False
        self.outcome = status  # the status metrics and the access log report
        self.mode = "length"  # its body's HTTP/1.1 framing: length | chunked | close | none
        self._to: ClientStream | None = None

    def force_close(self) -> None:
        self.keep_alive = False

    async def prepare(self, request: Request) -> None:
        to = request.protocol
        self._to = to
        self.prepared = True
        to.start_stream(request, self)
        await to.drain()

    async def write(self, data: bytes) -> None:
        to = self._to
        assert to is not None, "prepare() first"
        if data:
            to.stream_data(self, data)
            await to.drain()

    async def write_eof(self, trailers: list[tuple[str, str]] | None = None) -> None:
        """End the body, with `trailers` where the framing carries them."""
        if self.finished:
            return
        self.finished = True
        to = self._to
        if to is not None:
            to.stream_end(self, trailers or [])
            await to.drain()


class Hijacked:
    """The handler took the connection over (a WebSocket tunnel): nothing more to write."""

    status = 101
    outcome = 101
    keep_alive = False


Answer = Response | StreamResponse | Hijacked
# A handler returns the awaitable that gives a request's answer, or None when it answers (now
# or later) through `request.protocol.respond`, without a task: the proxy's usual request.
Handler = Callable[[Request], Awaitable[Answer] | None]


def json_error(status: int, code: str, request_id: str, route: str | None = None) -> Response:
    body = json.dumps({"error": code, "route": route, "request_id": request_id})
    return Response(
        status,
        text=body,
        content_type="application/json",
        headers={"X-Request-Id": request_id, "Cache-Control": "no-store"},
    )
