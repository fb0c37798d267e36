"""A body's buffer: taking a whole body at once, and the reader it paused resumed then."""

from __future__ import annotations

from gateway.http.bytestream import HIGH_WATER, LOW_WATER, ByteStream


class Reader:
    """Records what the stream asks of the connection feeding it."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def pause_reading(self) -> None:
        self.calls.append("pause")

    def resume_reading(self) -> None:
        self.calls.append("resume")


def test_one_piece_is_taken_as_it_came_and_the_reader_is_left_alone() -> None:
    reader = Reader()
    stream = ByteStream(reader)
    piece = b"x" * 100
    stream.feed(piece)
    stream.feed_eof()
    assert stream.take_all() is piece
    assert reader.calls == []
    assert stream.take_all() == b""


def test_pieces_are_joined_in_order() -> None:
    stream = ByteStream(Reader())
    for piece in (b"ab", b"cd", b"ef"):
        stream.feed(piece)
    assert stream.take_all() == b"abcdef"


def test_a_reader_paused_by_a_full_stream_is_resumed_when_it_is_taken() -> None:
    reader = Reader()
    stream = ByteStream(reader)
    piece = b"y" * (LOW_WATER // 2)
    while not reader.calls:
        stream.feed(piece)
    assert reader.calls == ["pause"]
    data = stream.take_all()
    assert len(data) > HIGH_WATER
    assert reader.calls == ["pause", "resume"]


def test_a_stream_below_the_low_water_mark_does_not_resume_its_reader() -> None:
    """Below it the stream cannot have paused the reader (it resumes it there on reading)."""
    reader = Reader()
    stream = ByteStream(reader)
    stream.feed(b"z" * (LOW_WATER - 1))
    stream.feed(b"z")
    assert stream.take_all() == b"z" * LOW_WATER
    assert reader.calls == ["resume"]
    stream.feed(b"z" * (LOW_WATER - 1))
    assert len(stream.take_all()) == LOW_WATER - 1
    assert reader.calls == ["resume"]
