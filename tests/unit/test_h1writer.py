"""HTTP/1.1 answers as bytes (`h1writer`): whole answers, streamed ones in each framing."""

from __future__ import annotations

from gateway.downstream import h1writer
from gateway.downstream.messages import ClientStream, Request, Response, StreamResponse


def _request(method: str = "GET", version: tuple[int, int] = (1, 1)) -> Request:
    request = Request(ClientStream(), method, "/", version, [("Host", "a")], True, False)
    request.end()
    return request


def _head(data: bytes) -> list[bytes]:
    return data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")


def test_a_whole_answer_has_its_length_and_keeps_the_connection() -> None:
    data = h1writer.whole_answer(_request(), Response(200, body=b"hello"), True)
    head = _head(data)
    assert head[0] == b"HTTP/1.1 200 OK"
    assert b"Content-Length: 5" in head and not any(h.startswith(b"Connection") for h in head)
    assert data.endswith(b"\r\n\r\nhello")


def test_a_head_answer_says_the_length_and_sends_no_body() -> None:
    data = h1writer.whole_answer(_request("HEAD"), Response(200, body=b"hello"), True)
    assert b"Content-Length: 5" in _head(data) and data.endswith(b"\r\n\r\n")


def test_204_and_304_carry_neither_length_nor_body() -> None:
    for status in (204, 304):
        data = h1writer.whole_answer(_request(), Response(status, body=b"x"), True)
        assert not any(h.startswith(b"Content-Length") for h in _head(data))
        assert data.endswith(b"\r\n\r\n")


def test_an_answer_before_the_whole_request_closes_the_connection() -> None:
    request = Request(ClientStream(), "POST", "/", (1, 1), [("Host", "a")], True, False)
    answer = Response(413, body=b"{}")
    data = h1writer.whole_answer(request, answer, True)  # the body never ended
    assert b"Connection: close" in _head(data) and not answer.keep_alive


def test_streamed_answers_pick_their_framing() -> None:
    chunked = StreamResponse(200)
    head = h1writer.stream_head(_request(), chunked, True)
    assert b"Transfer-Encoding: chunked" in _head(head) and chunked.mode == "chunked"
    assert h1writer.stream_piece(chunked, b"abc") == b"3\r\nabc\r\n"
    assert h1writer.stream_tail(chunked, [("X-T", "1")]) == b"0\r\nX-T: 1\r\n\r\n"

    sized = StreamResponse(200)
    sized.content_length = 3
    assert b"Content-Length: 3" in _head(h1writer.stream_head(_request(), sized, True))
    assert h1writer.stream_piece(sized, b"abc") == b"abc"
    assert h1writer.stream_tail(sized, []) == b""

    old = StreamResponse(200)  # HTTP/1.0, no length: delimited by the close
    assert b"Connection: close" in _head(h1writer.stream_head(_request(version=(1, 0)), old, True))
    assert old.mode == "close" and not old.keep_alive

    head_only = StreamResponse(200)
    h1writer.stream_head(_request("HEAD"), head_only, True)
    assert head_only.mode == "none" and h1writer.stream_piece(head_only, b"abc") == b""
