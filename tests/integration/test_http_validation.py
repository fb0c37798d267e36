"""Malformed and oversized requests, as raw bytes over a real TLS connection: each gets a
precise 4xx in the gateway's JSON shape and never reaches the upstream; every limit that bites
is counted; slow and idle clients are cut off."""

from __future__ import annotations

import json
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import RunningGateway, base_config, client_context, running, sample

H = "Host: localhost\r\n"

# name -> (raw request head (+ body), status, error code)
MALFORMED = {
    "conflicting Content-Length": (f"POST /a HTTP/1.1\r\n{H}Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400, "bad_request"),
    "repeated Content-Length": (f"POST /a HTTP/1.1\r\n{H}Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello", 400, "bad_request"),
    "Content-Length list": (f"POST /a HTTP/1.1\r\n{H}Content-Length: 5, 5\r\n\r\nhello", 400, "bad_request"),
    "Transfer-Encoding gzip, chunked": (f"POST /a HTTP/1.1\r\n{H}Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 400, "bad_request"),
    "Transfer-Encoding chunked, gzip": (f"POST /a HTTP/1.1\r\n{H}Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", 400, "bad_request"),
    "Transfer-Encoding identity": (f"POST /a HTTP/1.1\r\n{H}Transfer-Encoding: identity\r\n\r\n", 400, "bad_request"),
    "Transfer-Encoding twice": (f"POST /a HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "bad_request"),
    "Transfer-Encoding and Content-Length": (f"POST /a HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", 400, "bad_request"),
    "obsolete line folding": (f"GET /a HTTP/1.1\r\n{H}X-A: a\r\n b\r\n\r\n", 400, "bad_request"),
    "bare LF line endings": (f"GET /a HTTP/1.1\n{H.strip()}\n\n", 400, "bad_request"),
    "bare CR in a value": (f"GET /a HTTP/1.1\r\n{H}X-A: a\rb\r\n\r\n", 400, "bad_request"),
    "missing Host": ("GET /a HTTP/1.1\r\n\r\n", 400, "bad_request"),
    "missing Host on HTTP/1.0": ("GET /a HTTP/1.0\r\n\r\n", 400, "bad_request"),
    "repeated Host": (f"GET /a HTTP/1.1\r\n{H}{H}\r\n", 400, "bad_request"),
    "absolute-form target": (f"GET http://evil.example/ HTTP/1.1\r\n{H}\r\n", 400, "bad_path"),
    "CONNECT": (f"CONNECT evil.example:443 HTTP/1.1\r\n{H}\r\n", 400, "bad_request"),
    "control character in a value": (f"GET /a HTTP/1.1\r\n{H}X-A: a\x01b\r\n\r\n", 400, "bad_request"),
    "NUL in a value": (f"GET /a HTTP/1.1\r\n{H}X-A: a\x00b\r\n\r\n", 400, "bad_request"),
    "space before the colon": (f"GET /a HTTP/1.1\r\n{H}X-A : b\r\n\r\n", 400, "bad_request"),
    "request line too long": (f"GET /{'a' * 2000} HTTP/1.1\r\n{H}\r\n", 414, "request_line_too_long"),
    "header too large": (f"GET /a HTTP/1.1\r\n{H}X-A: {'b' * 2000}\r\n\r\n", 431, "header_too_large"),
    "too many headers": (f"GET /a HTTP/1.1\r\n{H}" + "".join(f"X-{i}: v\r\n" for i in range(40)) + "\r\n", 431, "too_many_headers"),
    "Content-Length over the body limit": (f"POST /a HTTP/1.1\r\n{H}Content-Length: 5000\r\n\r\n" + "x" * 5000, 413, "request_too_large"),
}  # fmt: skip

LIMITS = {
    "max_request_line": 1024,
    "max_header_size": 1024,
    "max_headers": 20,
    "max_request_body": "4KiB",
    "header_timeout": "1s",
    "keepalive_timeout": "2s",
    "body_timeout": "1s",
    "body_min_rate": 1000,
}


@pytest.fixture(scope="module")
def gw(pki: Path) -> Iterator[RunningGateway]:
    def config(port: int) -> dict[str, object]:
        doc = base_config(pki, port)
        doc["listeners"][0]["limits"] = LIMITS  # type: ignore[index]
        return doc

    with running(config, pki) as gateway:
        yield gateway


def _tls(port: int, pki: Path) -> ssl.SSLSocket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    return client_context(pki).wrap_socket(sock, server_hostname="localhost")


def _read_response(tls: ssl.SSLSocket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = tls.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    want = int(headers.get("content-length", "0"))
    while len(body) < want:
        chunk = tls.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body


def _raw(gw: RunningGateway, pki: Path, payload: str) -> tuple[int, dict[str, str], bytes]:
    with _tls(gw.port, pki) as tls:
        tls.sendall(payload.encode("latin-1"))
        return _read_response(tls)


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_request_is_refused_before_the_upstream(
    gw: RunningGateway, pki: Path, name: str
) -> None:
    payload, status, code = MALFORMED[name]
    seen = len(gw.echo_seen)
    with _tls(gw.port, pki) as tls:
        tls.sendall(payload.encode("latin-1"))
        got, headers, body = _read_response(tls)
        assert tls.recv(1) == b"", "the connection must close after a refused request"
    assert got == status, body
    doc = json.loads(body)
    assert doc["error"] == code and len(doc["request_id"]) == 16
    assert headers["x-request-id"] == doc["request_id"]
    time.sleep(0.05)
    assert len(gw.echo_seen) == seen, gw.echo_seen[seen:]


def test_well_formed_twin_reaches_the_upstream(gw: RunningGateway, pki: Path) -> None:
    seen = len(gw.echo_seen)
    status, _, body = _raw(gw, pki, f"POST /twin HTTP/1.1\r\n{H}Content-Length: 5\r\n\r\nhello")
    assert status == 200 and json.loads(body)["body_bytes"] == 5
    assert gw.echo_seen[seen:] == ["POST /twin"]


def test_limits_are_counted(gw: RunningGateway, pki: Path) -> None:
    before = gw.metrics()
    _raw(gw, pki, MALFORMED["request line too long"][0])
    _raw(gw, pki, MALFORMED["header too large"][0])
    _raw(gw, pki, MALFORMED["too many headers"][0])
    _raw(gw, pki, MALFORMED["Content-Length over the body limit"][0])
    after = gw.metrics()
    for limit in ("request_line", "header_size", "header_count", "body_size"):
        key = {"listener": "public", "limit": limit}
        assert (
            sample(after, "mtls_gateway_limits_hit_total", **key)
            == sample(before, "mtls_gateway_limits_hit_total", **key) + 1
        ), limit


def test_chunked_body_over_the_limit_is_cut_with_413(gw: RunningGateway, pki: Path) -> None:
    chunk = "x" * 1024
    body = "".join(f"400\r\n{chunk}\r\n" for _ in range(8)) + "0\r\n\r\n"
    status, _, text = _raw(
        gw, pki, f"POST /big HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\n\r\n{body}"
    )
    assert status == 413 and json.loads(text)["error"] == "request_too_large"


def test_slow_request_head_gets_408_and_is_closed(gw: RunningGateway, pki: Path) -> None:
    before = sample(
        gw.metrics(), "mtls_gateway_limits_hit_total", listener="public", limit="header_timeout"
    )
    with _tls(gw.port, pki) as tls:
        tls.sendall(b"GET /slow HTTP/1.1\r\nHost: loc")  # ... and never the rest
        started = time.monotonic()
        status, _, body = _read_response(tls)
        assert status == 408 and json.loads(body)["error"] == "request_timeout"
        assert 0.8 < time.monotonic() - started < 3
        assert tls.recv(1) == b""
    after = sample(
        gw.metrics(), "mtls_gateway_limits_hit_total", listener="public", limit="header_timeout"
    )
    assert after == before + 1


def test_connection_that_never_sends_a_request_is_closed(gw: RunningGateway, pki: Path) -> None:
    """Closed after header_timeout without an answer: nothing was asked, and an unasked 408
    would be read as the answer to a request the client sends at that moment."""
    before = sample(
        gw.metrics(), "mtls_gateway_limits_hit_total", listener="public", limit="header_timeout"
    )
    with _tls(gw.port, pki) as tls:
        started = time.monotonic()
        tls.settimeout(10)
        assert tls.recv(1) == b""
        assert 0.8 < time.monotonic() - started < 3
    after = sample(
        gw.metrics(), "mtls_gateway_limits_hit_total", listener="public", limit="header_timeout"
    )
    assert after == before + 1


def test_deadline_of_the_first_request_counts_from_the_connection(
    gw: RunningGateway, pki: Path
) -> None:
    """A client that starts its head late gets no fresh header_timeout for it."""
    with _tls(gw.port, pki) as tls:
        started = time.monotonic()
        time.sleep(0.6)
        tls.sendall(b"GET /late HTTP/1.1\r\nHo")
        status, _, _ = _read_response(tls)
        assert status == 408
        assert time.monotonic() - started < 1.6  # header_timeout is 1s (+ the sweep)


def test_idle_keepalive_connection_is_closed_after_keepalive_timeout(
    gw: RunningGateway, pki: Path
) -> None:
    with _tls(gw.port, pki) as tls:
        tls.sendall(f"GET /one HTTP/1.1\r\n{H}\r\n".encode())
        assert _read_response(tls)[0] == 200
        started = time.monotonic()
        tls.settimeout(10)
        assert tls.recv(1) == b""  # idle: closed by the gateway, not by a 408
        assert 1.5 < time.monotonic() - started < 5


def _all_answers(tls: ssl.SSLSocket) -> list[tuple[int, bytes]]:
    """Every answer on the connection until the gateway closes it: (status, body) in order."""
    data = b""
    while chunk := tls.recv(65536):
        data += chunk
    answers = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        length = next(
            int(v)
            for k, _, v in (x.partition(":") for x in lines[1:])
            if k.lower() == "content-length"
        )
        answers.append((int(lines[0].split()[1]), rest[:length]))
        data = rest[length:]
    return answers


def test_pipelined_requests_are_answered_in_order(gw: RunningGateway, pki: Path) -> None:
    with _tls(gw.port, pki) as tls:
        tls.sendall(
            (
                f"GET /first HTTP/1.1\r\n{H}\r\n"
                f"POST /second HTTP/1.1\r\n{H}Content-Length: 5\r\n\r\nhello"
                f"GET /third HTTP/1.1\r\n{H}Connection: close\r\n\r\n"
            ).encode()
        )
        answers = _all_answers(tls)
    assert [s for s, _ in answers] == [200, 200, 200]
    assert [json.loads(b)["path"] for _, b in answers] == ["/first", "/second", "/third"]
    assert json.loads(answers[1][1])["body_bytes"] == 5


def test_a_malformed_request_behind_a_good_one_ends_the_connection(
    gw: RunningGateway, pki: Path
) -> None:
    seen = len(gw.echo_seen)
    with _tls(gw.port, pki) as tls:
        tls.sendall(
            (
                f"GET /good HTTP/1.1\r\n{H}\r\n"
                f"GET /bad HTTP/1.1\r\n{H}Content-Length: 1\r\nContent-Length: 2\r\n\r\nxy"
            ).encode()
        )
        answers = _all_answers(tls)
    assert answers[0][0] == 200 and json.loads(answers[0][1])["path"] == "/good"
    assert [status for status, _ in answers[1:]] == [400]  # after the answer owed, then closed
    assert json.loads(answers[1][1])["error"] == "bad_request"
    time.sleep(0.05)
    assert gw.echo_seen[seen:] == ["GET /good"]


@pytest.mark.parametrize(("extra", "status"), [(0, 200), (1, 414)])
def test_request_line_limit_counts_the_whole_line(
    gw: RunningGateway, pki: Path, extra: int, status: int
) -> None:
    limit = LIMITS["max_request_line"]
    assert isinstance(limit, int)
    target = "/" + "a" * (limit - len("GET ") - len(" HTTP/1.1") - 1 + extra)
    assert len(f"GET {target} HTTP/1.1") == limit + extra
    got, _, _ = _raw(gw, pki, f"GET {target} HTTP/1.1\r\n{H}Connection: close\r\n\r\n")
    assert got == status


def test_an_early_answer_reaches_a_client_that_is_still_sending(
    gw: RunningGateway, pki: Path
) -> None:
    """A 413 answered from the head while the client keeps sending its body: the gateway
    closes with a linger (half-close, then reads and drops the rest) so the kernel does not
    reset the connection and destroy the answer before the client reads it."""
    with (
        socket.create_connection(("127.0.0.1", gw.port)) as raw,
        client_context(pki).wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(f"POST /a HTTP/1.1\r\n{H}Content-Length: 900000000\r\n\r\n".encode())
        time.sleep(0.2)  # the 413 is written and the gateway closes its side
        for _ in range(32):  # 2 MiB the gateway drops: a client like http.client sends it all
            tls.sendall(b"x" * 65536)  # before it reads, and must not fail doing so
        answer = tls.recv(65536)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]


def test_a_refusal_before_the_body_is_read_says_the_connection_closes(
    gw: RunningGateway, pki: Path
) -> None:
    """The gateway closes a connection whose request body it did not read; the answer must say
    so, or a keep-alive client sends its next request into a closed connection."""
    with (
        socket.create_connection(("127.0.0.1", gw.port)) as raw,
        client_context(pki).wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(
            f"POST /a%2fb HTTP/1.1\r\n{H}Content-Length: 3000\r\n\r\n".encode() + b"x" * 100
        )
        answer = tls.recv(65536)
    head = answer.split(b"\r\n\r\n", 1)[0].lower()
    assert head.startswith(b"http/1.1 400") and b"\r\nconnection: close" in head, head


@pytest.mark.parametrize("length", ["5 ", " 5", "5\t"])
def test_a_content_length_with_whitespace_is_the_length_the_gateway_acts_on(
    gw: RunningGateway, pki: Path, length: str
) -> None:
    """RFC 9110 allows whitespace around a field value; the parser frames the body by it, so
    the gateway must forward that body and apply its limits to that length."""
    status, _, body = _raw(gw, pki, f"POST /a HTTP/1.1\r\n{H}Content-Length: {length}\r\n\r\nhello")
    assert status == 200, body
    assert json.loads(body)["body_bytes"] == 5
    status, _, body = _raw(
        gw, pki, f"POST /a HTTP/1.1\r\n{H}Content-Length: 200000000{length[-1]}\r\n\r\nx"
    )
    assert status == 413, body


def test_expect_100_continue_is_answered_before_the_body(gw: RunningGateway, pki: Path) -> None:
    """A client that asks first gets `100 Continue` at once (it was routed and allowed), not
    after it gave up waiting and sent the body anyway."""
    with _tls(gw.port, pki) as tls:
        tls.settimeout(2)
        tls.sendall(
            f"POST /a HTTP/1.1\r\n{H}Content-Length: 5\r\nExpect: 100-continue\r\n\r\n".encode()
        )
        interim = tls.recv(65536)
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"), interim
        tls.sendall(b"hello")
        status, _, body = _read_response(tls)
    assert status == 200 and json.loads(body)["body_bytes"] == 5


def _limit_hits(gw: RunningGateway, limit: str) -> float:
    return sample(gw.metrics(), "mtls_gateway_limits_hit_total", listener="public", limit=limit)


@pytest.mark.parametrize("trickle", [False, True], ids=["body-never-sent", "body-trickled"])
def test_a_body_that_does_not_come_gets_408_and_the_connection_closes(
    gw: RunningGateway, pki: Path, trickle: bool
) -> None:
    """A head promising a body that never comes (or comes a byte at a time) held its
    connection slot with no deadline: now body_timeout plus a second per body_min_rate bytes
    received, then 408 and the connection closes."""
    before = _limit_hits(gw, "body_timeout")
    seen = len(gw.echo_seen)
    with _tls(gw.port, pki) as tls:
        tls.settimeout(10)
        tls.sendall(f"POST /slow-body HTTP/1.1\r\n{H}Content-Length: 100\r\n\r\n".encode())
        started = time.monotonic()
        if trickle:  # 1 byte every 0.3 s: far below body_min_rate, never done in time
            tls.setblocking(False)
            answer = b""
            while time.monotonic() - started < 8 and not answer:
                try:
                    tls.sendall(b"x")
                except (ssl.SSLWantWriteError, OSError):
                    break
                time.sleep(0.3)
                try:
                    answer = tls.recv(65536)
                except ssl.SSLWantReadError:
                    continue
                except OSError:
                    break
            tls.setblocking(True)
            status = int(answer.split(b" ", 2)[1]) if answer else 0
            body = answer.partition(b"\r\n\r\n")[2]
        else:
            status, _, body = _read_response(tls)
        elapsed = time.monotonic() - started
        assert status == 408 and json.loads(body)["error"] == "request_timeout", body
        assert 0.8 < elapsed < 4, elapsed
    assert _limit_hits(gw, "body_timeout") == before + 1
    assert not any("/slow-body" in line for line in gw.echo_seen[seen:])


def test_a_fast_body_is_not_cut_by_the_body_deadline(gw: RunningGateway, pki: Path) -> None:
    """The deadline grows with what arrives: 4 KiB sent over 1.6 s (2.5 KB/s, above
    body_min_rate) passes although body_timeout is 1 s."""
    with _tls(gw.port, pki) as tls:
        tls.sendall(f"POST /steady HTTP/1.1\r\n{H}Content-Length: 4000\r\n\r\n".encode())
        for _ in range(8):
            tls.sendall(b"y" * 500)
            time.sleep(0.2)
        status, _, body = _read_response(tls)
    assert status == 200 and json.loads(body)["body_bytes"] == 4000


def test_a_header_that_never_ends_is_refused_as_its_bytes_arrive(
    gw: RunningGateway, pki: Path
) -> None:
    """The parser hands a field over only once it ends: a value without end used to be read
    for megabytes until the head deadline. Now the unfinished line is held to the limit."""
    before = _limit_hits(gw, "header_size")
    with _tls(gw.port, pki) as tls:
        tls.settimeout(5)
        tls.sendall(f"GET /endless HTTP/1.1\r\n{H}X-Endless: ".encode())
        sent = 0
        started = time.monotonic()
        try:
            while sent < 4 * 1024 * 1024 and time.monotonic() - started < 5:
                tls.sendall(b"a" * 16384)
                sent += 16384
        except OSError:
            pass  # the gateway answered and closed
        status, _, body = _read_response(tls)
    assert status == 431 and json.loads(body)["error"] == "header_too_large"
    assert time.monotonic() - started < 3  # not after the head deadline
    assert _limit_hits(gw, "header_size") == before + 1
