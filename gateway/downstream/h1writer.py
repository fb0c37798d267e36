"""What an answer looks like on an HTTP/1.1 connection, as bytes: the head, a whole answer, and
the framing of one whose body comes in pieces (its length, chunks with trailers, or the
connection's close). Pure: `http1` writes what this returns."""

from __future__ import annotations

from gateway.downstream.messages import (
    DATES,
    NO_BODY,
    Fields,
    Request,
    Response,
    StreamResponse,
    json_error,
    reason_phrase,
)
from gateway.http.bytestream import chunk, last_chunk

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def serialize_head(status: int, reason: str, headers: Fields, extra: str = "") -> bytes:
    """The status line and headers (Date added when missing), ready for the wire: joined from
    the pairs as they are (a multidict and f-strings per field cost twice as much)."""
    parts = [f"HTTP/1.1 {status} {reason}\r\n"]
    dated = False
    for name, value in headers:
        if not dated and len(name) == 4 and name.lower() == "date":
            dated = True
        parts.append(name)
        parts.append(": ")
        parts.append(value)
        parts.append("\r\n")
    if not dated:
        parts.append(f"Date: {DATES.now()}\r\n")
    parts.append(extra)
    parts.append("\r\n")
    return "".join(parts).encode("utf-8", "surrogateescape")


def closing_error(status: int, code: str, request_id: str) -> bytes:
    """A JSON error answer after which the connection closes, ready for the wire."""
    error = json_error(status, code, request_id)
    framing = f"Content-Length: {len(error.body)}\r\nConnection: close\r\n"
    head = serialize_head(status, reason_phrase(status), error.headers, framing)
    return b"".join((head, error.body))  # not `+`: see BYTES_CONCAT


def whole_answer(request: Request, answer: Response, keep_alive: bool) -> bytes:
    """Head and body of a whole answer. An answer that does not keep the connection alive, or
    one sent before the request's body was all read (a refusal), says `Connection: close`, and
    `answer.keep_alive` says so too."""
    body = answer.body
    if request.method == "HEAD" or answer.status in NO_BODY:
        framing = "" if answer.status in NO_BODY else f"Content-Length: {len(body)}\r\n"
        body = b""
    else:
        framing = f"Content-Length: {len(body)}\r\n"
    if not answer.keep_alive or not request.complete or not keep_alive:
        answer.keep_alive = False
        framing += "Connection: close\r\n"
    head = serialize_head(answer.status, answer.reason, answer.headers, framing)
    return b"".join((head, body)) if body else head  # not `+`: messages.BYTES_CONCAT


def stream_head(request: Request, answer: StreamResponse, keep_alive: bool) -> bytes:
    """The head of an answer whose body follows; picks its framing (`answer.mode`)."""
    if request.method == "HEAD" or answer.status in NO_BODY or answer.status < 200:
        answer.mode = "none"
        framing = (
            f"Content-Length: {answer.content_length}\r\n"
            if answer.content_length is not None and request.method == "HEAD"
            else ""
        )
    elif answer.content_length is not None:
        answer.mode = "length"
        framing = f"Content-Length: {answer.content_length}\r\n"
    elif request.version >= (1, 1):
        answer.mode = "chunked"
        framing = "Transfer-Encoding: chunked\r\n"
    else:
        answer.mode = "close"
        answer.keep_alive = False
        framing = ""
    if not answer.keep_alive or not keep_alive:
        framing += "Connection: close\r\n"
        answer.keep_alive = False
    return serialize_head(answer.status, answer.reason, answer.headers, framing)


def stream_piece(answer: StreamResponse, data: bytes) -> bytes:
    """A piece of its body as framed (nothing for an answer without a body)."""
    if answer.mode == "none":
        return b""
    return chunk(data) if answer.mode == "chunked" else data


def stream_tail(answer: StreamResponse, trailers: Fields) -> bytes:
    """The end of its body: the last chunk and the trailers, when chunked."""
    return last_chunk(trailers) if answer.mode == "chunked" else b""
