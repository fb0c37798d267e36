"""A real HTTP/2 origin server on loopback for the upstream HTTP/2 tests, on the `h2` library:
in clear (h2c) or over TLS with the ALPN protocols it is given, in a loop thread of its own. It
records what a test asserts on: connections, the most streams open at once on one, the requests
(method, path, fields), the streams the gateway reset, the bytes of the endless answer sent.

Paths: `/slow?ms=N` answers after N ms; `/big` is an endless body sent as the flow-control
window allows, `/bytes?n=N` the same for N bytes; `/echo` answers with what it received (JSON) and a trailer; `/health` answers
`health_status`; `/drop` closes the connection without an answer; `/goaway` is answered, then
the connection goes away with a GOAWAY; anything else is 200 "ok". With `refuse`, every
stream is reset with REFUSED_STREAM instead."""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
import urllib.parse
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings


class _Conn(asyncio.Protocol):
    def __init__(self, origin: H2Origin) -> None:
        self.origin = origin
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        )
        self.transport: asyncio.Transport | None = None
        self.bodies: dict[int, bytearray] = {}
        self.heads: dict[int, dict[str, str]] = {}
        self.open: set[int] = set()
        self.big: set[int] = set()
        self.left: dict[int, int] = {}  # bytes still to send of a `/bytes` answer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.origin.connections += 1
        self.origin.live.add(self)
        self.h2.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: self.origin.max_streams
            },
        )
        self.h2.initiate_connection()
        self.flush()

    def flush(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(self.h2.data_to_send())

    def data_received(self, data: bytes) -> None:
        for ev in self.h2.receive_data(data):
            if isinstance(ev, h2.events.RequestReceived):
                head = dict(ev.headers)  # type: ignore[arg-type]
                self.heads[ev.stream_id] = head
                self.bodies[ev.stream_id] = bytearray()
                self.open.add(ev.stream_id)
                self.origin.peak_streams = max(self.origin.peak_streams, len(self.open))
                self.origin.requests.append((head[":method"], head[":path"], head))
                if head[":path"] == "/drop":
                    assert self.transport is not None
                    self.transport.close()
                    return
            elif isinstance(ev, h2.events.DataReceived):
                self.bodies[ev.stream_id] += ev.data
                self.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                self.answer(ev.stream_id)
            elif isinstance(ev, h2.events.StreamReset):
                self.origin.resets.append(ev.stream_id)
                self.open.discard(ev.stream_id)
                self.big.discard(ev.stream_id)
            elif isinstance(ev, h2.events.WindowUpdated):
                for sid in list(self.big):
                    self.pump(sid)
        self.flush()

    def answer(self, sid: int) -> None:
        path, _, query = self.heads[sid][":path"].partition("?")
        if self.origin.refuse:  # refused unprocessed: safe to send again elsewhere
            self.open.discard(sid)
            self.h2.reset_stream(sid, h2.errors.ErrorCodes.REFUSED_STREAM)
        elif path == "/slow":
            ms = int(urllib.parse.parse_qs(query).get("ms", ["100"])[0])
            asyncio.get_running_loop().call_later(ms / 1000, self.reply, sid, 200, b"slow")
        elif path in ("/big", "/bytes"):  # endless, or `n` bytes
            fields = [(":status", "200"), ("content-type", "text/plain")]
            if path == "/bytes":
                self.left[sid] = int(urllib.parse.parse_qs(query)["n"][0])
                fields.append(("content-length", str(self.left[sid])))
            self.h2.send_headers(sid, fields)
            self.big.add(sid)
            self.pump(sid)
        elif path == "/echo":
            head = {k: v for k, v in self.heads[sid].items()}
            doc = {"head": head, "body": self.bodies[sid].decode("utf-8", "replace")}
            self.reply(sid, 200, json.dumps(doc).encode(), trailers=[("x-origin", "done")])
        elif path == "/goaway":  # answered, then the connection goes away gracefully
            self.reply(sid, 200, b"last")
            self.h2.close_connection(last_stream_id=sid)
            self.flush()
            assert self.transport is not None
            self.transport.close()
        elif path == "/health":
            self.reply(sid, self.origin.health_status, b"")
        else:
            self.reply(sid, 200, b"ok")

    def pump(self, sid: int) -> None:
        """The endless (or `n`-byte) answer: as much as the windows allow."""
        try:
            while (room := min(self.h2.local_flow_control_window(sid), 16384)) > 0:
                left = self.left.get(sid)
                if left is not None:
                    room = min(room, left)
                    self.left[sid] = left = left - room
                self.h2.send_data(sid, b"x" * room, end_stream=left == 0)
                self.origin.big_sent += room
                if left == 0:
                    self.big.discard(sid)
                    self.open.discard(sid)
                    break
        except Exception:
            self.big.discard(sid)
        self.flush()

    def reply(
        self, sid: int, status: int, body: bytes, trailers: list[tuple[str, str]] | None = None
    ) -> None:
        if sid not in self.open:
            return
        self.open.discard(sid)
        try:
            fields = [(":status", str(status)), ("content-length", str(len(body)))]
            self.h2.send_headers(sid, fields, end_stream=not body and not trailers)
            if body:
                self.h2.send_data(sid, body, end_stream=not trailers)
            if trailers:
                self.h2.send_headers(sid, trailers, end_stream=True)
        except Exception:
            return  # reset meanwhile
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.origin.live.discard(self)
        self.open.clear()
        self.big.clear()


class H2Origin:
    """See the module's text."""

    def __init__(
        self,
        max_streams: int = 100,
        tls: ssl.SSLContext | None = None,
        alpn: Any = ("h2",),
        refuse: bool = False,
    ) -> None:
        self.max_streams = max_streams
        self.refuse = refuse
        self.tls = tls
        if tls is not None:
            tls.set_alpn_protocols(list(alpn))
        self.connections = 0
        self.peak_streams = 0
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.resets: list[int] = []
        self.big_sent = 0
        self.health_status = 200
        self.live: set[_Conn] = set()
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            self._loop.create_server(lambda: _Conn(self), "127.0.0.1", 0, ssl=self.tls)
        )
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()
        self._loop.run_until_complete(server.wait_closed())
        self._loop.close()

    def __enter__(self) -> H2Origin:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._shutdown)
        self._thread.join(10)

    def _shutdown(self) -> None:
        """Close every connection, then stop once their closing has run (no socket left)."""
        for conn in list(self.live):
            if conn.transport is not None:
                conn.transport.abort()
        self._loop.call_soon(self._loop.stop)
