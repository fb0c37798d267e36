"""The pure parts of HTTP/2 on the listeners: an answer's head as HTTP/2 fields, the budgets
of resets and control frames, and the limit each of h2's protocol errors is counted under."""

from __future__ import annotations

import h2.exceptions

from gateway.downstream.h2limits import WINDOW_SECONDS, Budget, limit_of
from gateway.downstream.h2stream import h2_fields


def test_an_answer_head_keeps_its_bytes_and_drops_what_http2_forbids() -> None:
    fields = [
        ("Content-Type", "text/plain"),
        ("Connection", "keep-alive"),
        ("Keep-Alive", "timeout=5"),
        ("Transfer-Encoding", "chunked"),
        ("Content-Length", "99"),
        ("X-Name", 'filename="caf\udcc3\udca9"'),  # bytes as they came (surrogateescape)
        ("Date", "Sun, 06 Dec 2026 00:00:00 GMT"),
    ]
    out = h2_fields(200, fields, 5)
    assert out[0] == (b":status", b"200")
    names = [k for k, _ in out]
    assert b"connection" not in names and b"keep-alive" not in names
    assert b"transfer-encoding" not in names
    assert (b"content-length", b"5") in out and (b"content-length", b"99") not in out
    assert (b"x-name", b'filename="caf\xc3\xa9"') in out
    assert names.count(b"date") == 1  # the upstream's, not a second one


def test_a_head_without_a_date_gets_one_and_no_length_when_unknown() -> None:
    out = h2_fields(204, [], None)
    assert [k for k, _ in out] == [b":status", b"date"]


def test_a_budget_allows_its_count_per_window_then_refuses() -> None:
    budget = Budget(3)
    assert [budget.spend(100.0) for _ in range(4)] == [True, True, True, False]
    assert budget.spend(100.0 + WINDOW_SECONDS)  # a new window starts afresh


def test_each_protocol_error_has_its_limit() -> None:
    assert limit_of(h2.exceptions.TooManyStreamsError("x")) == "h2_streams"
    assert limit_of(h2.exceptions.DenialOfServiceError("x")) == "h2_header_list"
    assert limit_of(h2.exceptions.ProtocolError("Too many continuation frames received.")) == (
        "h2_continuation"
    )
    assert limit_of(h2.exceptions.FlowControlError("x")) == "h2_flow_control"
    assert limit_of(h2.exceptions.ProtocolError("anything else")) == "h2_protocol"
