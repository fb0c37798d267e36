"""One exchange on a stream of an HTTP/2 upstream session (`upstream.h2session`): what
`upstream.connection.Connection` is for HTTP/1.1. `send` opens the stream with the head (and a
buffered body), `stream_body` relays a body as it arrives within the upstream's windows, the
waiter is told once (the answer's head, after the frames that carried it, or the failure), and
the answer streams through an `UpstreamResponse` whose trailers follow its body. Answer bytes
are acknowledged only as the answer's reader takes them, so a client that does not read closes
the upstream's window instead of filling the gateway's memory."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import TYPE_CHECKING

import h2.exceptions
from h2.errors import ErrorCodes

from gateway.http.bytestream import HIGH_WATER, LOW_WATER
from gateway.http.headers import DEFAULT_RULES, HeaderRules
from gateway.upstream.connection import Chunks, ConnectionLost, UpstreamResponse, Waiter
from gateway.upstream.h1response import BadResponse, ResponseHead

if TYPE_CHECKING:
    from gateway.upstream.h2session import H2Session

Fields = list[tuple[bytes, bytes]]


def _text(fields: Fields) -> list[tuple[str, str]]:
    """Regular fields as the gateway keeps them (bytes exact, surrogateescape)."""
    return [
        (k.decode("utf-8", "surrogateescape"), v.decode("utf-8", "surrogateescape"))
        for k, v in fields
        if not k.startswith(b":")
    ]


class H2Call:
    """One exchange on a stream of an `H2Session` (see the module's text)."""

    def __init__(self, session: H2Session) -> None:
        self._session = session
        self.loop = session.loop
        self.stream_id = 0
        self.client_fault: Exception | None = None  # the client's body failed (see Connection)
        self._waiter: Waiter | None = None
        self._response: UpstreamResponse | None = None
        self._expect_body = True
        self._done = False  # forgotten by the session: nothing more is sent or told
        self._ended_in = False  # the upstream's END_STREAM came
        self._ended_out = False  # ours went
        # the request body not yet within the upstream's window, and what follows it
        self._out: deque[bytes] = deque()
        self._out_size = 0
        self._out_end = False
        self._out_trailers: Fields | None = None
        self._body_task: asyncio.Task[None] | None = None
        self._drain: asyncio.Future[None] | None = None
        # answer bytes received but not acknowledged while the answer's reader is full
        self._paused = False
        self._held = 0

    # ------------------------------------------------------------ the request

    def send(
        self, fields: Fields, body: bytes | None, more: bool, expect_body: bool, waiter: Waiter
    ) -> None:
        """Open the stream with the head (`fields`, pseudo-fields first) and a buffered body;
        `more`: a body follows through `stream_body`."""
        h2c = self._session.h2
        self._waiter = waiter
        self._expect_body = expect_body
        self.stream_id = sid = h2c.get_next_available_stream_id()
        self._session.calls[sid] = self
        if body is None and not more:
            self._ended_out = True
            h2c.send_headers(sid, fields, end_stream=True)
        else:
            h2c.send_headers(sid, fields)
            if body:
                self._queue(body)
            self._out_end = not more
            self.pump()
        self._session.flush()

    def stream_body(
        self,
        body: Chunks,
        chunked: bool,
        trailers: list[tuple[str, str]],
        rules: HeaderRules = DEFAULT_RULES,
    ) -> None:
        """Send a body as it arrives from the client, then the `trailers` it sent after it."""
        self._body_task = self.loop.create_task(self._write_body(body, trailers, rules))

    async def _write_body(
        self, body: Chunks, trailers: list[tuple[str, str]], rules: HeaderRules
    ) -> None:
        try:
            while True:
                try:
                    piece = await body.readany()
                except Exception as exc:
                    self.client_fault = exc
                    raise
                if not piece:
                    break
                self._queue(piece)
                self.pump()
                while self._out_size > HIGH_WATER and not self._done:
                    self._drain = self.loop.create_future()
                    await self._drain
                if self._done:
                    return
            kept = [
                (k.lower().encode("utf-8", "surrogateescape"), v.encode("utf-8", "surrogateescape"))
                for k, v in trailers
                if rules.forwardable_trailer(k)
            ]
            self._out_trailers = kept or None
            self._out_end = True
            self.pump()
        except Exception:
            # the client's body failed: the stream is reset, so the upstream never takes a
            # truncated body for a complete one; the answer side reports it
            self.close()

    def _queue(self, data: bytes) -> None:
        self._out.append(data)
        self._out_size += len(data)

    def pump(self) -> None:
        """Send what the upstream's windows allow of the request body (and its end)."""
        if self._done or self._ended_out:
            return
        h2c = self._session.h2
        sid = self.stream_id
        try:
            while self._out:
                room = min(h2c.local_flow_control_window(sid), h2c.max_outbound_frame_size)
                if room <= 0:
                    break
                piece = self._out.popleft()
                if len(piece) > room:
                    self._out.appendleft(piece[room:])
                    piece = piece[:room]
                self._out_size -= len(piece)
                last = not self._out and self._out_end and self._out_trailers is None
                h2c.send_data(sid, piece, end_stream=last)
                self._ended_out = last
            if not self._out and self._out_end and not self._ended_out:
                if self._out_trailers is not None:
                    h2c.send_headers(sid, self._out_trailers, end_stream=True)
                else:
                    h2c.end_stream(sid)
                self._ended_out = True
        except h2.exceptions.StreamClosedError:
            self._out.clear()  # the upstream answered and closed the stream: no more to send
            self._out_size = 0
        if self._out_size <= LOW_WATER and self._drain is not None:
            drain, self._drain = self._drain, None
            if not drain.done():
                drain.set_result(None)
        self._session.flush()

    # ------------------------------------------------------------ the answer

    def head(self, headers: Fields) -> bool:
        """The answer's head; True when the waiter is to be told (after the frames with it)."""
        status = next((v for k, v in headers if k == b":status"), b"")
        if not status.isdigit() or len(status) != 3:
            self.lost(BadResponse(f"an HTTP/2 answer with :status {status!r}"))
            return False
        head = ResponseHead(int(status), "", _text(headers))
        if head.content_length is None:
            head.chunked = True  # its trailers may follow it (to an HTTP/1.1 client: chunked)
        self._response = UpstreamResponse(self, head)
        return True

    def data(self, data: bytes, flow_length: int) -> None:
        if self._response is not None and data:
            self._response.body.feed(data)
        if self._paused:
            self._held += flow_length
        elif flow_length:
            self._session.h2.acknowledge_received_data(flow_length, self.stream_id)

    def trailers(self, headers: Fields) -> None:
        if self._response is not None:
            self._response.trailers.extend(_text(headers))

    def ended(self) -> None:
        self._ended_in = True
        response = self._response
        if response is None:
            self.lost(BadResponse("the upstream ended its stream without an answer"))
            return
        response.body.feed_eof()
        if self._ended_out:
            self._forget()

    def tell(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and self._response is not None:
            waiter.response(self._response)

    def lost(self, exc: BaseException) -> None:
        """The stream (or the whole session) failed: whoever waits is told."""
        response = self._response
        if response is not None and not response.complete:
            response.body.fail(exc)
        waiter, self._waiter = self._waiter, None
        self._forget()
        if waiter is not None:
            waiter.error(exc)

    # ------------------------------------------------------------ the answer's reader

    def pause_reading(self) -> None:
        self._paused = True

    def resume_reading(self) -> None:
        self._paused = False
        held, self._held = self._held, 0
        if held and not self._done:
            self._session.h2.acknowledge_received_data(held, self.stream_id)
            self._session.flush()

    # ------------------------------------------------------------ the end

    def _forget(self) -> None:
        if self._done:
            return
        self._done = True
        task = self._body_task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)
        response = self._response
        if response is not None and not response.complete:  # its reader must not wait on
            response.body.fail(ConnectionLost(None))  # a stream that is gone
        held, self._held = self._held, 0
        if held:  # bytes held back from a reader that paused: the session's window gets them
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self._session.h2.acknowledge_received_data(held, self.stream_id)
        if self.stream_id and not (self._ended_in and self._ended_out):
            # the stream is still open one way or both: the upstream may stop
            with contextlib.suppress(h2.exceptions.StreamClosedError):
                self._session.h2.reset_stream(self.stream_id, ErrorCodes.CANCEL)
            self._session.flush()
        self._session.forget(self)

    def close(self) -> None:
        """The exchange ends (the client left, its body failed): the stream is reset, and the
        waiter, if any, told in a moment, as a closed HTTP/1.1 connection would tell it."""
        if self._done:
            return
        waiter, self._waiter = self._waiter, None
        self._forget()
        if waiter is not None:
            self.loop.call_soon(waiter.error, ConnectionLost(None))

    def give_back(self) -> None:
        """Taken but never used (the exchange ended meanwhile)."""
        self.abandon()

    def abandon(self) -> None:
        """The waiter gives up (its deadline passed): the stream is reset, nobody told."""
        self._waiter = None
        self._forget()

    def finished(self, response: UpstreamResponse) -> None:
        """The exchange is done with the answer (`UpstreamResponse.release`)."""
        self._waiter = None
        self._forget()

    def hand_over(self, protocol: asyncio.Protocol) -> bytes | None:
        return None  # a stream is never a tunnel (an upgrade route needs an HTTP/1.1 upstream)
