"""The sans-IO core of the downstream HTTP/1.1 server: a client's bytes in, request events out.

`RequestReader.feed` runs the bytes through llhttp (`httptools`) and tells its `RequestEvents`
what they hold: a head begun, a request head complete (a `messages.Request`), body bytes, the
request's end (trailers kept on it), a refusal, or an upgrade. Every head limit is enforced as
the bytes arrive: the request line, each field's size (an unfinished line included, so a field
without end is cut at the limit, not at the head deadline), the field count, and the same for
trailers. After a refusal nothing more is read. No sockets, no clock, no event loop: `http1`
owns those, and the unit tests feed bytes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import httptools

from gateway.downstream.messages import Request

if TYPE_CHECKING:
    from gateway.downstream.http1 import Http1Connection


class Refused(Exception):
    """A request refused while its head or body was read: answered with `status` and the error
    code `code`, counted under `limit` when a limit bit; the connection then closes."""

    def __init__(self, status: int, code: str, limit: str | None, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.limit = limit


class RequestEvents(Protocol):
    """What a `RequestReader` tells as it reads, in the order the bytes hold it."""

    def head_started(self) -> None: ...

    def request(self, request: Request) -> None: ...

    def body(self, request: Request, data: bytes) -> None: ...

    def request_end(self, request: Request) -> None: ...

    def refused(self, refused: Refused, request: Request | None) -> None: ...


class RequestReader:
    """One connection's request stream. `owner` is the connection each `Request` answers on."""

    def __init__(
        self,
        events: RequestEvents,
        owner: Http1Connection,
        max_request_line: int,
        max_header_size: int,
        max_headers: int,
    ) -> None:
        self._events = events
        self._owner = owner
        self._max_line = max_request_line
        self._max_field = max_header_size
        self._max_fields = max_headers
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._fields: list[tuple[str, str]] = []
        self._line_run = 0  # bytes of the head's unfinished line (request line or field)
        self.parsing: Request | None = None  # head read, body still arriving
        self.in_head = False  # a head has begun and is not complete
        self.stopped = False  # refused: nothing more is read
        self.upgraded = False  # stopped after an upgrade request; its tail is kept
        self.tail = b""

    def feed(self, data: bytes) -> None:
        """Read what arrived; events are told as they are found."""
        if self.stopped:
            return
        if self.upgraded:
            self.tail += data
            return
        try:
            self._parser.feed_data(data)
            if self.in_head:
                self._head_line(data)
        except httptools.HttpParserUpgrade as exc:
            offset = exc.args[0] if exc.args else len(data)
            self.upgraded = True
            self.tail = data[offset:]
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, Refused):
                self.refuse(cause)
            else:
                self.refuse(Refused(400, "bad_request", None, str(cause or exc)))
        except httptools.HttpParserError as exc:
            self.refuse(Refused(400, "bad_request", None, str(exc) or type(exc).__name__))

    def resume_after_upgrade(self) -> None:
        """The upgrade request was answered as a plain one: read on from its tail."""
        self.upgraded = False
        tail, self.tail = self.tail, b""
        if tail:
            self.feed(tail)

    def take_tail(self) -> bytes:
        """The bytes after the upgrade request, for the tunnel that takes the connection."""
        self.upgraded = False
        self.stopped = True
        tail, self.tail = self.tail, b""
        return tail

    def stop(self) -> None:
        """Read no more, and tell nothing more (the owner has dealt with the request)."""
        self.stopped = True
        self.in_head = False
        self.parsing = None

    def refuse(self, refused: Refused) -> None:
        """Stop reading (the stream cannot be trusted past here) and tell why."""
        self.stopped = True
        self.in_head = False
        request, self.parsing = self.parsing, None
        self._events.refused(refused, request)

    def _head_line(self, data: bytes) -> None:
        """llhttp hands a field over only once it ends: the unfinished line is held to the
        limits here, as its bytes arrive."""
        cut = data.rfind(b"\n")
        run = self._line_run + len(data) if cut < 0 else len(data) - cut - 1
        self._line_run = run
        if run > self._max_field and run > self._max_line:
            self.refuse(
                Refused(431, "header_too_large", "header_size", "a head line over the limit")
            )

    # ------------------------------------------------------------ llhttp's callbacks

    def on_message_begin(self) -> None:
        self._url = b""
        self._fields = []
        self.in_head = True
        self._events.head_started()

    def on_url(self, url: bytes) -> None:
        self._url += url
        # the request line: method, target, " HTTP/1.1" and two spaces
        if len(self._url) + len(self._parser.get_method()) + 10 > self._max_line:
            raise Refused(
                414, "request_line_too_long", "request_line", "request line over the limit"
            )

    def on_header(self, name: bytes, value: bytes) -> None:
        pair = (name.decode("utf-8", "surrogateescape"), value.decode("utf-8", "surrogateescape"))
        if len(name) + len(value) > self._max_field:
            raise Refused(431, "header_too_large", "header_size", f"header {pair[0]} too large")
        if self.parsing is not None:  # after the body: a trailer
            trailers = self.parsing.trailers
            trailers.append(pair)
            if len(trailers) > self._max_fields:
                raise Refused(431, "too_many_headers", "header_count", "too many trailers")
            return
        self._fields.append(pair)
        if len(self._fields) > self._max_fields:
            raise Refused(431, "too_many_headers", "header_count", "too many headers")

    def on_headers_complete(self) -> None:
        parser = self._parser
        self.in_head = False
        self._line_run = 0
        version = parser.get_http_version()
        request = Request(
            self._owner,
            parser.get_method().decode("ascii"),
            self._url.decode("utf-8", "surrogateescape"),
            (1, 1) if version == "1.1" else (1, 0) if version == "1.0" else (0, 9),
            self._fields,
            parser.should_keep_alive(),
            parser.should_upgrade(),
        )
        self.parsing = request
        self._events.request(request)

    def on_body(self, body: bytes) -> None:
        if self.parsing is not None:
            self._events.body(self.parsing, body)

    def on_message_complete(self) -> None:
        request, self.parsing = self.parsing, None
        if request is not None:
            self._events.request_end(request)
