"""The upstream HTTP/1.1 core, fed bytes: the answer events it tells, its limits, and what it
makes of bytes beyond an answer."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.upstream.h1response import (
    MAX_HEAD,
    MAX_LINE,
    BadResponse,
    ResponseHead,
    ResponseReader,
)


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.heads: list[ResponseHead] = []

    def response_head(self, head: ResponseHead) -> None:
        self.heads.append(head)
        self.events.append(("head", head.status))

    def response_body(self, data: bytes) -> None:
        self.events.append(("body", data))

    def response_end(self) -> None:
        self.events.append(("end",))

    def body(self) -> bytes:
        return b"".join(e[1] for e in self.events if e[0] == "body")


def reader(expect_body: bool = True) -> tuple[ResponseReader, Recorder]:
    rec = Recorder()
    r = ResponseReader(rec)
    r.expect(expect_body)
    return r, rec


def feed(r: ResponseReader, data: bytes, step: int = 0) -> BadResponse | None:
    if step <= 0:
        return r.feed(data)
    for i in range(0, len(data), step):
        bad = r.feed(data[i : i + step])
        if bad is not None:
            return bad
    return None


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n\r\nhello"


@pytest.mark.parametrize("step", [0, 1, 4])
def test_an_answer_whole_or_byte_by_byte(step: int) -> None:
    r, rec = reader()
    assert feed(r, OK, step) is None
    (head,) = rec.heads
    assert (head.status, head.reason, head.content_length) == (200, "OK", 5)
    assert head.fields == [("Content-Length", "5"), ("X-A", "1")]
    assert rec.body() == b"hello" and rec.events[-1] == ("end",)
    assert r.answered and r.keep_alive and not r.surplus


def test_informational_answers_are_skipped() -> None:
    r, rec = reader()
    assert (
        r.feed(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\n" + OK)
        is None
    )
    assert [h.status for h in rec.heads] == [200] and rec.body() == b"hello"


CHUNKED = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\ngrpc-status: 0\r\n\r\n"
)


def test_a_chunked_answer_with_trailers() -> None:
    r, rec = reader()
    assert r.feed(CHUNKED) is None
    (head,) = rec.heads
    assert head.chunked and head.content_length is None
    assert head.trailers == [("grpc-status", "0")] and rec.body() == b"abc"


def test_an_answer_with_both_framings_is_a_bad_response() -> None:
    r, rec = reader()
    both = CHUNKED.replace(b"chunked\r\n", b"chunked\r\nContent-Length: 99\r\n", 1)
    assert isinstance(r.feed(both), BadResponse)
    assert rec.heads == []


def test_a_byte_beyond_a_complete_answer_marks_the_connection() -> None:
    r, rec = reader()
    assert r.feed(OK + b"H") is None
    assert r.surplus and not r.keep_alive
    assert rec.body() == b"hello"  # the answer itself stands


@pytest.mark.parametrize("split", [False, True], ids=["same-read", "next-read"])
@pytest.mark.parametrize(
    "extra",
    [b"HTTP/1.1 302 Found\r\nLocation: /x\r\n\r\n", b"HTTP/1.1 30", b"garbage"],
    ids=["a-second-answer", "the-start-of-one", "garbage"],
)
def test_anything_after_a_204_is_surplus_or_bad(extra: bytes, split: bool) -> None:
    r, rec = reader()
    answer = b"HTTP/1.1 204 No Content\r\n\r\n"
    bad = feed(r, answer, 0) or r.feed(extra) if split else r.feed(answer + extra)
    assert [h.status for h in rec.heads] == [204]  # never a second answer
    assert bad is not None or (r.surplus and not r.keep_alive)


def test_empty_lines_between_answers_are_no_answer() -> None:
    """llhttp skips empty lines before a message, here and on the connection's next exchange
    alike, so they can never be read as anyone's answer."""
    r, rec = reader()
    assert r.feed(OK + b"\r\n\r\n") is None
    r.expect(True)
    assert r.feed(OK) is None
    assert [h.status for h in rec.heads] == [200, 200] and rec.body() == b"hellohello"


def test_the_answer_to_head_has_no_body_and_ends_the_connection() -> None:
    r, rec = reader(expect_body=False)
    assert r.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n") is None
    assert rec.events == [("head", 200), ("end",)]
    assert not r.keep_alive  # llhttp stopped: the connection is not trusted for another


def test_an_answer_after_a_new_request_is_read_again() -> None:
    r, rec = reader()
    assert r.feed(OK) is None
    r.expect(True)
    assert r.feed(OK.replace(b"hello", b"world")) is None
    assert [h.status for h in rec.heads] == [200, 200] and rec.body() == b"helloworld"
    assert not r.surplus


@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n",  # a bad chunk size
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX A: b\r\n\r\n",
        b"SSH-2.0-OpenSSH\r\n",
    ],
    ids=["bad-chunk", "two-lengths", "status", "nul", "space-in-name", "not-http"],
)
def test_malformed_answers_are_bad_responses(data: bytes) -> None:
    r, _ = reader()
    assert isinstance(r.feed(data), BadResponse)


def test_a_status_line_field_and_count_over_the_limits() -> None:
    r, _ = reader()
    bad = r.feed(b"HTTP/1.1 200 " + b"x" * (MAX_LINE + 1) + b"\r\n\r\n")
    assert isinstance(bad, BadResponse) and "status line" in str(bad)
    r, _ = reader()
    bad = r.feed(b"HTTP/1.1 200 OK\r\nX-Big: " + b"v" * MAX_LINE + b"\r\n\r\n")
    assert isinstance(bad, BadResponse) and "X-Big" in str(bad)
    r, _ = reader()
    bad = r.feed(b"HTTP/1.1 200 OK\r\n" + b"".join(b"F%d: v\r\n" % i for i in range(129)) + b"\r\n")
    assert isinstance(bad, BadResponse) and "128 fields" in str(bad)


def test_an_endless_field_is_cut_at_the_head_bound_as_it_arrives() -> None:
    r, _ = reader()
    assert r.feed(b"HTTP/1.1 200 OK\r\nX-Endless: ") is None
    fed, bad = 0, None
    while bad is None and fed < 10 * MAX_HEAD:
        bad = r.feed(b"v" * 65536)
        fed += 65536
    assert isinstance(bad, BadResponse)
    assert fed <= MAX_HEAD + 65536


def test_too_many_trailers() -> None:
    r, _ = reader()
    data = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n"
    data += b"".join(b"T%d: v\r\n" % i for i in range(129)) + b"\r\n"
    bad = r.feed(data)
    assert isinstance(bad, BadResponse) and "trailer" in str(bad)


def test_field_bytes_pass_as_they_arrived() -> None:
    r, rec = reader()
    raw = 'attachment; filename="café"'.encode()
    assert (
        r.feed(b"HTTP/1.1 200 OK\r\nContent-Disposition: " + raw + b"\r\nContent-Length: 0\r\n\r\n")
        is None
    )
    assert rec.heads[0].fields[0][1].encode("utf-8", "surrogateescape") == raw


def test_connection_fields_and_a_length_with_whitespace() -> None:
    r, rec = reader()
    data = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2 \r\n\r\nok"
    assert r.feed(data) is None
    head = rec.heads[0]
    assert head.connection == ("close",) and head.content_length == 2
    assert rec.body() == b"ok" and not r.keep_alive


def test_a_protocol_switch_that_was_asked_for_keeps_its_tail() -> None:
    rec = Recorder()
    r = ResponseReader(rec)
    r.expect(True, upgrade=True)
    head = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    assert r.feed(head + b"\x81\x02hi") is None
    assert r.upgraded and r.tail == b"\x81\x02hi"
    assert [h.status for h in rec.heads] == [101]


def test_a_refused_upgrade_is_a_plain_answer() -> None:
    rec = Recorder()
    r = ResponseReader(rec)
    r.expect(True, upgrade=True)
    assert r.feed(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno") is None
    assert not r.upgraded and [h.status for h in rec.heads] == [403] and rec.body() == b"no"


def test_a_protocol_switch_nobody_asked_for_is_a_bad_response() -> None:
    r, rec = reader()
    bad = r.feed(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\nxx")
    assert isinstance(bad, BadResponse) and "101" in str(bad)
    assert rec.heads == []  # an interim answer to this request: nothing told


def test_the_upgrade_answer_is_held_to_the_head_limits() -> None:
    r = ResponseReader(Recorder())
    r.expect(True, upgrade=True)
    bad = r.feed(
        b"HTTP/1.1 101 Switching Protocols\r\n"
        + b"".join(b"F%d: v\r\n" % i for i in range(129))
        + b"\r\n"
    )
    assert isinstance(bad, BadResponse) and not r.upgraded
