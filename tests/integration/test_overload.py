"""Overload against the real process: hundreds of slow and idle connections do not starve a
normal client, a full listener holds new connections in the backlog, and running out of file
descriptors (EMFILE) is survived."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness import (
    EchoServer,
    GatewayProcess,
    client_context,
    request,
    sample,
    scrape,
    write_config,
)

pytestmark = pytest.mark.process

IDLE_TCP = 200  # connected, never say a word (not even a ClientHello)
SLOW_TLS = 100  # TLS done, request head trickling in
NORMAL_REQUESTS = 60


def _config(tmp_path: Path, pki: Path, echo: int, **limits: Any) -> tuple[Path, int, int]:
    path, port, admin = write_config(
        tmp_path, pki, echo, logging={"level": "warning", "access_log": False}
    )
    doc = yaml.safe_load(path.read_text())
    doc["listeners"][0]["tls"]["handshake_timeout"] = "30s"
    doc["listeners"][0]["limits"] = {"header_timeout": "30s", **limits}
    path.write_text(yaml.safe_dump(doc))
    return path, port, admin


def _tls(port: int, pki: Path) -> ssl.SSLSocket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    return client_context(pki).wrap_socket(sock, server_hostname="localhost")


def test_slow_and_idle_crowd_does_not_starve_a_normal_client(tmp_path: Path, pki: Path) -> None:
    with EchoServer() as echo:
        path, port, admin = _config(tmp_path, pki, echo.port)
        with GatewayProcess(path, admin):
            crowd: list[socket.socket] = []
            try:
                crowd += [socket.create_connection(("127.0.0.1", port)) for _ in range(IDLE_TCP)]
                for _ in range(SLOW_TLS):
                    tls = _tls(port, pki)
                    tls.sendall(b"GET /slow HTTP/1.1\r\nHo")
                    crowd.append(tls)
                latencies = []
                for i in range(NORMAL_REQUESTS):
                    started = time.perf_counter()
                    assert request(port, f"/normal/{i}", pki).status == 200
                    latencies.append(time.perf_counter() - started)
                    for slow in crowd[IDLE_TCP : IDLE_TCP + 10]:
                        slow.send(b"s")  # keep trickling
                latencies.sort()
                p99 = latencies[int(len(latencies) * 0.99) - 1]
                print(f"\n{IDLE_TCP} idle + {SLOW_TLS} slow connections: normal client "
                      f"p50 {latencies[len(latencies) // 2] * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms")  # fmt: skip
                assert p99 < 0.100
                metrics = scrape(admin)
                active = sample(
                    metrics,
                    "mtls_gateway_connections_active",
                    listener="public",
                    protocol="HTTP/1.1",
                )
                assert active >= SLOW_TLS
            finally:
                for s in crowd:
                    s.close()


def _served_once_a_slot_frees(
    port: int, admin: int, pki: Path, holders: list[socket.socket], limit: str
) -> None:
    """With the listener full (`holders` take every slot of `limit`), a new client waits in the
    backlog, unserved, and is served as soon as one holder closes; the limit is counted."""
    done = threading.Event()
    result: list[int] = []

    def newcomer() -> None:
        result.append(request(port, "/newcomer", pki).status)
        done.set()

    thread = threading.Thread(target=newcomer)
    thread.start()
    try:
        assert not done.wait(1.5), f"a connection was served beyond the {limit} limit"
        holders.pop().close()
        assert done.wait(5), "the waiting connection was not served once a slot freed"
        assert result == [200]
        hits = sample(
            scrape(admin), "mtls_gateway_limits_hit_total", listener="public", limit=limit
        )
        assert hits >= 1
    finally:
        thread.join(10)
        for s in holders:
            s.close()


def test_full_listener_holds_new_connections_in_the_backlog(tmp_path: Path, pki: Path) -> None:
    with EchoServer() as echo:
        path, port, admin = _config(tmp_path, pki, echo.port, max_connections=10)
        with GatewayProcess(path, admin):
            held: list[socket.socket] = [_tls(port, pki) for _ in range(10)]
            _served_once_a_slot_frees(port, admin, pki, held, "connections")


def test_handshake_limit_holds_new_connections_until_one_finishes(
    tmp_path: Path, pki: Path
) -> None:
    """Clients stalled in the handshake take the max_handshakes slots; the next connection waits
    in the backlog and is served when a slot frees, not refused."""
    with EchoServer() as echo:
        path, port, admin = _config(tmp_path, pki, echo.port, max_handshakes=2)
        with GatewayProcess(path, admin):
            stalled = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
            _served_once_a_slot_frees(port, admin, pki, stalled, "handshakes")


def test_running_out_of_file_descriptors_is_survived(tmp_path: Path, pki: Path) -> None:
    with EchoServer() as echo:
        path, port, admin = _config(tmp_path, pki, echo.port)
        with GatewayProcess(path, admin, nofile=64) as gw:
            flood = []
            try:
                for _ in range(120):
                    try:
                        flood.append(socket.create_connection(("127.0.0.1", port), timeout=2))
                    except OSError:
                        break
                deadline = time.monotonic() + 5
                while "out of resources" not in gw.logs() and time.monotonic() < deadline:
                    time.sleep(0.1)
                assert "accept failed: out of resources" in gw.logs()
            finally:
                for s in flood:
                    s.close()
            deadline = time.monotonic() + 10
            while True:  # the accept loop is alive and serves again
                try:
                    assert request(port, "/after", pki).status == 200
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            assert gw.proc is not None and gw.proc.poll() is None


def _raise_fd_limit(want: int) -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))


def test_one_address_cannot_hold_every_handshake_slot(tmp_path: Path, pki: Path) -> None:
    """2,000 connections from 127.0.0.2 that never say hello, against 512 handshake slots: a
    client from 127.0.0.3 is still served at once, as the crowded address gives its oldest
    silent slots back."""
    import http.client

    _raise_fd_limit(4096)
    with EchoServer() as echo:
        path, port, admin = _config(tmp_path, pki, echo.port)
        doc = yaml.safe_load(path.read_text())
        doc["listeners"][0]["tls"]["client_hello_timeout"] = "30s"  # eviction alone, here
        path.write_text(yaml.safe_dump(doc))
        with GatewayProcess(path, admin):
            crowd: list[socket.socket] = []
            try:
                for _ in range(2000):
                    s = socket.socket()
                    s.bind(("127.0.0.2", 0))
                    s.setblocking(False)
                    with contextlib.suppress(BlockingIOError):
                        s.connect(("127.0.0.1", port))
                    crowd.append(s)
                time.sleep(1.0)  # the listener fills up and starts giving slots back
                ctx = client_context(pki)
                latencies = []
                for i in range(40):
                    conn = http.client.HTTPSConnection(
                        "localhost", port, context=ctx, timeout=10,
                        source_address=("127.0.0.3", 0),
                    )  # fmt: skip
                    started = time.perf_counter()
                    conn.request("GET", f"/fair/{i}")
                    assert conn.getresponse().status == 200
                    latencies.append(time.perf_counter() - started)
                    conn.close()
                latencies.sort()
                p99 = latencies[int(len(latencies) * 0.99) - 1]
                print(f"\n2000 silent connections from 127.0.0.2: a client from 127.0.0.3 "
                      f"p50 {latencies[len(latencies) // 2] * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms")  # fmt: skip
                assert p99 < 0.100
                hits = sample(
                    scrape(admin), "mtls_gateway_limits_hit_total", listener="public",
                    limit="handshakes_per_address",
                )  # fmt: skip
                assert hits > 0
            finally:
                for s in crowd:
                    s.close()


def test_a_connection_that_never_says_hello_is_dropped_early(tmp_path: Path, pki: Path) -> None:
    """client_hello_timeout frees a silent connection's slot long before handshake_timeout; a
    client that started its handshake keeps the whole handshake_timeout."""
    with EchoServer() as echo:
        path, port, admin = _config(tmp_path, pki, echo.port)
        doc = yaml.safe_load(path.read_text())
        doc["listeners"][0]["tls"]["client_hello_timeout"] = "500ms"
        path.write_text(yaml.safe_dump(doc))
        with GatewayProcess(path, admin):
            silent = socket.create_connection(("127.0.0.1", port))
            started = socket.create_connection(("127.0.0.1", port))
            started.sendall(b"\x16\x03\x01")  # the first bytes of a ClientHello
            try:
                silent.settimeout(5)
                t0 = time.monotonic()
                assert silent.recv(1) == b""  # closed by the gateway
                assert 0.3 < time.monotonic() - t0 < 2.5
                started.settimeout(1.5)
                with pytest.raises(TimeoutError):
                    started.recv(1)  # still waited for (handshake_timeout is 30s here)
            finally:
                silent.close()
                started.close()


def test_pipelining_is_bounded_by_answers_not_by_memory(tmp_path: Path, pki: Path) -> None:
    """8 MB of pipelined requests whose answers are never read: the gateway stops reading the
    connection once answers pile up, so its memory stays put (it grew by 174 MiB), and another
    client is served meanwhile."""
    head = b"GET /pipelined HTTP/1.1\r\nHost: localhost\r\n\r\n"
    with EchoServer() as echo:
        path, port, admin = _config(tmp_path, pki, echo.port)
        with GatewayProcess(path, admin) as gw:
            assert request(port, "/warm", pki).status == 200
            before = gw.peak_rss_kib()
            tls = _tls(port, pki)
            try:
                tls.setblocking(False)
                burst = head * 4096  # 180 KiB a send
                sent, deadline = 0, time.monotonic() + 5
                while sent < 8 * 1024 * 1024 and time.monotonic() < deadline:
                    try:
                        sent += tls.send(burst)
                    except (ssl.SSLWantWriteError, BlockingIOError):
                        time.sleep(0.05)  # the gateway stopped reading: as it should
                time.sleep(1.0)
                assert request(port, "/meanwhile", pki).status == 200
                grown = (gw.peak_rss_kib() - before) / 1024
                print(f"\npipelined {sent / 2**20:.1f} MiB unread: peak RSS grew {grown:.1f} MiB")
                assert grown < 40, f"peak RSS grew {grown:.0f} MiB"
                assert sent < 8 * 1024 * 1024, "the gateway read everything it was sent"
            finally:
                tls.close()


def test_heads_that_never_end_cost_no_memory_and_no_one_else(tmp_path: Path, pki: Path) -> None:
    """40 clients each send a header value without end (up to 2 MiB each): every one is
    refused within max_header_size, the gateway's peak memory barely moves (such clients used
    to grow it by 67 to 238 MiB, never returned), and another client is served meanwhile."""
    with EchoServer() as echo:
        path, port, admin = _config(tmp_path, pki, echo.port)
        with GatewayProcess(path, admin) as gw:
            assert request(port, "/warm", pki).status == 200
            before = gw.peak_rss_kib()
            refused = 0

            def endless() -> None:
                nonlocal refused
                with contextlib.closing(_tls(port, pki)) as tls:
                    tls.sendall(b"GET /endless HTTP/1.1\r\nHost: localhost\r\nX-Endless: ")
                    try:
                        for _ in range(128):
                            tls.sendall(b"a" * 16384)
                    except OSError:
                        pass  # refused and closed: as it should
                    with contextlib.suppress(OSError):
                        if tls.recv(65536).startswith(b"HTTP/1.1 431"):
                            refused += 1

            threads = [threading.Thread(target=endless) for _ in range(40)]
            for t in threads:
                t.start()
            assert request(port, "/meanwhile", pki).status == 200
            for t in threads:
                t.join(30)
            grown = (gw.peak_rss_kib() - before) / 1024
            print(f"\n40 endless heads: {refused} refused with 431, peak RSS grew {grown:.1f} MiB")
            assert refused >= 30  # (a few may see the reset before the answer)
            assert grown < 20, f"peak RSS grew {grown:.0f} MiB"
