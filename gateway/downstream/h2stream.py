"""One HTTP/2 stream as the place its request is answered (a `ClientStream`): the answer's head
as a HEADERS frame, its body as DATA frames sent as the peer's flow-control windows allow (the
rest waits here, and a writer waits while more than `HIGH_WATER` waits), trailers at the end.
The request's body is acknowledged to the peer (a WINDOW_UPDATE) only while its stream takes
more: a client cannot send faster than the exchange reads."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Final

import h2.exceptions

from gateway.downstream.h1reader import Refused
from gateway.downstream.messages import (
    DATES,
    NO_BODY,
    ClientStream,
    Fields,
    Request,
    Response,
    StreamResponse,
)
from gateway.http.bytestream import HIGH_WATER

if TYPE_CHECKING:
    from gateway.downstream.connections import Limits
    from gateway.downstream.http2 import Http2Connection

# fields HTTP/2 forbids in a message (RFC 9113 8.2.2): never sent, whatever an upstream says
CONNECTION_SPECIFIC: Final = frozenset(
    {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te"}
)

Header = tuple[bytes, bytes]


def h2_fields(status: int, fields: Fields, length: int | None) -> list[Header]:
    """An answer's head for HTTP/2: `:status` first, names in lower case, the bytes of each
    value as they came (surrogateescape), connection-specific fields left out, Date added."""
    out = [(b":status", str(status).encode("ascii"))]
    dated = False
    for name, value in fields:
        lower = name.lower()
        if lower in CONNECTION_SPECIFIC or lower == "content-length":
            continue
        if lower == "date":
            dated = True
        out.append(
            (lower.encode("ascii", "surrogateescape"), value.encode("utf-8", "surrogateescape"))
        )
    if length is not None:
        out.append((b"content-length", str(length).encode("ascii")))
    if not dated:
        out.append((b"date", DATES.now().encode("ascii")))
    return out


def request_of(stream: H2Stream, headers: list[Header], ended: bool, limits: Limits) -> Request:
    """The request of a stream's head (h2 has checked its pseudo-fields and refused the
    connection-specific ones). `:authority` is its Host; a Host that says otherwise is
    refused; several `cookie` fields become one (RFC 9113 8.2.3)."""
    method = path = authority = scheme = ""
    fields: list[tuple[str, str]] = []
    cookies: list[str] = []
    for raw_name, raw_value in headers:
        if len(raw_name) + len(raw_value) > limits.max_header_size:
            raise Refused(431, "header_too_large", "header_size", "a field over the limit")
        name = raw_name.decode("ascii", "surrogateescape")
        value = raw_value.decode("utf-8", "surrogateescape")
        if name.startswith(":"):
            if name == ":method":
                method = value
            elif name == ":path":
                path = value
            elif name == ":authority":
                authority = value
            elif name == ":scheme":
                scheme = value
        elif name == "cookie":
            cookies.append(value)
        else:
            fields.append((name, value))
    if len(fields) + len(cookies) > limits.max_headers:
        raise Refused(431, "too_many_headers", "header_count", "too many fields")
    if len(path) + len(method) + 10 > limits.max_request_line:
        raise Refused(414, "request_line_too_long", "request_line", "request target over the limit")
    if method == "CONNECT" or not path:
        raise Refused(405, "method_not_allowed", None, "CONNECT is not proxied")
    if scheme != "https":
        raise Refused(400, "bad_request", None, f":scheme {scheme!r} on a TLS connection")
    hosts = [v for k, v in fields if k == "host"]
    if authority:
        if any(h != authority for h in hosts):
            raise Refused(400, "bad_request", None, "Host differs from :authority")
        if not hosts:
            fields.insert(0, ("host", authority))
    if cookies:
        fields.append(("cookie", "; ".join(cookies)))
    request = Request(stream, method, path, (2, 0), fields, True, False)
    if not ended and request.content_length is None:
        request.chunked = True  # a body delimited by the stream's end: chunked upstream
    return request


class H2Stream(ClientStream):
    """A stream of an `Http2Connection` and the one request it carries."""

    def __init__(self, conn: Http2Connection, stream_id: int) -> None:
        super().__init__()
        self.conn = conn
        self.stream_id = stream_id
        self.transport = conn.transport
        self.settings = conn.settings
        self.info = conn.info
        self.request: Request | None = None
        self.answered = False  # the answer's end is sent (or waits here to be)
        self.ended = False  # END_STREAM is on the wire: the stream is ours no more
        self._out: deque[bytes] = deque()  # body bytes the windows do not let out yet
        self._out_size = 0
        self._end: Fields | None = None  # the end is due once _out is out (with these trailers)
        self._unacked = 0  # body bytes received while the request's stream was full
        # deadlines (the connection checks them each second): the request's body must come
        # within body_timeout plus a second per body_min_rate bytes, and an answer waiting for
        # the client's window must move within stall_timeout
        self.opened = conn.now()
        self.body_bytes = 0
        self.timed_out = False
        self._moved = self.opened

    # ------------------------------------------------------------ the request's body

    def received(self, data: bytes, flow_length: int) -> None:
        """Body bytes from the peer; acknowledged now, or once the request's stream drains."""
        request = self.request
        if request is None or self.closed:
            self.conn.acknowledge(self.stream_id, flow_length)
            return
        self.body_bytes += len(data)
        request.content.feed(data)
        if self._reading_paused:
            self._unacked += flow_length
        else:
            self.conn.acknowledge(self.stream_id, flow_length)

    def overdue(self, now: float) -> str | None:
        """The limit of the deadline that has passed (`body_timeout`, `h2_stall`), or None."""
        limits = self.conn.limits
        request = self.request
        if (
            request is not None
            and not request.complete
            and not self.timed_out
            and not self._reading_paused  # held back by the exchange, not by the client
        ):
            allowed = self.opened + limits.body_timeout
            if limits.body_min_rate > 0:
                allowed += self.body_bytes / limits.body_min_rate
            if now > allowed:
                return "body_timeout"
        if self._out_size and now - self._moved > limits.stall_timeout:
            return "h2_stall"
        return None

    def pause_reading(self) -> None:
        self._reading_paused = True  # acknowledge nothing more: the peer's window runs out

    def resume_reading(self) -> None:
        if self._reading_paused:
            self._reading_paused = False
            unacked, self._unacked = self._unacked, 0
            if unacked and not self.closed:
                self.conn.acknowledge(self.stream_id, unacked)

    def lost(self, why: str) -> None:
        """The peer reset the stream, or the connection is gone: whatever still waits on it
        ends (the exchange through `on_gone`, the body with an error, a writer's drain)."""
        if self.closed:
            return
        self.closed = True
        request = self.request
        if request is not None:
            if request.on_gone is not None:
                gone, request.on_gone = request.on_gone, None
                gone()
            if not request.complete:
                request.content.fail(ConnectionResetError(why))
        self._out.clear()
        self._out_size = 0
        self._wake_drain()

    # ------------------------------------------------------------ answering

    def keeps_alive(self, request: Request) -> bool:
        return not self.conn.closing

    def send_continue(self) -> None:
        self._send_head([(b":status", b"100")], end=False)

    def respond(self, request: Request, answer: Response | StreamResponse) -> None:
        if isinstance(answer, Response):
            body = answer.body
            if request.method == "HEAD" or answer.status in NO_BODY:
                body = b""
            length = None if answer.status in NO_BODY else len(answer.body)
            fields = h2_fields(answer.status, answer.headers, length)
            self._send_head(fields, end=not body, flush=not body)  # pump flushes head and body
            self.answered = True
            if body:
                self._end = []  # no trailers: the body's last DATA frame ends the stream
                self._queue(body)
        self.conn.answered(self)

    def start_stream(self, request: Request, answer: StreamResponse) -> None:
        bodiless = request.method == "HEAD" or answer.status in NO_BODY
        answer.mode = "none" if bodiless else "length"
        self._send_head(h2_fields(answer.status, answer.headers, answer.content_length), bodiless)
        if bodiless:
            self.answered = True

    def stream_data(self, answer: StreamResponse, data: bytes) -> None:
        if answer.mode != "none":
            self._queue(data)

    def stream_end(self, answer: StreamResponse, trailers: Fields) -> None:
        if answer.mode != "none":
            self._finish(trailers)

    def _send_head(self, headers: list[Header], end: bool, flush: bool = True) -> None:
        if self.closed:
            return
        try:
            self.conn.h2.send_headers(self.stream_id, headers, end_stream=end)
        except h2.exceptions.H2Error as exc:  # the stream closed under us
            self.lost(f"stream closed: {exc}")
            return
        if end:
            self.ended = True
        if flush:
            self.conn.flush()

    def _queue(self, data: bytes) -> None:
        if self.closed:
            return
        self._out.append(data)
        self._out_size += len(data)
        self.pump()

    def _finish(self, trailers: Fields) -> None:
        self.answered = True
        if self.closed:
            return
        self._end = trailers
        self.pump()

    def pump(self) -> None:
        """Send what the windows allow, then the end once all is out; a writer waits while
        more than HIGH_WATER bytes are left here."""
        h2c = self.conn.h2
        sid = self.stream_id
        out = self._out
        try:
            while out and not self.closed:
                room = min(h2c.local_flow_control_window(sid), h2c.max_outbound_frame_size)
                if room <= 0:
                    break
                data = out.popleft()
                if len(data) > room:
                    out.appendleft(data[room:])
                    data = data[:room]
                self._out_size -= len(data)
                last = not out and self._end is not None and not self._end
                h2c.send_data(sid, data, end_stream=last)
                self._moved = self.conn.now()
                if last:  # the end without trailers rides on the last DATA frame
                    self._end = None
                    self.ended = True
            if not out and self._end is not None and not self.closed:
                trailers, self._end = self._end, None
                if trailers:
                    fields = [
                        (
                            k.lower().encode("ascii", "surrogateescape"),
                            v.encode("utf-8", "surrogateescape"),
                        )
                        for k, v in trailers
                        if k.lower() not in CONNECTION_SPECIFIC
                    ]
                    h2c.send_headers(sid, fields, end_stream=True)
                else:
                    h2c.end_stream(sid)
                self.ended = True
        except h2.exceptions.H2Error as exc:
            self.lost(f"stream closed: {exc}")
        self.conn.flush()
        self._write_paused = self._out_size > HIGH_WATER or self.conn.write_paused
        if not self._write_paused:
            self._wake_drain()
        if self.ended:
            self.conn.answered(self)
