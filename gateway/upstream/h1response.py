"""The sans-IO core of the upstream HTTP/1.1 client: an upstream's bytes in, answer events out.

`ResponseReader.feed` runs the bytes of one exchange through llhttp (`httptools`) and tells its
`ResponseEvents` the final answer's head (1xx answers are skipped), its body bytes and its end.
The head is held to aiohttp's client limits as its bytes arrive: a status line or field of at
most 8190 bytes, at most 128 fields (trailers alike), and at most `MAX_HEAD` bytes in all, so an
endless field costs bounded memory before the 502. Bytes beyond the complete answer mark the
connection as never to be reused. No sockets and no event loop: `upstream.connection` owns those,
and the unit tests feed bytes."""

from __future__ import annotations

from typing import Final, Protocol

import httptools

MAX_LINE: Final = 8190
MAX_FIELDS: Final = 128
MAX_HEAD: Final = MAX_FIELDS * (MAX_LINE + 4) + MAX_LINE


class BadResponse(Exception):
    """The upstream's bytes are not a valid HTTP/1.1 response."""


class _NoBody(Exception):
    """Stops the parser after the head of an answer that has no body (to HEAD)."""


class _Surplus(Exception):
    """Stops the parser at a message that follows the complete answer of an exchange."""


class ResponseHead:
    """A final answer's head as received: fields in order, bytes exact (surrogateescape), and
    the framing fields the gateway acts on, picked out once. `trailers` fills in after the
    body."""

    __slots__ = (
        "chunked",
        "connection",
        "content_length",
        "fields",
        "reason",
        "status",
        "trailers",
    )

    def __init__(self, status: int, reason: str, fields: list[tuple[str, str]]) -> None:
        self.status = status
        self.reason = reason
        self.fields = fields
        self.trailers: list[tuple[str, str]] = []
        self.content_length: int | None = None
        self.chunked = False  # the body comes in chunks: it may end with trailers
        self.connection: tuple[str, ...] = ()  # the values of its Connection field(s)
        connection: list[str] = []
        for name, value in fields:
            lower = name.lower()
            if lower == "content-length" and value.strip().isdigit():
                self.content_length = int(value)
            elif lower == "transfer-encoding":
                self.chunked = value.rsplit(",", 1)[-1].strip().lower() == "chunked"
            elif lower == "connection":
                connection.append(value)
        if connection:
            self.connection = tuple(connection)
        if self.chunked:
            self.content_length = None


class ResponseEvents(Protocol):
    """What a `ResponseReader` tells, in order: one head, its body bytes, its end."""

    def response_head(self, head: ResponseHead) -> None: ...

    def response_body(self, data: bytes) -> None: ...

    def response_end(self) -> None: ...


class ResponseReader:
    """One upstream connection's answers, one exchange at a time (`expect` starts each)."""

    def __init__(self, events: ResponseEvents) -> None:
        self._events = events
        self._parser = httptools.HttpResponseParser(self)
        self._expect_body = True
        self._upgrade = False  # the request asked to switch protocols
        self._reason = b""
        self._fields: list[tuple[str, str]] = []
        self._head: ResponseHead | None = None
        self._head_bytes = 0  # of the head being read
        self.head_done = False  # the current message's head is complete
        self.answered = False  # the exchange's final answer is complete
        self.keep_alive = False  # the answer allows another exchange on the connection
        self.surplus = False  # bytes came beyond the answer: the connection is never reused
        self.upgraded = False  # a 101 to an upgrade: `tail` holds the bytes after its head
        self.tail = b""

    def expect(self, body: bool, upgrade: bool = False) -> None:
        """A request went out: read its answer (with a body unless it was a HEAD; a 101 is an
        answer, not an interim one, when the request asked to `upgrade`)."""
        self._expect_body = body
        self._upgrade = upgrade
        self._head = None
        self.keep_alive = False
        self.answered = False

    def feed(self, data: bytes) -> BadResponse | None:
        """Read what arrived; returns why the bytes are not a valid answer (the connection must
        then close), else None."""
        if not self.head_done:
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD:
                return BadResponse(f"response head over {MAX_HEAD} bytes")
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as switched:  # only after a 101 it asked for
            self.upgraded = True
            self.tail = data[switched.args[0] if switched.args else len(data) :]
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, _Surplus):
                self.surplus = True  # the answer stands; the connection goes when it ends
                self.keep_alive = False
            elif not isinstance(cause, _NoBody):
                return BadResponse(str(cause or exc))
        except httptools.HttpParserError as exc:
            return BadResponse(str(exc) or type(exc).__name__)
        return None

    # ------------------------------------------------------------ llhttp's callbacks

    def on_message_begin(self) -> None:
        if self.answered:
            raise _Surplus()
        self._fields = []
        self._reason = b""
        self.head_done = False
        self._head_bytes = 0

    def on_status(self, status: bytes) -> None:
        self._reason += status  # in pieces, as the reads split it
        if len(self._reason) > MAX_LINE:
            raise BadResponse(f"status line over {MAX_LINE} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) + len(value) > MAX_LINE:
            raise BadResponse(f"field {name[:64]!r} over {MAX_LINE} bytes")
        # as the bytes came: serialize_head encodes them back the same way, byte for byte
        pair = (name.decode("utf-8", "surrogateescape"), value.decode("utf-8", "surrogateescape"))
        if self.head_done:
            if self._head is not None:
                trailers = self._head.trailers
                if len(trailers) >= MAX_FIELDS:
                    raise BadResponse(f"more than {MAX_FIELDS} trailer fields")
                trailers.append(pair)
            return
        if len(self._fields) >= MAX_FIELDS:
            raise BadResponse(f"more than {MAX_FIELDS} fields")
        self._fields.append(pair)

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        self.head_done = True
        if status == 101 and not self._upgrade:
            raise BadResponse("a protocol switch (101) that the request did not ask for")
        if 100 <= status < 200 and status != 101:
            return  # 100 Continue and friends: the real answer follows
        head = ResponseHead(status, self._reason.decode("utf-8", "surrogateescape"), self._fields)
        self._head = head
        self._events.response_head(head)
        if not self._expect_body:
            self.keep_alive = False
            self.answered = True
            self._events.response_end()
            raise _NoBody()

    def on_body(self, body: bytes) -> None:
        if self._head is not None:
            self._events.response_body(body)

    def on_message_complete(self) -> None:
        if self._parser.get_status_code() < 200:
            return
        self.keep_alive = self._parser.should_keep_alive()
        self.answered = True
        if self._head is not None:
            self._events.response_end()
