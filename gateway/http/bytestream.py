"""A body arriving from a socket, read as it comes (and chunked framing for one leaving): bounded buffering (the socket stops being
read above a high-water mark and resumes below a low one), end, failure, optional wait limit.
Request bodies (`http1.py`) and upstream answers (`upstream/connection.py`) both use it."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Final, Protocol

HIGH_WATER: Final = 256 * 1024
LOW_WATER: Final = 64 * 1024


def chunk(data: bytes) -> bytes:
    """One piece of a chunked body."""
    return b"%x\r\n%b\r\n" % (len(data), data)


def last_chunk(trailers: list[tuple[str, str]]) -> bytes:
    """The end of a chunked body, with its trailer fields."""
    lines = "".join(f"{k}: {v}\r\n" for k, v in trailers)
    return f"0\r\n{lines}\r\n".encode("utf-8", "surrogateescape")


class Reader(Protocol):
    """The connection feeding the stream."""

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


def expire(fut: asyncio.Future[Any]) -> None:
    """Timer callback: the wait for `fut` is over (TimeoutError), unless it is done already."""
    if not fut.done():
        fut.set_exception(TimeoutError())


class ByteStream:
    __slots__ = ("_chunks", "_eof", "_error", "_reader", "_size", "_waiter")

    def __init__(self, reader: Reader) -> None:
        self._reader = reader
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._eof = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None

    @property
    def complete(self) -> bool:
        return self._eof

    @property
    def size(self) -> int:
        """The bytes buffered, not yet read."""
        return self._size

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        if self._size > HIGH_WATER:
            self._reader.pause_reading()
        self._wake()

    def feed_eof(self) -> None:
        self._eof = True
        self._wake()

    def fail(self, exc: BaseException) -> None:
        if not self._eof:
            self._error = exc
            self._wake()

    async def readany(self, within: float | None = None) -> bytes:
        """The next piece (b"" at the end); TimeoutError when nothing arrives `within` s."""
        while not self._chunks:
            if self._eof:
                return b""
            if self._error is not None:
                raise self._error
            loop = asyncio.get_running_loop()
            self._waiter = waiter = loop.create_future()
            timer = loop.call_later(within, expire, waiter) if within is not None else None
            try:
                await waiter
            finally:
                if timer is not None:
                    timer.cancel()
                self._waiter = None
        data = self._chunks.popleft()
        self._size -= len(data)
        if self._size < LOW_WATER:
            self._reader.resume_reading()
        return data

    async def read(self) -> bytes:
        """Everything, to the end."""
        parts = []
        while chunk := await self.readany():
            parts.append(chunk)
        return b"".join(parts)

    def take_all(self) -> bytes:
        """What is buffered, at once (the whole body once it is complete)."""
        chunks = self._chunks
        data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        if self._size >= LOW_WATER:  # below it, this stream has not paused its reader
            self._reader.resume_reading()
        self._size = 0
        return data


class FlowControl(asyncio.Protocol):
    """For a protocol: stop reading its transport while a stream is full, and wait for what it
    wrote to drain. The protocol sets `transport` and `closed`, and calls `_wake_drain()` when
    its connection is lost.

    Its attributes are set in `__init__`, not as class-level defaults: compiled (setup.py), a
    reference held in such a default is invisible to the garbage collector, so a closed
    connection's cycle (protocol, transport) would never be freed."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._reading_paused = False
        self._write_paused = False
        self._drain: asyncio.Future[None] | None = None

    def pause_reading(self) -> None:
        if not self._reading_paused and self.transport is not None and not self.closed:
            self._reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._reading_paused and self.transport is not None and not self.closed:
            self._reading_paused = False
            self.transport.resume_reading()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake_drain()

    def _wake_drain(self) -> None:
        drain = self._drain
        if drain is not None:
            self._drain = None
            if not drain.done():
                drain.set_result(None)

    async def drain(self) -> None:
        """Until the transport takes more (returns at once when it is closed)."""
        if self._write_paused and not self.closed:
            self._drain = asyncio.get_running_loop().create_future()
            await self._drain
