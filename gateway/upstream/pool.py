"""The keep-alive connections to one upstream host:port: at most `limit` open, idle ones
reused most recently first and closed after `idle_timeout`, waiters served in order as
connections come free. Each connection is an `upstream.connection.Connection`."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import Callable
from typing import TypeVar

from gateway.upstream.connection import Connection, ConnectTimeout

P = TypeVar("P", bound=asyncio.BaseProtocol)


def wake_first(waiters: deque[asyncio.Future[None]]) -> None:
    """Let the longest-waiting request that still waits go on."""
    while waiters:
        waiter = waiters.popleft()
        if not waiter.done():
            waiter.set_result(None)
            return


class Endpoint:
    """Where a target's connections go: host:port, over TLS (verifying `server_hostname`) when
    there is a context. Both protocols' pools open their connections through it."""

    def __init__(
        self, host: str, port: int, tls: ssl.SSLContext | None, server_hostname: str | None
    ) -> None:
        self.host = host
        self.port = port
        self.tls = tls
        self.server_hostname = server_hostname if tls is not None else None

    async def connect(self, factory: Callable[[], P], within: float) -> P:
        """A connection whose protocol `factory` makes; ConnectTimeout after `within` s."""
        try:
            async with asyncio.timeout(within):
                _, protocol = await asyncio.get_running_loop().create_connection(
                    factory,
                    self.host,
                    self.port,
                    ssl=self.tls,
                    server_hostname=self.server_hostname,
                )
        except TimeoutError:
            raise ConnectTimeout(f"connect to {self.host}:{self.port} timed out") from None
        return protocol


class Pool:
    """Keep-alive connections to one host:port, at most `limit` open (0: no limit)."""

    def __init__(self, endpoint: Endpoint, limit: int, idle_timeout: float = 30.0) -> None:
        self.endpoint = endpoint
        self.host = endpoint.host
        self.port = endpoint.port
        self._limit = limit
        self._idle_timeout = idle_timeout
        self._idle: list[Connection] = []
        self._open = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._all: set[Connection] = set()

    def take_idle(self) -> Connection | None:
        """A kept-alive connection ready for a request, if there is one."""
        self._expire_idle(time.monotonic())  # not the loop's: asking for it costs a getpid()
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed:
                return conn
        return None

    async def acquire(self, connect_timeout: float) -> Connection:
        loop = asyncio.get_running_loop()
        while True:
            conn = self.take_idle()
            if conn is not None:
                return conn
            if not self._limit or self._open < self._limit:
                break
            waiter = loop.create_future()
            self._waiters.append(waiter)
            try:
                async with asyncio.timeout(connect_timeout):
                    await waiter
            except TimeoutError:
                raise ConnectTimeout(f"no free connection to {self.host}:{self.port}") from None
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        self._open += 1
        try:
            conn = await self._connect(connect_timeout, pooled=True)
        except BaseException:
            self._slot_freed()
            raise
        self._all.add(conn)
        return conn

    async def open_fresh(self, connect_timeout: float) -> Connection:
        """A connection of its own for one exchange (an upgrade that becomes a tunnel): not
        counted against the limit, never kept."""
        return await self._connect(connect_timeout, pooled=False)

    async def _connect(self, connect_timeout: float, pooled: bool) -> Connection:
        return await self.endpoint.connect(lambda: Connection(self, pooled), connect_timeout)

    def _slot_freed(self) -> None:
        self._open -= 1
        wake_first(self._waiters)

    def _expire_idle(self, now: float) -> None:
        while self._idle and now - self._idle[0].idle_since > self._idle_timeout:
            self._idle.pop(0).close()

    def release(self, conn: Connection, reuse: bool) -> None:
        if not reuse or not conn.pooled:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        self._idle.append(conn)
        wake_first(self._waiters)

    def gone(self, conn: Connection) -> None:
        """Called once per connection when its transport has closed."""
        if conn in self._all:
            self._all.discard(conn)
            if conn in self._idle:
                self._idle.remove(conn)
            self._slot_freed()

    def close_idle(self) -> None:
        """Close the connections no request is using (a retired pool takes no new ones)."""
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    async def close(self) -> None:
        for conn in list(self._all):
            conn.close()
        self._idle.clear()
        if self._all:
            await asyncio.sleep(0)  # let the transports run connection_lost
