"""The demo's gRPC echo upstream: HTTP/2 in clear (h2c), on the `h2` library. Every call (any
method, unary or streaming) gets each of its messages back as it arrives, so a bidirectional
stream is answered message by message; the client identity the gateway forwarded comes back
in the answer's metadata (`x-client-identity`), and the call ends with `grpc-status: 0` in
trailers. A request that is not gRPC gets a Trailers-Only UNIMPLEMENTED (12).

A demo tool, not part of the request path: it lets `grpcio` clients try the gateway with the
dev certificates (`make demo`)."""

from __future__ import annotations

import asyncio

import h2.config
import h2.connection
import h2.events
import h2.exceptions

PREFIX = 5  # a gRPC message: compressed flag (1 byte), length (4 bytes, big-endian), message


def messages(buffer: bytearray) -> list[bytes]:
    """The whole length-prefixed messages at the front of `buffer`, taken out of it (flag and
    length included, so they go back as they came)."""
    out = []
    while len(buffer) >= PREFIX:
        size = PREFIX + int.from_bytes(buffer[1:PREFIX], "big")
        if len(buffer) < size:
            break
        out.append(bytes(buffer[:size]))
        del buffer[:size]
    return out


class _EchoConnection(asyncio.Protocol):
    def __init__(self) -> None:
        self._h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        )
        self._transport: asyncio.Transport | None = None
        self._pending: dict[int, bytearray] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._h2.initiate_connection()
        self._flush()

    def _flush(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(self._h2.data_to_send())

    def data_received(self, data: bytes) -> None:
        try:
            events = self._h2.receive_data(data)
        except h2.exceptions.ProtocolError:
            self._flush()
            if self._transport is not None:
                self._transport.close()
            return
        for ev in events:
            if isinstance(ev, h2.events.RequestReceived):
                self._call(ev.stream_id, dict(ev.headers))  # type: ignore[arg-type]
            elif isinstance(ev, h2.events.DataReceived):
                self._h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                buffer = self._pending.get(ev.stream_id)
                if buffer is not None:
                    buffer += ev.data
                    for message in messages(buffer):
                        self._h2.send_data(ev.stream_id, message)
            elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id in self._pending:
                del self._pending[ev.stream_id]
                self._h2.send_headers(ev.stream_id, [("grpc-status", "0")], end_stream=True)
            elif isinstance(ev, h2.events.StreamReset):
                self._pending.pop(ev.stream_id, None)
        self._flush()

    def _call(self, stream_id: int, head: dict[str, str]) -> None:
        if not head.get("content-type", "").startswith("application/grpc"):
            self._h2.send_headers(
                stream_id,
                [(":status", "200"), ("content-type", "application/grpc"),
                 ("grpc-status", "12"), ("grpc-message", "the gRPC echo speaks only gRPC")],
                end_stream=True,
            )  # fmt: skip
            return
        self._pending[stream_id] = bytearray()
        identity = head.get("x-forwarded-client-cert") or head.get("client-cert") or "none"
        self._h2.send_headers(
            stream_id,
            [(":status", "200"), ("content-type", "application/grpc"),
             ("x-client-identity", identity)],
        )  # fmt: skip


async def start_grpc_echo(host: str, port: int) -> asyncio.Server:
    """Serve the gRPC echo on host:port (h2c) until the server is closed."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(_EchoConnection, host, port)
