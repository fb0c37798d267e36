"""HTTP/1.1 on the proxy listeners, the I/O around `h1reader`'s sans-IO core (the messages:
`messages`): requests read from the connection, answered in order, with the deadlines for a
request head, a body and keep-alive idle time, pipelining bounded by queued answers, a JSON
error for whatever the reader refuses, and the connection handed over whole after a WebSocket
upgrade.

It replaced aiohttp's server on the request path, which costs more CPU per request and
discards request trailers (BENCHMARKS.md); the admin port stays on aiohttp."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Final, cast

from gateway.base.errors import RequestTimeout
from gateway.base.log import event, server_log
from gateway.downstream import h1writer
from gateway.downstream.h1reader import Refused, RequestReader
from gateway.downstream.messages import (
    ClientStream,
    Fields,
    Request,
    Response,
    StreamResponse,
    request_ids,
)
from gateway.downstream.tlsconn import TlsTransport

if TYPE_CHECKING:
    from gateway.downstream.connections import HttpServer, Limits

# pipelined requests waiting for their answers before the connection stops being read
MAX_QUEUED: Final = 16


# --------------------------------------------------------------------------- connections


class Http1Connection(ClientStream):
    """One client connection: parse, queue, answer in order, keep alive or close."""

    def __init__(self, server: HttpServer, limits: Limits) -> None:
        super().__init__()
        self._server = server
        self._limits = limits
        self._loop = asyncio.get_running_loop()
        self._reader = RequestReader(
            self, self, limits.max_request_line, limits.max_header_size, limits.max_headers
        )
        # answering
        self._queue: deque[Request | Refused] = deque()
        self._busy = False
        # reading held back: too many requests wait for their answers, or the client does not
        # read the answers it has (pipelining is bounded by queued answers, not by memory)
        self._held = False
        self._born = self._loop.time()
        self._serving: Request | None = None  # handed to the pipeline, not answered yet
        self._dropped: Request | None = None  # refused by the reader before it was handled
        self._closing = False  # no new requests: close after the current answer
        self._body_started = 0.0
        self._body_bytes = 0
        # after an upgrade the bytes belong to the tunnel's other end
        self._tunnel_peer: asyncio.Transport | None = None

    # ------------------------------------------------------------ transport events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # our TlsTransport
        self._server.connection_made(self, self.transport)
        self._set_deadline("new", self._limits.header_timeout)

    def data_received(self, data: bytes) -> None:
        if self._tunnel_peer is not None:
            self._tunnel_peer.write(data)
            return
        if not self._closing:
            self._reader.feed(data)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.deadline_kind = None
        serving, self._serving = self._serving, None
        if serving is not None and serving.on_gone is not None:
            gone, serving.on_gone = serving.on_gone, None
            gone()
        if self._reader.parsing is not None:
            self._reader.parsing.content.fail(
                ConnectionResetError("the client closed the connection")
            )
        self._wake_drain()
        if self._tunnel_peer is not None:
            self._tunnel_peer.close()
        self._server.connection_lost(self)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._tunnel_peer is not None:
            self._tunnel_peer.pause_reading()
        else:
            self._hold_reading()  # the client does not read its answers: read no more requests

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._tunnel_peer is not None and not self._tunnel_peer.is_closing():
            self._tunnel_peer.resume_reading()
        else:
            self._release_reading()

    def resume_reading(self) -> None:
        """A request body's flow control may resume reading, unless it is held (below)."""
        if not self._held:
            super().resume_reading()

    def _hold_reading(self) -> None:
        self._held = True
        self.pause_reading()

    def _release_reading(self) -> None:
        if self._held and len(self._queue) <= MAX_QUEUED // 2 and not self._write_paused:
            self._held = False
            super().resume_reading()

    # ------------------------------------------------------------ writing

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def send_continue(self) -> None:
        self.write(h1writer.CONTINUE)

    def start_stream(self, request: Request, answer: StreamResponse) -> None:
        self.write(h1writer.stream_head(request, answer, self.keeps_alive(request)))

    def stream_data(self, answer: StreamResponse, data: bytes) -> None:
        piece = h1writer.stream_piece(answer, data)
        if piece:
            self.write(piece)

    def stream_end(self, answer: StreamResponse, trailers: Fields) -> None:
        tail = h1writer.stream_tail(answer, trailers)
        if tail:
            self.write(tail)

    def keeps_alive(self, request: Request) -> bool:
        """Whether the connection may carry another request after this one's answer: not past
        max_connection_age, which bounds how long the identity decision of its handshake lives."""
        return (
            request.keep_alive
            and not self._closing
            and not self._server.closing
            and self._loop.time() - self._born < self._limits.max_connection_age
        )

    # ------------------------------------------------------------ deadlines (the sweeper fires them)

    def _set_deadline(self, kind: str, seconds: float) -> None:
        self.deadline_kind = kind
        self.deadline = self._loop.time() + seconds

    def expire(self) -> None:
        kind, self.deadline_kind = self.deadline_kind, None
        if kind == "body":
            self._body_expired()
            return
        if self.closed or self.transport is None or self._busy:
            return  # a pipelined head waits behind an answer: re-armed when that is done
        if kind == "idle":
            self.transport.close()
            return
        limits = self._limits
        limits.hit("header_timeout")
        peer = self.transport.get_extra_info("peername")
        server_log.info(
            "no request on a new connection in time, closing"
            if kind == "new"
            else "request head not received in time, closing",
            extra=event(
                listener=limits.listener,
                peer=f"{peer[0]}:{peer[1]}" if peer else "",
                header_timeout=limits.header_timeout,
            ),
        )
        self._closing = True
        if kind == "new":
            # nothing was asked: an answer now could be read as the answer to a request the
            # client is sending at this moment, so the connection just closes
            self.transport.close()
            return
        self.write(h1writer.closing_error(408, "request_timeout", request_ids.next()))
        self.transport.close()

    def _body_expired(self) -> None:
        """The body deadline passed: extended for what arrived since, or the body is cut."""
        request = self._reader.parsing
        if request is None or self.closed:
            return
        limits = self._limits
        allowed = self._body_started + limits.body_timeout
        if limits.body_min_rate > 0:
            allowed += self._body_bytes / limits.body_min_rate
        if self._loop.time() < allowed:
            self.deadline_kind, self.deadline = "body", allowed
            return
        limits.hit("body_timeout")
        self._reader.stop()  # nothing more is read: the stream cannot be trusted past here
        request.content.fail(
            RequestTimeout(
                f"request body not received in time ({self._body_bytes} bytes in "
                f"{self._loop.time() - self._body_started:.1f} s)"
            )
        )

    # ------------------------------------------------------------ the reader's events

    def head_started(self) -> None:
        if self.deadline_kind == "new":
            self.deadline_kind = "head"  # still counted from the connection's start
        elif self.deadline_kind != "head":
            self._set_deadline("head", self._limits.header_timeout)

    def request(self, request: Request) -> None:
        if self.deadline_kind == "head":
            self.deadline_kind = None
        if request.chunked or request.content_length:  # a body to wait for: its deadline
            self._body_bytes = 0
            self._body_started = self._loop.time()
            self._set_deadline("body", self._limits.body_timeout)
        self._queue.append(request)
        if len(self._queue) > MAX_QUEUED:
            self._hold_reading()  # the rest of this read is parsed; nothing more is read
        if not self._busy:
            self._next()

    def body(self, request: Request, data: bytes) -> None:
        self._body_bytes += len(data)
        request.content.feed(data)

    def request_end(self, request: Request) -> None:
        request.end()
        if self.deadline_kind == "body":
            self.deadline_kind = None

    def refused(self, refused: Refused, request: Request | None) -> None:
        """A request the reader refused: its error follows the answers already owed, then the
        connection closes (the stream cannot be trusted past this point)."""
        self.deadline_kind = None
        if request is not None:
            request.content.fail(ConnectionResetError("malformed request"))
            self._dropped = request  # if it waits for its turn, the refusal takes its place
        self._queue.append(refused)
        if not self._busy:
            self._next()

    # ------------------------------------------------------------ answering, in order

    def _next(self) -> None:
        if not self._queue:
            return
        item = self._queue.popleft()
        self._busy = True
        if isinstance(item, Refused):
            self._write_refusal(item)
            return
        # handled after the bytes read in this loop iteration are parsed, as a task would be:
        # requests of many connections then go through the pipeline one after another, which
        # keeps more of the hot path in the CPU's caches than handling each inside its parser
        self._loop.call_soon(self._handle, item)

    def _handle(self, item: Request) -> None:
        if item is self._dropped:  # refused before its turn came: nothing of it goes anywhere
            self._busy = False
            self._next()
            return
        self._serving = item
        self._server.serve(item)

    def respond(self, request: Request, answer: Response | StreamResponse) -> None:
        """The answer to `request` (the oldest one unanswered): written, then the next one. A
        StreamResponse has been written already (the relay ends it before answering)."""
        if isinstance(answer, Response):
            self._write_whole(request, answer)
        self._done(request, answer.keep_alive)

    def _write_whole(self, request: Request, answer: Response) -> None:
        data = h1writer.whole_answer(request, answer, self.keeps_alive(request))
        transport = self.transport
        if isinstance(transport, TlsTransport) and not self.closed:
            transport.write_whole(data)  # nothing to gather with it: sent now
        else:
            self.write(data)

    def _done(self, request: Request, keep_alive: bool) -> None:
        self._busy = False
        self._serving = None
        if self.closed or self.transport is None:
            return
        self._release_reading()
        if not keep_alive or not request.complete or not self.keeps_alive(request):
            self._closing = True
            self.transport.close()
            return
        if self._queue:
            self._next()
        elif self._reader.upgraded:  # an upgrade request answered as a plain one: read on
            had_tail = bool(self._reader.tail)
            self._reader.resume_after_upgrade()
            if not had_tail and not self._reader.in_head:
                self._set_deadline("idle", self._limits.keepalive_timeout)
        elif self._reader.in_head:
            self._set_deadline("head", self._limits.header_timeout)
        else:
            self._set_deadline("idle", self._limits.keepalive_timeout)

    def _write_refusal(self, refused: Refused) -> None:
        peer = self.transport.get_extra_info("peername") if self.transport else None
        request_id = self._limits.refused(refused, peer)
        self.write(h1writer.closing_error(refused.status, refused.code, request_id))
        self._busy = False
        if self.transport is not None:
            self.transport.close()

    # ------------------------------------------------------------ handing the connection over

    def hijack(self, peer: asyncio.Transport) -> None:
        """From now on the client's bytes go to `peer` (those already received after the
        upgrade request first), its closing closes `peer`, and a client that reads slowly
        pauses reading from `peer`."""
        self.deadline_kind = None
        self._tunnel_peer = peer
        tail = self._reader.take_tail()
        if tail:
            peer.write(tail)
        if self.closed:
            peer.close()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.abort()

    def is_idle(self) -> bool:
        return not self._busy and not self._queue and not self._reader.in_head

    def close_when_answered(self) -> None:
        """No more requests: close now if idle, else after the answer in progress."""
        self._closing = True
        if self.is_idle():
            self.close()
