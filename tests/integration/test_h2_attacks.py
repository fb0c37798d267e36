"""HTTP/2's own attacks against the real `mtls-gateway run`: each ends the attacker's
connection with the GOAWAY (or stream reset) that names it, is counted under its limit in
`limits_hit_total`, and leaves another client's service as it was while it runs."""

from __future__ import annotations

import socket
import ssl
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import hpack
import pytest
import yaml
from hyperframe.frame import ContinuationFrame, HeadersFrame, PingFrame, SettingsFrame

from tests.h2client import H2Client
from tests.harness import EchoServer, GatewayProcess, sample, scrape, write_config

LIMITS = {
    "max_concurrent_streams": 20,
    "max_stream_resets": 50,
    "max_control_frames": 100,
    "stall_timeout": "1s",
}
ENHANCE_YOUR_CALM = 11
PROTOCOL_ERROR = 1


class Attacker:
    """A raw HTTP/2 connection: h2 for the handshake and well-formed frames, hyperframe for the
    rest; it records how the gateway ended it."""

    def __init__(self, port: int, pki: Path, initial_window: int | None = None) -> None:
        ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
        ctx.load_cert_chain(pki / "client.pem", pki / "client.key")
        ctx.set_alpn_protocols(["h2"])
        self.sock = ctx.wrap_socket(
            socket.create_connection(("127.0.0.1", port), timeout=5), server_hostname="localhost"
        )
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()
        if initial_window is not None:  # the window every stream starts with, announced
            self.conn.update_settings(
                {h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: initial_window}
            )
        self.sock.sendall(self.conn.data_to_send())
        self.goaway: int | None = None
        self.resets: list[int] = []

    def send_raw(self, data: bytes) -> bool:
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            return False

    def flush(self) -> bool:
        return self.send_raw(self.conn.data_to_send())

    def drain(self, seconds: float) -> None:
        """Read what the gateway sends for `seconds`, or until it closes the connection."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and self.goaway is None:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except (TimeoutError, ssl.SSLWantReadError):
                continue
            except OSError:
                return
            if not data:
                return
            try:
                events = self.conn.receive_data(data)
            except h2.exceptions.ProtocolError:
                return
            for ev in events:
                if isinstance(ev, h2.events.ConnectionTerminated):
                    self.goaway = int(ev.error_code or 0)
                elif isinstance(ev, h2.events.StreamReset):
                    self.resets.append(int(ev.error_code or 0))

    def close(self) -> None:
        self.sock.close()


def _request_frame(path: str) -> list[tuple[str, str]]:
    return [(":method", "GET"), (":scheme", "https"), (":authority", "localhost"), (":path", path)]


def rapid_reset(a: Attacker) -> None:
    for i in range(400):
        sid = 1 + 2 * i
        a.conn.send_headers(sid, _request_frame("/slow?seconds=5"), end_stream=True)
        a.conn.reset_stream(sid)
        if not a.flush():
            return


def continuation_flood(a: Attacker) -> None:
    block = hpack.Encoder().encode(_request_frame("/"))
    a.send_raw(HeadersFrame(1, block[:4]).serialize())  # no END_HEADERS: the head goes on
    for _ in range(1000):
        if not a.send_raw(ContinuationFrame(1, b"\x00" * 1024).serialize()):
            return


def hpack_bomb(a: Attacker) -> None:
    big = ("x-bomb", "a" * 4000)  # into the dynamic table once, then named by index
    block = hpack.Encoder().encode([*_request_frame("/"), *([big] * 2000)])
    frame = HeadersFrame(1, block)
    frame.flags.add("END_HEADERS")
    frame.flags.add("END_STREAM")
    a.send_raw(frame.serialize())


def settings_flood(a: Attacker) -> None:
    for _ in range(2000):
        if not a.send_raw(SettingsFrame(0).serialize()):
            return


def ping_flood(a: Attacker) -> None:
    for i in range(2000):
        if not a.send_raw(PingFrame(0, i.to_bytes(8, "big")).serialize()):
            return


def too_many_streams(a: Attacker) -> None:
    for i in range(60):
        sid = 1 + 2 * i
        a.conn.send_headers(sid, _request_frame("/slow?seconds=5"), end_stream=True)
    a.flush()


ATTACKS: dict[str, tuple[Callable[[Attacker], None], str, int | None]] = {
    "rapid reset": (rapid_reset, "h2_resets", ENHANCE_YOUR_CALM),
    "CONTINUATION flood": (continuation_flood, "h2_continuation", PROTOCOL_ERROR),
    "HPACK bomb": (hpack_bomb, "h2_header_list", ENHANCE_YOUR_CALM),
    "SETTINGS flood": (settings_flood, "h2_control", ENHANCE_YOUR_CALM),
    "PING flood": (ping_flood, "h2_control", ENHANCE_YOUR_CALM),
    "too many streams": (too_many_streams, "h2_streams", PROTOCOL_ERROR),
}


def _h2_config(tmp_path: Path, pki: Path, echo_port: int) -> tuple[Path, int, int]:
    path, port, admin = write_config(tmp_path, pki, echo_port)
    cfg = yaml.safe_load(path.read_text())
    cfg["listeners"][0]["http2"] = True
    cfg["listeners"][0]["limits"] = LIMITS
    path.write_text(yaml.safe_dump(cfg))
    return path, port, admin


def _served_meanwhile(port: int, pki: Path, stop: threading.Event) -> list[float]:
    """Another client's request times (seconds) while the attack runs."""
    times: list[float] = []
    with H2Client(port, pki) as client:
        while not stop.is_set() and len(times) < 200:
            started = time.monotonic()
            ans = client.get("/meanwhile")
            assert ans.status == 200, ans
            times.append(time.monotonic() - started)
    return times


def _p99(times: list[float]) -> float:
    return statistics.quantiles(times, n=100)[98] if len(times) > 1 else times[0]


@pytest.mark.process
@pytest.mark.parametrize("name", list(ATTACKS))
def test_an_attack_ends_its_connection_and_spares_other_clients(
    name: str, tmp_path: Path, pki: Path
) -> None:
    attack, limit, code = ATTACKS[name]
    with EchoServer() as echo:
        path, port, admin = _h2_config(tmp_path, pki, echo.port)
        with GatewayProcess(path, admin):
            stop = threading.Event()
            times: list[float] = []
            legit = threading.Thread(
                target=lambda: times.extend(_served_meanwhile(port, pki, stop))
            )
            legit.start()
            time.sleep(0.2)
            attacker = Attacker(port, pki)
            try:
                attack(attacker)
                attacker.drain(5)
            finally:
                attacker.close()
                stop.set()
                legit.join(30)
            assert attacker.goaway == code, (name, attacker.goaway, attacker.resets)
            hits = sample(
                scrape(admin), "mtls_gateway_limits_hit_total", listener="public", limit=limit
            )
            assert hits >= 1, (name, limit)
            assert len(times) >= 5
            print(
                f"\n{name}: GOAWAY {attacker.goaway}; another client p99 {_p99(times) * 1000:.1f} ms over {len(times)} requests"
            )
            assert _p99(times) < 0.25, (name, sorted(times)[-5:])


@pytest.mark.process
def test_a_client_that_keeps_its_window_shut_loses_the_stalled_streams(
    tmp_path: Path, pki: Path
) -> None:
    """Zero-window stall: a client announces a window of 0 and asks for big answers; after
    stall_timeout each stream is reset (CANCEL), its upstream exchange ends, memory stays put."""
    with EchoServer() as echo:
        path, port, admin = _h2_config(tmp_path, pki, echo.port)
        with GatewayProcess(path, admin) as gw:
            before = gw.peak_rss_kib()
            attacker = Attacker(port, pki, initial_window=0)
            for i in range(10):
                sid = 1 + 2 * i
                attacker.conn.send_headers(sid, _request_frame("/bytes/50000000"), end_stream=True)
            attacker.flush()
            attacker.drain(4)
            assert attacker.resets.count(8) == 10, attacker.resets  # CANCEL, each stream
            hits = sample(
                scrape(admin), "mtls_gateway_limits_hit_total", listener="public", limit="h2_stall"
            )
            assert hits == 10
            with H2Client(port, pki) as other:
                assert other.get("/meanwhile").status == 200
            grown = (gw.peak_rss_kib() - before) / 1024
            attacker.close()
            assert grown < 30, f"peak RSS grew {grown:.0f} MiB for 10 stalled 50 MB answers"
