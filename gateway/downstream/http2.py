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
from typing import TYPE_CHECKING, cast

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from h2.errors import ErrorCodes

from gateway.base.errors import RequestTimeout
from gateway.base.log import event, server_log
from gateway.downstream.h1reader import Refused
from gateway.downstream.h2limits import Budget, limit_of
from gateway.downstream.h2stream import H2Stream, request_of
from gateway.downstream.messages import (
    ClientChannel,
    Request,
    json_error,
)

if TYPE_CHECKING:
    from gateway.downstream.connections import HttpServer, Limits

# frames that cost the gateway work and an answer, but carry no request
CONTROL_EVENTS = (
    h2.events.PingReceived,
    h2.events.RemoteSettingsChanged,
    h2.events.PriorityUpdated,
)
_WINDOW = 1 << 20  # the connection's receive window: what all streams' bodies may hold at once


class Http2Connection(ClientChannel):
    """One client connection speaking HTTP/2."""

    def __init__(self, server: HttpServer, limits: Limits) -> None:
        super().__init__()
        self._server = server
        self.limits = limits
        self._resets = Budget(limits.max_stream_resets)
        self._control = Budget(limits.max_control_frames)
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
        self._set_deadline("new", self.limits.header_timeout)

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
                if ev.remote_reset and not self._resets.spend(self.now()):
                    self._calm("h2_resets", "too many streams reset")
                    return
            elif isinstance(ev, h2.events.WindowUpdated):
                for stream in list(self.streams.values()):
                    stream.pump()
            elif isinstance(ev, CONTROL_EVENTS):
                if not self._control.spend(self.now()):
                    self._calm("h2_control", "too many SETTINGS, PING or PRIORITY frames")
                    return
                if isinstance(ev, h2.events.RemoteSettingsChanged):
                    for stream in list(self.streams.values()):
                        stream.pump()  # a new initial window may let answers move
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
        """h2 refused the client's frames (and queued its GOAWAY): count it, say why, close."""
        self._end(limit_of(exc), str(exc), None)

    def _calm(self, limit: str, detail: str) -> None:
        """The client overspent a budget: GOAWAY ENHANCE_YOUR_CALM, then close."""
        self._end(limit, detail, ErrorCodes.ENHANCE_YOUR_CALM)

    def _end(self, limit: str, detail: str, code: ErrorCodes | None) -> None:
        peer = self._peer()
        server_log.info(
            "HTTP/2 client over a limit or off the protocol, closing",
            extra=event(
                listener=self.limits.listener,
                peer=f"{peer[0]}:{peer[1]}" if peer else "",
                limit=limit,
                detail=detail[:300],
            ),
        )
        self.limits.hit(limit)
        if code is not None:
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self.h2.close_connection(error_code=code)
        self.closing = True
        self.flush()
        if self.transport is not None:
            self.transport.close()

    # ------------------------------------------------------------ requests

    def _request(self, ev: h2.events.RequestReceived) -> None:
        stream = H2Stream(self, ev.stream_id)
        self.streams[ev.stream_id] = stream
        try:
            request = request_of(stream, ev.headers, ev.stream_ended is not None, self.limits)
        except Refused as refused:
            request_id = self.limits.refused(refused, self._peer())
            stream.request = Request(stream, "GET", "/", (2, 0), [], True, False)
            stream.request.end()
            stream.respond(stream.request, json_error(refused.status, refused.code, request_id))
            return
        stream.request = request
        if ev.stream_ended is not None:
            request.end()
        if self.deadline_kind != "streams":
            self._set_deadline("streams", 1.0)  # its deadlines are checked each second
        self._loop.call_soon(self._handle, stream, request)

    def _trailers(self, ev: h2.events.TrailersReceived) -> None:
        stream = self.streams.get(ev.stream_id)
        if stream is None or stream.request is None:
            return
        trailers = stream.request.trailers
        for name, value in ev.headers:
            trailers.append(
                (name.decode("ascii", "surrogateescape"), value.decode("utf-8", "surrogateescape"))
            )
        if len(trailers) > self.limits.max_headers:
            stream.request.content.fail(ConnectionResetError("too many trailers"))

    def _handle(self, stream: H2Stream, request: Request) -> None:
        if stream.closed:
            return
        self._server.serve(request)

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

    def now(self) -> float:
        return self._loop.time()

    def _set_deadline(self, kind: str, seconds: float) -> None:
        self.deadline_kind = kind
        self.deadline = self._loop.time() + seconds

    def _idle_if_done(self) -> None:
        if self.streams or self.closed:
            return
        if self.closing:
            self.close()
        else:
            self._set_deadline("idle", self.limits.keepalive_timeout)

    def expire(self) -> None:
        kind, self.deadline_kind = self.deadline_kind, None
        if self.closed:
            return
        if self.streams:
            self._check_streams()
            return
        if kind == "new":
            self.limits.hit("header_timeout")
        if kind != "streams":
            self.close()

    def _check_streams(self) -> None:
        """Each second while streams are open: a body that does not come in time fails (the
        handler answers 408), an answer the client's window keeps still is reset."""
        now = self.now()
        for stream in list(self.streams.values()):
            why = stream.overdue(now)
            if why is None:
                continue
            self.limits.hit(why)
            if why == "body_timeout" and stream.request is not None:
                stream.timed_out = True
                stream.request.content.fail(
                    RequestTimeout(f"request body not received in time ({stream.body_bytes} bytes)")
                )
            else:
                self.streams.pop(stream.stream_id, None)
                with contextlib.suppress(h2.exceptions.H2Error):
                    self.h2.reset_stream(stream.stream_id, ErrorCodes.CANCEL)
                stream.lost("the client kept the answer waiting")
        self.flush()
        if self.streams:
            self._set_deadline("streams", 1.0)
        else:
            self._idle_if_done()

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
