"""The gateway's HTTP/1.1 client against an upstream that answers with exact bytes: HEAD, interim
1xx answers, bodies ended by the connection's close, broken responses, keep-alive reuse, the
pool limit, and idle connections the upstream closes."""

from __future__ import annotations

import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness import GatewayProcess, request, sample, scrape, write_config

UP = "mtls_gateway_upstream_requests_total"
Answer = Callable[[str, str], tuple[bytes, bool]]  # (method, path) -> (bytes, close after)


class ScriptedUpstream:
    """A real TCP server on loopback that reads each request head and writes scripted bytes."""

    def __init__(self, answer: Answer) -> None:
        self.connections = 0
        self.open = 0
        self.most_open = 0
        self.requests: list[str] = []
        self.bodies: list[bytes] = []
        self.trailers: list[list[str]] = []
        lock = threading.Lock()
        owner = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                with lock:
                    owner.connections += 1
                    owner.open += 1
                    owner.most_open = max(owner.most_open, owner.open)
                try:
                    while self._one():
                        pass
                finally:
                    with lock:
                        owner.open -= 1

            def _chunks(self) -> bytes:
                body = b""
                while size := int(self.rfile.readline(65536).split(b";")[0], 16):
                    body += self.rfile.read(size)
                    self.rfile.readline(65536)
                trailers = []
                while (line := self.rfile.readline(65536)) not in (b"\r\n", b""):
                    trailers.append(line.decode("latin-1").strip())
                with lock:
                    owner.trailers.append(trailers)
                return body

            def _one(self) -> bool:
                line = self.rfile.readline(65536)
                if not line:
                    return False
                method, target, _ = line.decode("latin-1").split(" ", 2)
                length = 0
                chunked = False
                while (header := self.rfile.readline(65536)) not in (b"\r\n", b""):
                    name, _, value = header.decode("latin-1").partition(":")
                    if name.lower() == "content-length":
                        length = int(value)
                    if name.lower() == "transfer-encoding" and "chunked" in value.lower():
                        chunked = True
                body = self.rfile.read(length) if not chunked else self._chunks()
                with lock:
                    owner.requests.append(f"{method} {target}")
                    owner.bodies.append(body)
                data, close = answer(method, target)
                now, _, later = data.partition(LATER)
                self.wfile.write(now)
                self.wfile.flush()
                if later:  # bytes the connection carries a moment after the answer
                    time.sleep(0.3)
                    self.wfile.write(later)
                    self.wfile.flush()
                return not close

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> ScriptedUpstream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


LATER = b"\0later\0"  # in an answer: what follows is written 0.3 s after what precedes


def _ok(body: bytes = b"hello", extra: str = "") -> bytes:
    return f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


@contextmanager
def _gateway(tmp_path: Path, pki: Path, answer: Answer, **upstream: Any) -> Iterator[Any]:
    with ScriptedUpstream(answer) as up:
        path, port, admin = write_config(tmp_path, pki, up.port)
        doc = yaml.safe_load(path.read_text())
        doc["upstreams"][0].update(upstream)
        path.write_text(yaml.safe_dump(doc))
        with GatewayProcess(path, admin) as gw:
            gw.port = port
            gw.upstream = up
            yield gw


def test_sequential_requests_reuse_one_upstream_connection(tmp_path: Path, pki: Path) -> None:
    with _gateway(tmp_path, pki, lambda m, p: (_ok(p.encode()), False)) as gw:
        for i in range(20):
            reply = request(gw.port, f"/n/{i}", pki)
            assert reply.status == 200 and reply.body == f"/n/{i}".encode()
        assert gw.upstream.connections == 1
        assert sample(scrape(gw.admin_port), UP, upstream="echo", outcome="ok") == 20


def test_head_answer_with_a_length_but_no_body_does_not_hang(tmp_path: Path, pki: Path) -> None:
    def answer(method: str, path: str) -> tuple[bytes, bool]:
        if method == "HEAD":
            return b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n", False
        return _ok(b"after head"), False

    with _gateway(tmp_path, pki, answer) as gw:
        started = time.perf_counter()
        head = request(gw.port, "/h", pki, method="HEAD")
        assert time.perf_counter() - started < 2
        assert head.status == 200 and head.headers["content-length"] == "1234"
        assert head.body == b""
        after = request(gw.port, "/next", pki)
        assert after.status == 200 and after.body == b"after head"


def test_interim_1xx_answers_are_skipped(tmp_path: Path, pki: Path) -> None:
    early = b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
    with _gateway(tmp_path, pki, lambda m, p: (early + _ok(b"final"), False)) as gw:
        reply = request(gw.port, "/x", pki)
        assert reply.status == 200 and reply.body == b"final"
        assert request(gw.port, "/y", pki).body == b"final"  # the connection stayed in sync


def test_body_ended_by_the_upstream_closing_is_relayed_whole(tmp_path: Path, pki: Path) -> None:
    body = b"x" * 100_000
    raw = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + body
    with _gateway(tmp_path, pki, lambda m, p: (raw, True)) as gw:
        for _ in range(3):
            reply = request(gw.port, "/eof", pki)
            assert reply.status == 200 and reply.body == body
        assert gw.upstream.connections == 3


def test_a_broken_response_is_502_bad_response(tmp_path: Path, pki: Path) -> None:
    with _gateway(tmp_path, pki, lambda m, p: (b"HTTP/1.1 2OO OK\r\n\r\n", True)) as gw:
        reply = request(gw.port, "/bad", pki)
        assert reply.status == 502 and reply.json()["error"] == "upstream_unavailable"
        assert sample(scrape(gw.admin_port), UP, upstream="echo", outcome="bad_response") == 1
        assert "invalid response" in gw.logs()


def test_a_malformed_chunked_answer_in_one_piece_is_502_bad_response(
    tmp_path: Path, pki: Path
) -> None:
    """Head and broken body in one read: nothing has gone to the client yet, so it gets the
    documented 502, not a head followed by a cut connection."""
    raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nZZ\r\n"
    with _gateway(tmp_path, pki, lambda m, p: (raw, True)) as gw:
        reply = request(gw.port, "/chunks", pki)
        assert reply.status == 502 and reply.json()["error"] == "upstream_unavailable"
        assert sample(scrape(gw.admin_port), UP, upstream="echo", outcome="bad_response") == 1


def test_pool_limit_caps_upstream_connections(tmp_path: Path, pki: Path) -> None:
    def answer(method: str, path: str) -> tuple[bytes, bool]:
        time.sleep(0.05)
        return _ok(), False

    with _gateway(tmp_path, pki, answer, max_connections=2) as gw:
        with ThreadPoolExecutor(8) as pool:
            replies = list(pool.map(lambda i: request(gw.port, f"/c/{i}", pki), range(16)))
        assert [r.status for r in replies] == [200] * 16
        assert gw.upstream.most_open <= 2
        assert len(gw.upstream.requests) == 16


def test_an_idle_connection_the_upstream_closed_is_not_reused(tmp_path: Path, pki: Path) -> None:
    # the upstream answers keep-alive, then closes the connection a moment later
    with _gateway(tmp_path, pki, lambda m, p: (_ok(b"once"), True)) as gw:
        for _ in range(5):
            assert request(gw.port, "/again", pki).status == 200
            time.sleep(0.05)
        assert gw.upstream.connections == 5
        assert sample(scrape(gw.admin_port), UP, upstream="echo", outcome="ok") == 5


def _raw_exchange(port: int, pki: Path, head: bytes) -> bytes:
    """One request on a fresh TLS connection; everything the gateway sends until it closes."""
    import socket

    from tests.harness import client_context

    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        client_context(pki).wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(head)
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
    return data


CHUNKED_WITH_TRAILERS = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: Grpc-Status, Server-Timing\r\n\r\n"
    b"5\r\nhello\r\n6\r\n world\r\n0\r\nGrpc-Status: 0\r\nServer-Timing: db;dur=53\r\n\r\n"
)


def test_chunked_answers_keep_their_trailers(tmp_path: Path, pki: Path) -> None:
    with _gateway(tmp_path, pki, lambda m, p: (CHUNKED_WITH_TRAILERS, False)) as gw:
        data = _raw_exchange(
            gw.port,
            pki,
            b"GET /t HTTP/1.1\r\nHost: localhost\r\nTE: trailers\r\nConnection: close\r\n\r\n",
        )
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        assert b"\r\nTransfer-Encoding: chunked" in head
        assert b"\r\nTrailer: Grpc-Status, Server-Timing" in head
        assert (
            body
            == b"5\r\nhello\r\n6\r\n world\r\n0\r\nGrpc-Status: 0\r\nServer-Timing: db;dur=53\r\n\r\n"
        )
        # the same answer to an HTTP/1.0 client: no chunks, so no trailers, body whole
        old = _raw_exchange(gw.port, pki, b"GET /t HTTP/1.0\r\nHost: localhost\r\n\r\n")
        assert old.partition(b"\r\n\r\n")[2] == b"hello world"
        # and through a client that decodes chunks (curl): the body is intact
        assert request(gw.port, "/t", pki).body == b"hello world"


def test_a_clients_trailers_reach_the_upstream(tmp_path: Path, pki: Path) -> None:
    body = b"5\r\nhello\r\n6\r\n world\r\n0\r\n"
    trailers = (
        b"X-Checksum: sha256=abc\r\nX-Forwarded-Client-Cert: Hash=forged\r\n"
        b"X_Forwarded_Client_Cert: Hash=forged\r\nX-SSL-Client-S-DN: CN=admin\r\n"
        b"x-forwarded-user: admin\r\nRemote-User: admin\r\n\r\n"
    )
    head = (
        b"POST /up HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n"
        b"Trailer: X-Checksum\r\nConnection: close\r\n\r\n"
    )
    with _gateway(tmp_path, pki, lambda m, p: (_ok(b"got it"), False)) as gw:
        data = _raw_exchange(gw.port, pki, head + body + trailers)
        assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"got it")
        assert gw.upstream.bodies == [b"hello world"]
        # the checksum arrives after the body; forged identity fields (any family, any
        # spelling) do not: trailers follow the rules of headers
        assert gw.upstream.trailers == [["X-Checksum: sha256=abc"]]


# ---------------------------------------------------------------- on a kept-alive connection
# A request without a body (or with a small one received whole) on a pooled connection is sent
# at once, without a task (proxy.Upstream.send_now); each case below warms the pool first, so the
# request under test takes that path, and checks it ends as the general path would.


def _warm(gw: Any, pki: Path) -> None:
    assert request(gw.port, "/warm", pki).status == 200
    assert gw.upstream.connections == 1


def test_header_timeout_on_a_kept_alive_connection(tmp_path: Path, pki: Path) -> None:
    def answer(method: str, path: str) -> tuple[bytes, bool]:
        if path == "/slow":
            time.sleep(2)
        return _ok(), False

    with _gateway(tmp_path, pki, answer, timeouts={"headers": "300ms"}) as gw:
        _warm(gw, pki)
        started = time.perf_counter()
        reply = request(gw.port, "/slow", pki)
        took = time.perf_counter() - started
        assert reply.status == 504 and reply.json()["error"] == "upstream_timeout"
        assert 0.25 < took < 1.5
        assert "headers timeout" in gw.logs()
        # the late connection is not reused: the next request opens another
        assert request(gw.port, "/after", pki).status == 200
        assert gw.upstream.connections == 2
        assert sample(scrape(gw.admin_port), UP, upstream="echo", outcome="timeout") == 1


def test_a_reset_on_a_kept_alive_connection_is_retried_elsewhere(tmp_path: Path, pki: Path) -> None:
    reset = threading.Event()

    def named(name: bytes) -> Answer:
        def answer(method: str, path: str) -> tuple[bytes, bool]:
            if path == "/reset" and not reset.is_set():
                reset.set()
                return b"", True  # closes without an answer
            return _ok(name), False

        return answer

    with ScriptedUpstream(named(b"a")) as a, ScriptedUpstream(named(b"b")) as b:
        path, port, admin = write_config(tmp_path, pki, a.port)
        doc = yaml.safe_load(path.read_text())
        del doc["upstreams"][0]["url"]
        doc["upstreams"][0]["targets"] = [
            f"http://127.0.0.1:{a.port}",
            f"http://127.0.0.1:{b.port}",
        ]
        path.write_text(yaml.safe_dump(doc))
        with GatewayProcess(path, admin) as gw:
            # round robin: a, b, then a again, on the connection it kept
            assert [request(port, "/warm", pki).body for _ in range(2)] == [b"a", b"b"]
            reply = request(port, "/reset", pki)
            assert reply.status == 200 and reply.body == b"b"
            assert reset.is_set() and a.connections == 1 and b.connections == 1
            metrics = scrape(gw.admin_port)
    assert sample(metrics, UP, upstream="echo", outcome="reset") == 1
    assert sample(metrics, UP, upstream="echo", outcome="retry") == 1


def test_a_non_idempotent_request_reset_on_a_kept_alive_connection_is_502(
    tmp_path: Path, pki: Path
) -> None:
    def answer(method: str, path: str) -> tuple[bytes, bool]:
        return (b"", True) if method == "POST" else (_ok(), False)

    with _gateway(tmp_path, pki, answer) as gw:
        _warm(gw, pki)
        reply = request(gw.port, "/p", pki, method="POST", body=b"once only")
        assert reply.status == 502 and reply.json()["error"] == "upstream_unavailable"
        assert gw.upstream.bodies[-1] == b"once only"
        assert len(gw.upstream.requests) == 2  # not sent again
        assert sample(scrape(gw.admin_port), UP, upstream="echo", outcome="reset") == 1


def test_a_broken_response_on_a_kept_alive_connection_is_502(tmp_path: Path, pki: Path) -> None:
    def answer(method: str, path: str) -> tuple[bytes, bool]:
        return (b"HTTP/1.1 2OO OK\r\n\r\n", True) if path == "/bad" else (_ok(), False)

    with _gateway(tmp_path, pki, answer) as gw:
        _warm(gw, pki)
        reply = request(gw.port, "/bad", pki)
        assert reply.status == 502
        assert sample(scrape(gw.admin_port), UP, upstream="echo", outcome="bad_response") == 1


def test_answers_that_stream_on_a_kept_alive_connection(tmp_path: Path, pki: Path) -> None:
    big = bytes(range(256)) * 12_000  # 3 MB: still arriving when the headers are in

    def answer(method: str, path: str) -> tuple[bytes, bool]:
        if method == "HEAD":
            return b"HTTP/1.1 200 OK\r\nContent-Length: 77\r\n\r\n", False
        return _ok(big if path == "/big" else b"small"), False

    with _gateway(tmp_path, pki, answer) as gw:
        _warm(gw, pki)
        reply = request(gw.port, "/big", pki)
        assert reply.status == 200 and reply.body == big
        posted = request(gw.port, "/post", pki, method="POST", body=b"a small body")
        assert posted.status == 200 and gw.upstream.bodies[-1] == b"a small body"
        assert gw.upstream.connections == 1  # every one on the kept connection
        head = request(gw.port, "/h", pki, method="HEAD")
        assert head.status == 200 and head.headers["content-length"] == "77"
        assert head.body == b""


def test_an_upstream_dying_mid_body_on_a_kept_alive_connection_cuts_the_client(
    tmp_path: Path, pki: Path
) -> None:
    def answer(method: str, path: str) -> tuple[bytes, bool]:
        if path == "/cut":
            return b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10, True
        return _ok(), False

    with _gateway(tmp_path, pki, answer) as gw:
        _warm(gw, pki)
        data = _raw_exchange(gw.port, pki, b"GET /cut HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"\r\n\r\n" + b"x" * 10)
        assert sample(scrape(gw.admin_port), UP, upstream="echo", outcome="reset") == 1


def test_an_answers_hop_by_hop_fields_and_request_id_are_the_gateways(
    tmp_path: Path, pki: Path
) -> None:
    """Fields the upstream's Connection header names, Keep-Alive, and its own X-Request-Id do
    not reach the client; the gateway's X-Request-Id does, once. Twice per Connection value:
    the second answer takes the remembered set of fields to drop."""
    import http.client

    from tests.harness import client_context

    def answer(method: str, path: str) -> tuple[bytes, bool]:
        hop = "X-Hop" if path.startswith("/a") else "X-Other"
        extra = (
            f"Connection: keep-alive, {hop}\r\nX-Hop: 1\r\nX-Other: 2\r\n"
            "Keep-Alive: timeout=5\r\nX-Request-Id: chosen-upstream\r\nX-Kept: yes\r\n"
        )
        return _ok(b"hi", extra), False

    with _gateway(tmp_path, pki, answer) as gw:
        for path, gone, kept in [
            ("/a1", "x-hop", "x-other"),
            ("/a2", "x-hop", "x-other"),
            ("/b1", "x-other", "x-hop"),
            ("/b2", "x-other", "x-hop"),
        ]:
            conn = http.client.HTTPSConnection("localhost", gw.port, context=client_context(pki))
            try:
                conn.request("GET", path)
                resp = conn.getresponse()
                assert resp.status == 200 and resp.read() == b"hi"
                fields = [(k.lower(), v) for k, v in resp.getheaders()]
            finally:
                conn.close()
            names = [k for k, _ in fields]
            assert gone not in names and "keep-alive" not in names, fields
            assert kept in names and ("x-kept", "yes") in fields
            ids = [v for k, v in fields if k == "x-request-id"]
            assert len(ids) == 1 and ids[0] != "chosen-upstream", fields


def test_an_answer_keeps_the_upstreams_date_and_gets_one_when_it_has_none(
    tmp_path: Path, pki: Path
) -> None:
    """RFC 9110 6.6.1: the upstream's Date passes as it is (once, whatever its case); an
    answer without one gets the gateway's."""
    import http.client
    from email.utils import parsedate_to_datetime

    from tests.harness import client_context

    upstream_date = "Sun, 06 Nov 1994 08:49:37 GMT"

    def answer(method: str, path: str) -> tuple[bytes, bool]:
        if path == "/dated":
            return _ok(b"old", f"date: {upstream_date}\r\n"), False
        return _ok(b"new"), False

    with _gateway(tmp_path, pki, answer) as gw:
        conn = http.client.HTTPSConnection("localhost", gw.port, context=client_context(pki))
        try:
            conn.request("GET", "/dated")
            resp = conn.getresponse()
            assert resp.read() == b"old"
            dates = [v for k, v in resp.getheaders() if k.lower() == "date"]
            assert dates == [upstream_date]
            conn.request("GET", "/undated")
            resp = conn.getresponse()
            assert resp.read() == b"new"
            dates = [v for k, v in resp.getheaders() if k.lower() == "date"]
            assert len(dates) == 1
            assert parsedate_to_datetime(dates[0]).year >= 2025
        finally:
            conn.close()


@pytest.mark.parametrize(
    "first",
    [
        _ok(b"ok") + b"HTTP/1.1 302 Found\r\nLocation: /evil\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\n\r\n" + _ok(b"a second answer"),
        _ok(b"ok") + b"HTTP/1.1 302 Fo",  # the start of another answer
        _ok(b"ok") + LATER + b"HTTP/1.1 302 Found\r\nLocation: /evil\r\nContent-Length: 0\r\n\r\n",
    ],
    ids=["a whole second answer", "an answer after a 204", "a partial answer", "bytes while idle"],
)
def test_bytes_beyond_an_answer_never_reach_another_client(
    tmp_path: Path, pki: Path, first: bytes
) -> None:
    """An upstream connection that carries one byte more than the answer to its request is
    closed, never reused: those bytes would be the next client's answer."""

    def answer(method: str, path: str) -> tuple[bytes, bool]:
        return (first if path == "/first" else _ok(f"fresh {path}".encode())), False

    with _gateway(tmp_path, pki, answer) as gw:
        reply = request(gw.port, "/first", pki)
        assert reply.status in (200, 204), reply.body
        time.sleep(0.6)  # the late bytes arrive while the connection is idle in the pool
        for i in range(3):
            after = request(gw.port, f"/next/{i}", pki)
            assert (after.status, after.body) == (200, f"fresh /next/{i}".encode())
        assert gw.upstream.connections == 2  # a fresh one after the tainted one


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 9000 + b"\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-F%d: v\r\n" % i for i in range(200)) + b"\r\n",
        b"HTTP/1.1 200 " + b"O" * 9000 + b"\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Endless: " + b"a" * (4 * 1024 * 1024),  # and no end
    ],
    ids=[
        "a field over 8190 bytes",
        "200 fields",
        "a status line over 8190 bytes",
        "an endless field",
    ],
)
def test_an_answer_head_over_the_limits_is_502_bad_response(
    tmp_path: Path, pki: Path, head: bytes
) -> None:
    """aiohttp's client limits, enforced as the bytes arrive: an endless field is cut at about
    1 MiB, long before the header deadline."""
    with _gateway(tmp_path, pki, lambda m, p: (head, True)) as gw:
        started = time.monotonic()
        reply = request(gw.port, "/big", pki)
        assert reply.status == 502 and reply.json()["error"] == "upstream_unavailable"
        assert time.monotonic() - started < 5
        assert sample(scrape(gw.admin_port), UP, upstream="echo", outcome="bad_response") == 1


UPGRADE = (
    b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade, close\r\nSec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
)


@contextmanager
def _websocket_gateway(
    tmp_path: Path, pki: Path, answer: bytes, close: bool = True
) -> Iterator[Any]:
    """A gateway whose route allows WebSockets, to an upstream that answers `answer` (and then
    closes the connection, unless not `close`)."""
    with ScriptedUpstream(lambda m, p: (answer, close)) as up:
        path, port, admin = write_config(tmp_path, pki, up.port)
        doc = yaml.safe_load(path.read_text())
        doc["routes"][0]["websocket"] = True
        path.write_text(yaml.safe_dump(doc))
        with GatewayProcess(path, admin) as gw:
            gw.port = port
            gw.upstream = up
            yield gw


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 101 Switching Protocols\r\n"
        + b"".join(b"X-F%d: v\r\n" % i for i in range(200))
        + b"Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nX-Endless: " + b"a" * (4 * 1024 * 1024),
    ],
    ids=["200 fields", "an endless field"],
)
def test_an_upgrade_answer_over_the_limits_is_502(tmp_path: Path, pki: Path, head: bytes) -> None:
    """The WebSocket upgrade's answer is read by the same core, with the same limits."""
    with _websocket_gateway(tmp_path, pki, head) as gw:
        started = time.monotonic()
        answer = _raw_exchange(gw.port, pki, UPGRADE)
        assert answer.startswith(b"HTTP/1.1 502"), answer[:200]
        assert time.monotonic() - started < 5
        assert sample(scrape(gw.admin_port), UP, upstream="echo", outcome="bad_response") == 1


def test_an_upstreams_refusal_of_an_upgrade_reaches_the_client_as_it_is(
    tmp_path: Path, pki: Path
) -> None:
    """An upstream that answers an upgrade with anything but 101 (here 403, the usual refusal
    of an origin's own auth) is passed on, not turned into a 502, and its connection is closed,
    never pooled: it was opened for the upgrade alone."""
    refusal = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 8\r\nX-Why: token\r\n\r\nnot you\n"
    with _websocket_gateway(tmp_path, pki, refusal, close=False) as gw:
        answer = _raw_exchange(gw.port, pki, UPGRADE)
        assert answer.startswith(b"HTTP/1.1 403 Forbidden\r\n"), answer[:200]
        assert b"\r\nX-Why: token\r\n" in answer and answer.endswith(b"not you\n")
        assert sample(scrape(gw.admin_port), UP, upstream="echo", outcome="ok") == 1
        deadline = time.monotonic() + 5
        while gw.upstream.open and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gw.upstream.open == 0 and gw.upstream.requests == ["GET /ws"]


def test_answer_header_bytes_pass_as_they_came(tmp_path: Path, pki: Path) -> None:
    """Non-ASCII bytes in an answer's fields (UTF-8 or not) reach the client unchanged: a
    filename="café" was decoded as latin-1 and re-encoded as UTF-8 (caf\\xc3\\x83\\xc2\\xa9)."""
    utf8 = 'attachment; filename="café.txt"'.encode()
    latin1 = b"caf\xe9"
    answer = (
        b"HTTP/1.1 200 OK\r\nContent-Disposition: " + utf8 + b"\r\nX-Raw: " + latin1
        + b"\r\nContent-Length: 2\r\n\r\nok"
    )  # fmt: skip
    with _gateway(tmp_path, pki, lambda m, p: (answer, False)) as gw:
        data = _raw_exchange(
            gw.port, pki, b"GET /f HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
    head = data.split(b"\r\n\r\n", 1)[0]
    assert b"\r\nContent-Disposition: " + utf8 + b"\r\n" in head, head
    assert b"\r\nX-Raw: " + latin1 + b"\r\n" in head, head
