"""The HTTP/2 connections to one upstream host:port: at most `limit` sessions
(`upstream.h2session`), each carrying up to `max_streams` requests at once (fewer when the
upstream's SETTINGS say so). A request takes a stream on a session with room; when none has
room, one more session opens (only one at a time: the requests that arrive meanwhile wait for
it), and past the limit requests wait, in order, for a stream to end. A session without
streams closes after `idle_timeout`. The same surface as `upstream.pool.Pool`, so an exchange
does not care which protocol its target speaks."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque

from gateway.upstream.connection import ConnectTimeout
from gateway.upstream.h2call import H2Call
from gateway.upstream.h2session import H2Session
from gateway.upstream.pool import Endpoint, wake_first


class H2Pool:
    """HTTP/2 sessions to one host:port (see the module's text)."""

    def __init__(
        self, endpoint: Endpoint, limit: int, max_streams: int, idle_timeout: float = 30.0
    ) -> None:
        self.endpoint = endpoint
        self.host = endpoint.host
        self.port = endpoint.port
        self._limit = limit
        self._max_streams = max_streams
        self._idle_timeout = idle_timeout
        self.sessions: list[H2Session] = []
        self._opening: asyncio.Future[None] | None = None
        self._waiters: deque[asyncio.Future[None]] = deque()

    def take_idle(self) -> H2Call | None:
        """A stream on a session with room, if there is one."""
        now = time.monotonic()
        for session in list(self.sessions):
            if not session.calls and now - session.idle_since > self._idle_timeout:
                session.close()
        for session in self.sessions:  # the oldest first: the newest can go idle and close
            if session.has_room():
                return H2Call(session)
        return None

    async def acquire(self, connect_timeout: float) -> H2Call:
        """A stream, opening a session when none has room and the limit allows."""
        try:
            async with asyncio.timeout(connect_timeout):
                while True:
                    call = self.take_idle()
                    if call is not None:
                        return call
                    if self._opening is not None:
                        await asyncio.shield(self._opening)
                    elif len(self.sessions) < self._limit:
                        await self._open(connect_timeout)
                    else:
                        waiter = asyncio.get_running_loop().create_future()
                        self._waiters.append(waiter)
                        try:
                            await waiter
                        finally:
                            if waiter in self._waiters:
                                self._waiters.remove(waiter)
        except TimeoutError:
            raise ConnectTimeout(f"no HTTP/2 stream to {self.host}:{self.port} in time") from None

    async def _open(self, within: float) -> None:
        self._opening = opening = asyncio.get_running_loop().create_future()
        try:
            session = await self.endpoint.connect(
                lambda: H2Session(self, self._max_streams), within
            )
            if self.endpoint.tls is not None:
                tls = session.transport.get_extra_info("ssl_object") if session.transport else None
                chosen = tls.selected_alpn_protocol() if tls is not None else None
                if chosen != "h2":
                    session.close()
                    raise ssl.SSLError(
                        f"the upstream did not agree to HTTP/2 by ALPN (it chose {chosen!r})"
                    )
            try:
                await session.ready
            except BaseException:
                session.close()
                raise
            if not session.closed:
                self.sessions.append(session)
        finally:
            self._opening = None
            opening.set_result(None)

    def room_changed(self) -> None:
        """A stream ended or the upstream's SETTINGS changed: a waiter may go on."""
        wake_first(self._waiters)

    def gone(self, session: H2Session) -> None:
        if session in self.sessions:
            self.sessions.remove(session)
        self.room_changed()

    def close_idle(self) -> None:
        """A retired pool: sessions without streams close now, the others once they have none."""
        for session in list(self.sessions):
            session.going_away = True
            if not session.calls:
                session.close()

    async def close(self) -> None:
        for session in list(self.sessions):
            session.close()
        self.sessions.clear()
        await asyncio.sleep(0)  # let the transports run connection_lost
