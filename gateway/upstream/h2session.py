"""HTTP/2 to one upstream target (`protocol: h2c`, or `h2` over the upstream's TLS): the I/O
around the `h2` library's client connection. An `H2Session` is one connection that carries the
requests of many exchanges at once, each an `H2Call` on a stream of its own; `upstream.h2pool`
keeps a bounded number of sessions per target. A session waits for the upstream's first
SETTINGS before any stream opens, so its stream limit is never overrun; a GOAWAY fails the
streams it names as never processed and lets the others finish."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Final

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

from gateway.upstream.connection import ConnectionLost
from gateway.upstream.h1response import BadResponse
from gateway.upstream.h2call import H2Call

if TYPE_CHECKING:
    from gateway.upstream.h2pool import H2Pool

WINDOW: Final = 1 << 20  # the session's receive window, for all its answers' bodies at once
STREAM_WINDOW: Final = 256 * 1024  # one answer's: what its reader buffers before it pauses


class H2Session(asyncio.Protocol):
    """One HTTP/2 connection to a target, its streams each an `H2Call`."""

    def __init__(self, pool: H2Pool, max_streams: int) -> None:
        self._pool = pool
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.loop = asyncio.get_running_loop()
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.calls: dict[int, H2Call] = {}
        self.max_streams = max_streams  # the config's; the upstream's SETTINGS may say fewer
        self.going_away = False  # GOAWAY received, or the pool retired: no new streams
        self.idle_since = time.monotonic()
        # the upstream's first SETTINGS (its stream limit among them): no stream before it
        self.ready: asyncio.Future[None] = self.loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.h2.local_settings = h2.settings.Settings(
            client=True,
            initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW},
        )
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window(WINDOW - 65535)
        self.flush()

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.closed:
            self.transport.write(data)

    def has_room(self) -> bool:
        """A new stream may open now."""
        return (
            not self.closed
            and not self.going_away
            and len(self.calls)
            < min(self.max_streams, self.h2.remote_settings.max_concurrent_streams)
        )

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        if not self.ready.done() and data.startswith(b"HTTP/"):
            self.fail(BadResponse("the upstream answered in HTTP/1, not HTTP/2 (protocol: h1?)"))
            return
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self.fail(BadResponse(f"HTTP/2 protocol error: {exc}"))
            return
        answered: list[H2Call] = []
        for ev in events:
            if isinstance(ev, h2.events.ResponseReceived):
                call = self.calls.get(ev.stream_id)
                if call is not None and call.head(ev.headers):
                    answered.append(call)
            elif isinstance(ev, h2.events.DataReceived):
                call = self.calls.get(ev.stream_id)
                if call is not None:
                    call.data(ev.data, ev.flow_controlled_length)
                else:
                    self.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.TrailersReceived):
                call = self.calls.get(ev.stream_id)
                if call is not None:
                    call.trailers(ev.headers)
            elif isinstance(ev, h2.events.StreamEnded):
                call = self.calls.get(ev.stream_id)
                if call is not None:
                    call.ended()
            elif isinstance(ev, h2.events.StreamReset):
                call = self.calls.get(ev.stream_id)
                if call is not None:
                    call.lost(ConnectionLost(RuntimeError(f"stream reset: {ev.error_code!r}")))
            elif isinstance(ev, h2.events.WindowUpdated):
                for call in list(self.calls.values()):
                    if ev.stream_id in (0, call.stream_id):
                        call.pump()
            elif isinstance(ev, h2.events.RemoteSettingsChanged):
                if not self.ready.done():
                    self.ready.set_result(None)
                self._pool.room_changed()
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self._going_away(ev.last_stream_id or 0)
        for call in answered:  # after the frames that came with the head: a small body is whole
            call.tell()
        self.flush()

    def _going_away(self, last_stream_id: int) -> None:
        """GOAWAY: streams above `last_stream_id` were never processed; the rest may finish."""
        self.going_away = True
        for call in list(self.calls.values()):
            if call.stream_id > last_stream_id:
                call.lost(ConnectionLost(RuntimeError("the upstream is going away (GOAWAY)")))
        if not self.calls:
            self.close()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.ready.done():  # an HTTP/2 server says SETTINGS first, whatever else it does
            self.ready.set_exception(
                BadResponse("the upstream closed the connection before its HTTP/2 SETTINGS")
                if exc is None
                else ConnectionLost(exc)
            )
        self._pool.gone(self)
        for call in list(self.calls.values()):
            call.lost(ConnectionLost(exc))
        self.calls.clear()

    def fail(self, exc: BaseException) -> None:
        """The upstream broke the protocol: every stream fails with `exc`, the connection ends."""
        if not self.ready.done():
            self.ready.set_exception(exc)
        for call in list(self.calls.values()):
            call.lost(exc)
        self.close()

    def forget(self, call: H2Call) -> None:
        """`call` is over: its stream no longer counts against the session's streams."""
        if self.calls.get(call.stream_id) is call:
            del self.calls[call.stream_id]
        if not self.calls:
            self.idle_since = time.monotonic()
            if self.going_away:
                self.close()
        self._pool.room_changed()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.closed = True
            self.flush()
            self.transport.abort()
