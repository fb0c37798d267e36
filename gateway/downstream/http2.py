"""HTTP/2 on the proxy listeners (ALPN `h2`), the I/O around the `h2` library's sans-IO
connection: frames in, one `Request` per stream out to the same handler HTTP/1.1 requests go
to, answered on the stream (`h2stream`). The connection's limits are the listener's: at most
`max_concurrent_streams` streams at once, a head of at most `max_headers` fields of
`max_header_size` bytes (and their sum as SETTINGS_MAX_HEADER_LIST_SIZE), a request target of
at most `max_request_line` bytes; the deadlines for the first request and for an idle
connection are HTTP/1.1's. A protocol error ends the connection with a GOAWAY that says so."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TYPE_CHECKING, cast

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from h2.errors import ErrorCodes

from gateway.base.log import event, server_log
from gateway.downstream.h1reader import Refused
from gateway.downstream.h2stream import H2Stream
from gateway.downstream.messages import (
    Answer,
    ClientChannel,
    Hijacked,
    Request,
    Response,
    StreamResponse,
    json_error,
    request_ids,
)

if TYPE_CHECKING:
    from gateway.downstream.connections import HttpServer, Limits

_WINDOW = 1 << 20  # the connection's receive window: what all streams' bodies may hold at once


class Http2Connection(ClientChannel):
    """One client connection speaking HTTP/2."""

    def __init__(self, server: HttpServer, limits: Limits) -> None:
        super().__init__()
        self._server = server
        self._limits = limits
        self._loop = asyncio.get_running_loop()
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
        head_bytes = limits.max_headers * (limits.max_header_size + 32)
        self.h2.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: limits.max_concurrent_streams,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: head_bytes,
            },
        )
        self.h2.decoder.max_header_list_size = head_bytes
        self.streams: dict[int, H2Stream] = {}
        self.closing = False  # GOAWAY sent: no new streams, close once the open ones end
        self.write_paused = False

    # ------------------------------------------------------------ transport events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self._server.connection_made(self, self.transport)
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window(_WINDOW - 65535)
        self.flush()
        self._set_deadline("new", self._limits.header_timeout)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self._protocol_error(exc)
            return
        for ev in events:
            if isinstance(ev, h2.events.DataReceived):
                stream = self.streams.get(ev.stream_id)
                if stream is not None:
                    stream.received(ev.data, ev.flow_controlled_length)
                else:
                    self.acknowledge(ev.stream_id, ev.flow_controlled_length)
            elif isinstance(ev, h2.events.RequestReceived):
                self._request(ev)
            elif isinstance(ev, h2.events.StreamEnded):
                stream = self.streams.get(ev.stream_id)
                if stream is not None and stream.request is not None:
                    stream.request.end()
            elif isinstance(ev, h2.events.TrailersReceived):
                self._trailers(ev)
            elif isinstance(ev, h2.events.StreamReset):
                stream = self.streams.pop(ev.stream_id, None)
                if stream is not None:
                    stream.lost("the client reset the stream")
                    self._idle_if_done()
            elif isinstance(ev, (h2.events.WindowUpdated, h2.events.RemoteSettingsChanged)):
                for stream in list(self.streams.values()):
                    stream.pump()
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self.closing = True  # the client's GOAWAY: finish what is open, then close
                self._idle_if_done()
        self.flush()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.deadline_kind = None
        streams, self.streams = self.streams, {}
        for stream in streams.values():
            stream.lost("the client closed the connection")
        self._wake_drain()
        self._server.connection_lost(self)

    def pause_writing(self) -> None:
        # the client does not read: its streams' writers wait, and no new request is read
        self.write_paused = True
        self.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        self.resume_reading()
        for stream in list(self.streams.values()):
            stream.pump()

    # ------------------------------------------------------------ frames out

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.closed:
            self.transport.write(data)

    def acknowledge(self, stream_id: int, size: int) -> None:
        """Give the peer back the window `size` body bytes took."""
        if size and not self.closed:
            try:
                self.h2.acknowledge_received_data(size, stream_id)
            except h2.exceptions.StreamClosedError:
                self.h2.acknowledge_received_data(size, 0)  # the connection's share only
            self.flush()

    def _protocol_error(self, exc: h2.exceptions.ProtocolError) -> None:
        code = (
            ErrorCodes.ENHANCE_YOUR_CALM
            if isinstance(exc, h2.exceptions.DenialOfServiceError)
            else ErrorCodes.PROTOCOL_ERROR
        )
        limits = self._limits
        peer = self.transport.get_extra_info("peername") if self.transport else None
        server_log.info(
            "HTTP/2 protocol error, closing",
            extra=event(
                listener=limits.listener,
                peer=f"{peer[0]}:{peer[1]}" if peer else "",
                error=code.name.lower(),
                detail=str(exc)[:300],
            ),
        )
        limits.hit("h2_protocol")
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self.h2.close_connection(error_code=code)
        self.flush()
        if self.transport is not None:
            self.transport.close()

    # ------------------------------------------------------------ requests

    def _request(self, ev: h2.events.RequestReceived) -> None:
        self.deadline_kind = None
        stream = H2Stream(self, ev.stream_id)
        self.streams[ev.stream_id] = stream
        try:
            request = self._make_request(stream, ev.headers, ev.stream_ended is not None)
        except Refused as refused:
            request_id = self._limits.refused(refused, self._peer())
            stream.request = Request(stream, "GET", "/", (2, 0), [], True, False)
            stream.request.end()
            stream.respond(stream.request, json_error(refused.status, refused.code, request_id))
            return
        stream.request = request
        if ev.stream_ended is not None:
            request.end()
        self._loop.call_soon(self._handle, stream, request)

    def _make_request(
        self, stream: H2Stream, headers: list[tuple[bytes, bytes]], ended: bool
    ) -> Request:
        """The request of a stream's head (h2 has checked its pseudo-fields and refused the
        connection-specific ones). `:authority` is its Host; a Host that says otherwise is
        refused; several `cookie` fields become one (RFC 9113 8.2.3)."""
        limits = self._limits
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
            raise Refused(
                414, "request_line_too_long", "request_line", "request target over the limit"
            )
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

    def _trailers(self, ev: h2.events.TrailersReceived) -> None:
        stream = self.streams.get(ev.stream_id)
        if stream is None or stream.request is None:
            return
        trailers = stream.request.trailers
        for name, value in ev.headers:
            trailers.append(
                (name.decode("ascii", "surrogateescape"), value.decode("utf-8", "surrogateescape"))
            )
        if len(trailers) > self._limits.max_headers:
            stream.request.content.fail(ConnectionResetError("too many trailers"))

    def _handle(self, stream: H2Stream, request: Request) -> None:
        if stream.closed:
            return
        try:
            pending = self._server.handler(request)
        except Exception:  # the pipeline answers its own errors: this is a bug
            server_log.exception("request handling failed")
            stream.respond(request, _internal_error())
            return
        if pending is not None:
            self._loop.create_task(self._serve(stream, request, pending))

    async def _serve(self, stream: H2Stream, request: Request, pending: Awaitable[Answer]) -> None:
        try:
            answer = await pending
        except Exception:  # the pipeline answers its own errors: this is a bug
            server_log.exception("request handling failed")
            answer = _internal_error()
        if isinstance(answer, Hijacked):
            return
        if isinstance(answer, StreamResponse):
            if not answer.prepared:
                await answer.prepare(request)
            await answer.write_eof()
        stream.respond(request, answer)

    def answered(self, stream: H2Stream) -> None:
        """A stream's answer is out: forget it; a body still arriving is not wanted."""
        if not stream.ended or self.streams.get(stream.stream_id) is not stream:
            return
        del self.streams[stream.stream_id]
        request = stream.request
        if request is not None and not request.complete and not self.closed:
            # RFC 9113 8.1: an answer before the whole request stops the rest with NO_ERROR
            with contextlib.suppress(h2.exceptions.H2Error):
                self.h2.reset_stream(stream.stream_id, ErrorCodes.NO_ERROR)
            request.content.fail(ConnectionResetError("answered before the body ended"))
            self.flush()
        self._idle_if_done()

    # ------------------------------------------------------------ deadlines and closing

    def _peer(self) -> tuple[str, int] | None:
        return self.transport.get_extra_info("peername") if self.transport else None

    def _set_deadline(self, kind: str, seconds: float) -> None:
        self.deadline_kind = kind
        self.deadline = self._loop.time() + seconds

    def _idle_if_done(self) -> None:
        if self.streams or self.closed:
            return
        if self.closing:
            self.close()
        else:
            self._set_deadline("idle", self._limits.keepalive_timeout)

    def expire(self) -> None:
        kind, self.deadline_kind = self.deadline_kind, None
        if self.closed or self.streams:
            return
        if kind == "new":
            self._limits.hit("header_timeout")
        self.close()

    def is_idle(self) -> bool:
        return not self.streams

    def close_when_answered(self) -> None:
        """No new streams (GOAWAY); close once the open ones are answered."""
        if not self.closing and not self.closed:
            self.closing = True
            self.h2.close_connection(last_stream_id=self.h2.highest_inbound_stream_id)
            self.flush()
        self._idle_if_done()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            if not self.closing:
                self.closing = True
                self.h2.close_connection(last_stream_id=self.h2.highest_inbound_stream_id)
                self.flush()
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.abort()


def _internal_error() -> Response:
    server_log.exception("unhandled error in request handler")
    return json_error(500, "internal_error", request_ids.next())
