"""The downstream HTTP/1.1 core, fed bytes: the events it tells and the limits it keeps."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from gateway.downstream.connections import HttpServer, Limits
from gateway.downstream.h1reader import Refused, RequestReader
from gateway.downstream.http1 import Http1Connection
from gateway.downstream.messages import Request
from gateway.observe.metrics import Metrics


class Recorder:
    """The events a reader told, in order, as plain tuples."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.requests: list[Request] = []

    def head_started(self) -> None:
        self.events.append(("head",))

    def request(self, request: Request) -> None:
        self.requests.append(request)
        self.events.append(("request", request.method, request.raw_path))

    def body(self, request: Request, data: bytes) -> None:
        self.events.append(("body", data))

    def request_end(self, request: Request) -> None:
        self.events.append(("end", request.raw_path))

    def refused(self, refused: Refused, request: Request | None) -> None:
        path = request.raw_path if request is not None else None
        self.events.append(("refused", refused.status, refused.code, refused.limit, path))

    def bodies(self) -> bytes:
        return b"".join(e[1] for e in self.events if e[0] == "body")

    def refusal(self) -> tuple[Any, ...] | None:
        return next((e for e in self.events if e[0] == "refused"), None)


async def _connection() -> Http1Connection:
    """The connection each Request names as its own: made, never connected."""
    limits = Limits("test", Metrics(CollectorRegistry()))
    return HttpServer(lambda request: None, limits)()


OWNER = asyncio.run(_connection())


def reader(line: int = 8190, field: int = 8190, count: int = 100) -> tuple[RequestReader, Recorder]:
    rec = Recorder()
    return RequestReader(rec, OWNER, line, field, count), rec


def feed(r: RequestReader, data: bytes, step: int = 0) -> None:
    """All of `data`, at once or `step` bytes a read."""
    if step <= 0:
        r.feed(data)
        return
    for i in range(0, len(data), step):
        r.feed(data[i : i + step])


GET = b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n"


@pytest.mark.parametrize("step", [0, 1, 7])
def test_a_request_whole_or_byte_by_byte(step: int) -> None:
    r, rec = reader()
    feed(r, GET, step)
    assert rec.events == [("head",), ("request", "GET", "/a?b=1"), ("end", "/a?b=1")]
    (req,) = rec.requests
    assert req.version == (1, 1) and req.keep_alive and not req.upgrade
    assert req.fields == [("Host", "x"), ("Accept", "*/*")]
    assert req.host == "x"
    assert not r.in_head and r.parsing is None


def test_pipelined_requests_come_out_in_order() -> None:
    r, rec = reader()
    post = b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
    r.feed(GET + post + GET.replace(b"/a?b=1", b"/c"))
    paths = [e[2] if e[0] == "request" else e[1] for e in rec.events if e[0] in ("request", "end")]
    assert paths == ["/a?b=1", "/a?b=1", "/p", "/p", "/c", "/c"]
    assert rec.bodies() == b"hello"


@pytest.mark.parametrize("step", [0, 1, 3])
def test_a_chunked_body_and_its_trailers(step: int) -> None:
    r, rec = reader()
    data = (
        b"POST /u HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: abc\r\n\r\n"
    )
    feed(r, data, step)
    (req,) = rec.requests
    assert req.chunked and rec.bodies() == b"hello world"
    assert req.trailers == [("X-Sum", "abc")]
    assert rec.events[-1] == ("end", "/u")


def test_the_content_length_with_trailing_whitespace_is_the_one_used() -> None:
    r, rec = reader()
    r.feed(b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 5 \r\n\r\nhelloGET")
    (req,) = rec.requests
    assert req.content_length == 5
    assert rec.bodies() == b"hello"
    assert ("end", "/p") in rec.events  # the next request begins after exactly 5 bytes
    assert rec.events[-1] == ("head",)


def test_the_request_line_limit_holds_while_the_line_arrives() -> None:
    r, rec = reader(line=100)
    fed = 0
    for _ in range(100):
        if rec.refusal():
            break
        r.feed(b"GET /" + b"a" * 20 if fed == 0 else b"a" * 20)
        fed += 20
    assert rec.refusal() == ("refused", 414, "request_line_too_long", "request_line", None)
    assert fed <= 140  # at the limit, not at the end of the line
    assert r.stopped


def test_a_field_without_end_is_refused_as_its_bytes_arrive() -> None:
    r, rec = reader(line=8190, field=8190)
    r.feed(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ")
    fed = 0
    while rec.refusal() is None and fed < 1_000_000:
        r.feed(b"v" * 1024)
        fed += 1024
    assert rec.refusal() == ("refused", 431, "header_too_large", "header_size", None)
    assert fed <= 8190 + 1024
    r.feed(b"\r\n\r\n")
    assert rec.requests == []  # nothing after the refusal is read


def test_a_field_over_the_limit_in_one_read() -> None:
    r, rec = reader(field=100)
    r.feed(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"v" * 200 + b"\r\n\r\n")
    assert rec.refusal() == ("refused", 431, "header_too_large", "header_size", None)


def test_too_many_fields_and_too_many_trailers() -> None:
    r, rec = reader(count=3)
    r.feed(b"GET / HTTP/1.1\r\n" + b"".join(b"F%d: v\r\n" % i for i in range(4)) + b"\r\n")
    assert rec.refusal() == ("refused", 431, "too_many_headers", "header_count", None)

    r, rec = reader(count=3)
    r.feed(b"POST /t HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n")
    r.feed(b"".join(b"T%d: v\r\n" % i for i in range(4)) + b"\r\n")
    assert rec.refusal() == ("refused", 431, "too_many_headers", "header_count", "/t")


def test_a_malformed_chunk_refuses_the_request_whose_body_it_is() -> None:
    r, rec = reader()
    r.feed(b"POST /u HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel")
    assert r.parsing is not None
    r.feed(b"lo\r\nZZ\r\n")
    assert rec.refusal() == ("refused", 400, "bad_request", None, "/u")
    assert r.parsing is None and r.stopped
    r.feed(GET)
    assert len(rec.requests) == 1


@pytest.mark.parametrize(
    "head",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",  # NUL in a value
        b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n",  # a bare CR
        b"GET / HTTP/1.1\r\nHo st: x\r\n\r\n",  # a space in a name
        b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",  # a space before the colon
        b"GET / HTTP/1.1\r\n Host: x\r\n\r\n",  # obsolete line folding
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n",  # both framings: smuggling
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"POST /g HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",  # not chunked last
        b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
        b"G\x01T / HTTP/1.1\r\nHost: x\r\n\r\n",
    ],
    ids=[
        "nul",
        "bare-cr",
        "space-in-name",
        "space-before-colon",
        "folding",
        "two-lengths",
        "length-and-chunked",
        "negative-length",
        "te-not-chunked",
        "version",
        "method",
    ],
)
def test_malformed_heads_are_refused_with_400(head: bytes) -> None:
    r, rec = reader()
    r.feed(head)
    refusal = rec.refusal()
    assert refusal is not None and refusal[1:4] == (400, "bad_request", None), rec.events
    if rec.requests:  # llhttp judges the framing after the head: the refusal names the request
        assert refusal[4] == rec.requests[0].raw_path and rec.events[-1] == refusal


def test_header_bytes_pass_as_they_arrived() -> None:
    r, rec = reader()
    raw = 'attachment; filename="café"'.encode()
    r.feed(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Disposition: " + raw + b"\r\nX-L: \xe9\r\n\r\n")
    (req,) = rec.requests
    values = [v for _, v in req.fields]
    assert values[1].encode("utf-8", "surrogateescape") == raw
    assert values[2].encode("utf-8", "surrogateescape") == b"\xe9"  # not UTF-8: still exact


def test_an_upgrade_keeps_its_tail_until_someone_decides() -> None:
    r, rec = reader()
    head = b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    r.feed(head + b"frame1")
    r.feed(b"frame2")
    assert r.upgraded and rec.requests[0].upgrade
    assert r.take_tail() == b"frame1frame2"
    r.feed(b"more")
    assert r.stopped and r.tail == b""  # the tunnel reads from here on


def test_an_upgrade_answered_as_a_plain_request_reads_on() -> None:
    r, rec = reader()
    head = b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    r.feed(head + GET[:10])
    r.feed(GET[10:])
    assert len(rec.requests) == 1
    r.resume_after_upgrade()
    assert [q.raw_path for q in rec.requests] == ["/ws", "/a?b=1"]
    assert rec.events[-1] == ("end", "/a?b=1")


def test_stop_reads_and_tells_nothing_more() -> None:
    r, rec = reader()
    r.feed(b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab")
    r.stop()
    r.feed(b"cdefghij" + GET)
    assert rec.bodies() == b"ab" and len(rec.requests) == 1
    assert rec.refusal() is None and r.parsing is None
