"""One HTTP/1.1 connection on aiohttp's protocol, with the gateway's rules: a deadline for each
request head (slowloris), JSON errors for what the parser rejects, and every limit counted."""

from __future__ import annotations

import asyncio
import json
import secrets
from typing import Any

from aiohttp import http_exceptions, web
from aiohttp.web_protocol import RequestHandler

from gateway.log import event, server_log
from gateway.metrics import Metrics


class HeadDeadline:
    """What the deadline needs to know about its listener (changes with a reload)."""

    def __init__(self, listener: str, metrics: Metrics, seconds: float) -> None:
        self.listener = listener
        self.metrics = metrics
        self.seconds = seconds
        self.max_line_size = 8190
        self.max_field_size = 8190

    def hit(self, limit: str) -> None:
        self.metrics.limits_hit.labels(self.listener, limit).inc()


def _json_error(status: int, code: str, request_id: str) -> web.Response:
    body = json.dumps({"error": code, "route": None, "request_id": request_id})
    resp = web.Response(
        status=status,
        text=body,
        content_type="application/json",
        headers={"X-Request-Id": request_id, "Cache-Control": "no-store"},
    )
    resp.force_close()
    return resp


class GatewayRequestHandler(RequestHandler):
    """aiohttp's RequestHandler plus the head deadline and gateway-style parser errors."""

    def __init__(self, manager: web.Server, *, rules: HeadDeadline, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._rules = rules
        self._busy = False
        self._deadline: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------ the request-head deadline

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm()  # the first request must arrive in time too

    def data_received(self, data: bytes) -> None:
        if not self._busy and self._deadline is None:
            self._arm()
        super().data_received(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_later(self._rules.seconds, self._head_timed_out)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def head_received(self) -> None:
        """The pipeline got a complete request head: stop the clock until the next one."""
        self._disarm()
        self._busy = True

    def response_done(self) -> None:
        self._busy = False

    def _head_timed_out(self) -> None:
        self._deadline = None
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        self._rules.hit("header_timeout")
        peer = transport.get_extra_info("peername")
        server_log.info(
            "request head not received in time, closing",
            extra=event(
                listener=self._rules.listener,
                peer=f"{peer[0]}:{peer[1]}" if peer else "",
                header_timeout=self._rules.seconds,
            ),
        )
        request_id = secrets.token_hex(8)
        body = json.dumps({"error": "request_timeout", "route": None, "request_id": request_id})
        transport.write(
            b"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\nX-Request-Id: {request_id}\r\n".encode()
            + b"Connection: close\r\n\r\n"
            + body.encode()
        )
        transport.close()

    # ------------------------------------------------------------ parser errors

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:  # too late for an answer: let aiohttp cut it
            return super().handle_error(request, status, exc, message)
        self._disarm()
        request_id = secrets.token_hex(8)
        status, code, limit = _classify(exc, status, self._rules)
        if limit is not None:
            self._rules.hit(limit)
        self._rules.metrics.requests.labels("", "OTHER", str(status)).inc()
        peer = request.transport.get_extra_info("peername") if request.transport else None
        log = server_log.error if status >= 500 else server_log.info
        log(
            "request rejected before routing",
            exc_info=exc if status >= 500 else None,
            extra=event(
                request_id=request_id,
                listener=self._rules.listener,
                peer=f"{peer[0]}:{peer[1]}" if peer else "",
                status=status,
                error=code,
                detail=str(exc)[:300] if exc else message,
            ),
        )
        return _json_error(status, code, request_id)


def _classify(
    exc: BaseException | None, status: int, rules: HeadDeadline
) -> tuple[int, str, str | None]:
    """(status, error code, limit that bit) for what aiohttp's parser raised."""
    if isinstance(exc, http_exceptions.LineTooLong):
        limit = exc.args[1] if len(exc.args) > 1 else None
        if limit == rules.max_line_size:
            return 414, "request_line_too_long", "request_line"
        return 431, "header_too_large", "header_size"
    if isinstance(exc, http_exceptions.BadHttpMessage) and "Too many headers" in str(exc):
        return 431, "too_many_headers", "header_count"
    if isinstance(exc, http_exceptions.HttpProcessingError) or 400 <= status < 500:
        return 400, "bad_request", None
    return 500, "internal_error", None
