"""The access log, cheap: one JSON line per request, built straight from what the exchange
holds and written in batches off the request path.

Through `logging`, a line cost a LogRecord, a dict, `json.dumps` and a write system call per
request: about as much CPU as the request itself. Here the line is one f-string whose strings
go through the C JSON string encoder, the lines wait in a list, and they are written to the
same stream as every other log line (`log.HANDLER`'s) once the batch is `FLUSH_BYTES` long or `FLUSH_SECONDS`
after its first line, and at stop (`flush`, also at exit): nothing is lost.

The line is the same JSON the logging formatter writes (`ts`, `level`, `logger`, `msg`, then
the fields). Whoever attaches a handler of their own to the `gateway.access` logger gets
records as before, through `logging`."""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import time
from json.encoder import encode_basestring
from typing import Final, TextIO

from gateway.base import log
from gateway.base.log import ACCESS, access_log, event

FLUSH_SECONDS: Final = 0.2
FLUSH_BYTES: Final = 64 * 1024
# "000" to "999": the line's millisecond parts without a format spec (compiled, an f-string
# with one becomes a str.format of the whole line)
_MILLIS: Final = tuple(f"{i:03d}" for i in range(1000))
# a request's HTTP version as the access line names it
PROTOCOLS: Final = {(2, 0): "HTTP/2", (1, 1): "HTTP/1.1", (1, 0): "HTTP/1.0"}


def _str(value: str | None) -> str:
    return "null" if value is None else encode_basestring(value)


def _ms(seconds: float | None) -> str:
    """Seconds as milliseconds with three decimals, a JSON number (integer arithmetic: a
    float's shortest repr, and round(), cost more than the rest of the line)."""
    if seconds is None:
        return "null"
    us = int(seconds * 1_000_000)
    return f"{us // 1000}.{_MILLIS[us % 1000]}"


class AccessLog:
    """Access lines for one process: built here, written by `log.setup`'s handler's stream."""

    def __init__(self) -> None:
        self._lines: list[str] = []
        self._size = 0
        self._armed = False
        self._second = -1
        self._stamp = ""
        # where to write: log.setup's handler's stream (None: through logging only)
        self.stream: TextIO | None = None
        atexit.register(self.flush)

    def enabled(self) -> bool:
        return not access_log.disabled and access_log.isEnabledFor(logging.INFO)

    def request(
        self,
        request_id: str,
        listener: str,
        route: str,
        method: str,
        path: str,
        protocol: str,
        status: int,
        upstream: str,
        duration: float,
        upstream_seconds: float | None,
        dropped: list[str] | None,
        peer: str | None,
        sni: str | None,
        subject: str | None,
        sha256: str | None,
    ) -> None:
        """Log one answered request (the caller checked `enabled`). `listener`, `route` and
        `upstream` are config names (their pattern leaves nothing to escape in JSON), and
        `protocol` one of `PROTOCOLS`."""
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        dropped_field = (
            ', "dropped_headers": [' + ", ".join(map(encode_basestring, dropped)) + "]"
            if dropped
            else ""
        )
        client = (
            f', "peer": {_str(peer)}, "sni": {_str(sni)}, "client_subject": {_str(subject)}, '
            f'"client_sha256": {_str(sha256)}'
            if peer is not None
            else ""
        )
        # the separators json.dumps writes, as in every other log line
        line = (
            f'{{"ts": "{self._stamp}.{_MILLIS[int((now - second) * 1000)]}Z", "level": "info", '
            f'"logger": "{ACCESS}", "msg": "request", "request_id": {_str(request_id)}, '
            f'"listener": "{listener}", "route": "{route}", "method": {_str(method)}, '
            f'"path": {_str(path)}, "protocol": "{protocol}", "status": {status}, '
            f'"upstream": "{upstream}", '
            f'"duration_ms": {_ms(duration)}, "upstream_ms": {_ms(upstream_seconds)}'
            f"{dropped_field}{client}}}\n"
        )
        if access_log.handlers or (self.stream is None and log.HANDLER is None):
            # a handler of someone's own: a record, with the line's fields (rare, not fast)
            fields = json.loads(line)
            for key in ("ts", "level", "logger", "msg"):
                del fields[key]
            access_log.info("request", extra=event(**fields))
            return
        line = log.one_line(line)
        self._lines.append(line)
        self._size += len(line)
        if self._size >= FLUSH_BYTES:
            self.flush()
        elif not self._armed:
            self._arm()

    def _arm(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # outside an event loop: nothing would flush later
            self.flush()
            return
        self._armed = True
        loop.call_later(FLUSH_SECONDS, self._timer)

    def _timer(self) -> None:
        self._armed = False
        self.flush()

    def flush(self) -> None:
        """Write every waiting line now."""
        if not self._lines:
            return
        data = "".join(self._lines)
        self._lines.clear()
        self._size = 0
        handler = log.HANDLER
        stream = self.stream or (handler.stream if handler is not None else None)
        if stream is None:
            return
        if handler is not None:
            handler.acquire()  # its lock guards the stream the other log lines share
        try:
            stream.write(data)
            stream.flush()
        except (OSError, ValueError):  # a closed or broken stream: as logging would, go on
            pass
        finally:
            if handler is not None:
                handler.release()


access_lines: Final = AccessLog()
