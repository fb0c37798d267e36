"""A small HTTP/2 client for the tests, on the `h2` library over a real TLS socket (ALPN h2):
whole exchanges, and the frames a hostile client sends (resets, floods) where curl cannot."""

from __future__ import annotations

import socket
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import h2.exceptions


@dataclass
class Answer:
    status: int = 0
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    trailers: list[tuple[str, str]] = field(default_factory=list)
    reset: int | None = None  # the error code of a RST_STREAM the server sent
    ended: bool = False

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name), None)


class H2Client:
    """One HTTP/2 connection with a client certificate."""

    def __init__(self, port: int, pki: Path, cert: str = "client", host: str = "localhost"):
        ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
        ctx.load_cert_chain(pki / f"{cert}.pem", pki / f"{cert}.key")
        ctx.set_alpn_protocols(["h2"])
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock = ctx.wrap_socket(raw, server_hostname=host)
        assert self.sock.selected_alpn_protocol() == "h2", self.sock.selected_alpn_protocol()
        self.host = host
        # no checks of what it sends: the tests send malformed heads on purpose
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(
                client_side=True, validate_outbound_headers=False, normalize_outbound_headers=False
            )
        )
        self.conn.initiate_connection()
        self.answers: dict[int, Answer] = {}
        self.terminated: h2.events.ConnectionTerminated | None = None
        self.send()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> H2Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def headers(
        self,
        path: str,
        method: str = "GET",
        extra: list[tuple[str, str]] | None = None,
        end: bool = True,
        authority: str | None = None,
        scheme: str = "https",
    ) -> int:
        sid = self.conn.get_next_available_stream_id()
        fields = [
            (":method", method),
            (":scheme", scheme),
            (":authority", authority or self.host),
            (":path", path),
            *(extra or []),
        ]
        self.conn.send_headers(sid, fields, end_stream=end)
        self.answers[sid] = Answer()
        self.send()
        return sid

    def data(self, sid: int, data: bytes, end: bool = False) -> None:
        """Body bytes, as the windows allow (reading the server's frames while they are shut)."""
        view = memoryview(data)
        while view:
            room = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if room <= 0:
                self.read(0.5)
                continue
            self.conn.send_data(sid, bytes(view[:room]))
            view = view[room:]
            self.send()
        if end:
            self.conn.end_stream(sid)
            self.send()

    def read(self, seconds: float) -> None:
        """Take the server's frames for up to `seconds` (less once the socket is quiet)."""
        self.sock.settimeout(seconds)
        try:
            chunk = self.sock.recv(65536)
        except (TimeoutError, ssl.SSLWantReadError):
            return
        if not chunk:
            raise ConnectionError("the server closed the connection")
        for ev in self.conn.receive_data(chunk):
            self._event(ev)
        self.send()

    def _event(self, ev: h2.events.Event) -> None:
        if isinstance(ev, h2.events.ResponseReceived):
            ans = self.answers[ev.stream_id]
            ans.headers = [(k.decode(), v.decode()) for k, v in ev.headers]
            ans.status = int(ans.header(":status") or 0)
        elif isinstance(ev, h2.events.DataReceived):
            self.answers[ev.stream_id].body += ev.data
            self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        elif isinstance(ev, h2.events.TrailersReceived):
            self.answers[ev.stream_id].trailers = [(k.decode(), v.decode()) for k, v in ev.headers]
        elif isinstance(ev, h2.events.StreamEnded):
            self.answers[ev.stream_id].ended = True
        elif isinstance(ev, h2.events.StreamReset):
            self.answers[ev.stream_id].reset = ev.error_code
        elif isinstance(ev, h2.events.ConnectionTerminated):
            self.terminated = ev

    def wait(self, sid: int, timeout: float = 10) -> Answer:
        deadline = time.monotonic() + timeout
        ans = self.answers[sid]
        while not (ans.ended or ans.reset is not None) and time.monotonic() < deadline:
            if self.terminated is not None:
                break
            try:
                self.read(max(0.01, deadline - time.monotonic()))
            except ConnectionError:
                break
        return ans

    def get(self, path: str, **kw: object) -> Answer:
        return self.wait(self.headers(path, **kw))  # type: ignore[arg-type]
