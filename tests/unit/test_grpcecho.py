"""The demo gRPC echo's message framing, fed bytes: whole length-prefixed messages come out,
a partial one waits for the rest."""

from __future__ import annotations

from gateway.process.grpcecho import messages


def _frame(body: bytes) -> bytes:
    return b"\x00" + len(body).to_bytes(4, "big") + body


def test_whole_messages_come_out_and_a_partial_one_waits() -> None:
    buffer = bytearray(_frame(b"one") + _frame(b"") + _frame(b"three")[:6])
    assert messages(buffer) == [_frame(b"one"), _frame(b"")]
    assert bytes(buffer) == _frame(b"three")[:6]
    buffer += _frame(b"three")[6:]
    assert messages(buffer) == [_frame(b"three")] and not buffer


def test_byte_by_byte() -> None:
    data = _frame(b"hello") + _frame(b"x" * 300)
    buffer = bytearray()
    out = []
    for i in range(len(data)):
        buffer += data[i : i + 1]
        out += messages(buffer)
    assert out == [_frame(b"hello"), _frame(b"x" * 300)]
