"""The open client connections of one listener after their handshake: the listener's HTTP
server (the protocol factory, its limits, the deadline sweep and the drain), what the gateway
knows about each connection (its listener, peer, SNI, the client's identity and verified chain,
the gate of its post-handshake checks; it travels with the connection as `conn.info`), and the
active-connection gauge."""

from __future__ import annotations

import _ssl
import asyncio
import contextlib
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

from gateway.base.bounded import Bounded
from gateway.base.log import event, server_log, tls_log
from gateway.config.listener import ListenerConfig, ListenerLimits
from gateway.downstream.admission import Admission
from gateway.downstream.h1reader import Refused
from gateway.downstream.http1 import Http1Connection
from gateway.downstream.http2 import Http2Connection
from gateway.downstream.messages import (
    Answer,
    ClientChannel,
    Handler,
    Hijacked,
    Request,
    Response,
    StreamResponse,
    json_error,
    request_ids,
)
from gateway.observe.metrics import Metrics
from gateway.pki.identity import Identity, IdentityCache
from gateway.pki.tls import Failure, ServerContexts

_DER: Final = getattr(_ssl, "ENCODING_DER", 1)
_DEFAULT_LIMITS: Final = ListenerLimits()

SWEEP_SECONDS: Final = 0.25  # resolution of the head deadline and the keep-alive idle timeout


class Limits:
    """A listener's HTTP limits (a reload replaces them for new connections)."""

    def __init__(
        self,
        listener: str,
        metrics: Metrics,
        header_timeout: float = 10.0,
        keepalive_timeout: float = 60.0,
        max_request_line: int = 8190,
        max_header_size: int = 8190,
        max_headers: int = 100,
        max_connection_age: float = 3600.0,
        body_timeout: float = 20.0,
        body_min_rate: float = 500.0,
        max_concurrent_streams: int = 100,
        max_stream_resets: int = 200,
        max_control_frames: int = 1000,
        stall_timeout: float = 30.0,
    ) -> None:
        self.listener = listener
        # HTTP/2 (per connection; the two budgets per h2limits.WINDOW_SECONDS)
        self.max_concurrent_streams = max_concurrent_streams
        self.max_stream_resets = max_stream_resets
        self.max_control_frames = max_control_frames
        self.stall_timeout = stall_timeout
        self.max_connection_age = max_connection_age
        # a request body must arrive within body_timeout, extended by a second for every
        # body_min_rate bytes received (Apache mod_reqtimeout's rule): a fast upload of any
        # size passes, a body that never comes or trickles is cut with 408
        self.body_timeout = body_timeout
        self.body_min_rate = body_min_rate
        self.metrics = metrics
        self.header_timeout = header_timeout
        self.keepalive_timeout = keepalive_timeout
        self.max_request_line = max_request_line
        self.max_header_size = max_header_size
        self.max_headers = max_headers

    def hit(self, limit: str) -> None:
        self.metrics.limits_hit.labels(self.listener, limit).inc()

    def refused(self, refused: Refused, peer: tuple[str, int] | None) -> str:
        """Count and log a request refused before routing; its request id."""
        if refused.limit is not None:
            self.hit(refused.limit)
        request_id = request_ids.next()
        self.metrics.requests.labels("", "OTHER", str(refused.status)).inc()
        server_log.info(
            "request rejected before routing",
            extra=event(
                request_id=request_id,
                listener=self.listener,
                peer=f"{peer[0]}:{peer[1]}" if peer else "",
                status=refused.status,
                error=refused.code,
                detail=str(refused)[:300],
            ),
        )
        return request_id


class HttpServer:
    """The connections of one listener: the protocol factory, their deadlines, and a drain."""

    def __init__(self, handler: Handler, limits: Limits) -> None:
        self.handler = handler
        self.limits = limits
        self.connections: set[ClientChannel] = set()
        self.closing = False
        self._sweeper: asyncio.Task[None] | None = None
        self._all_closed: asyncio.Event | None = None

    def serve(self, request: Request) -> None:
        """Hand `request` to the handler; its answer reaches `request.protocol.respond` now
        or later from the handler, or from a task that awaits it (HTTP/1.1 and HTTP/2 alike)."""
        try:
            pending = self.handler(request)
        except Exception:  # the pipeline answers its own errors: this is a bug
            server_log.exception("request handling failed")
            request.protocol.respond(request, internal_error())
            return
        if pending is not None:
            asyncio.get_running_loop().create_task(_answer(request, pending))

    def __call__(self) -> Http1Connection:
        return Http1Connection(self, self.limits)

    def connection_made(self, conn: ClientChannel, transport: asyncio.Transport) -> None:
        self.connections.add(conn)
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    def connection_lost(self, conn: ClientChannel) -> None:
        self.connections.discard(conn)
        if not self.connections and self._all_closed is not None:
            self._all_closed.set()

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            now = loop.time()
            for conn in [c for c in self.connections if c.deadline_kind and c.deadline <= now]:
                conn.expire()

    async def shutdown(self, drain_seconds: float) -> None:
        """Idle connections close now, busy ones after their answer; after `drain_seconds` the
        rest (long downloads, WebSocket tunnels) are cut."""
        self.closing = True
        self._all_closed = asyncio.Event()
        for conn in list(self.connections):
            if conn.is_idle():
                conn.close()
        if self.connections:
            try:
                async with asyncio.timeout(drain_seconds):
                    await self._all_closed.wait()
            except TimeoutError:
                for conn in list(self.connections):
                    conn.abort()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None


class ListenerSettings:
    """What a listener's connections take from the config, read from the snapshot once, when
    a connection is accepted, and kept for its life: the TLS context (renewed within its
    session bounds), the handshake timeouts, the listener's limits, the HTTP limits and the
    post-handshake checks. A reload makes new ones for the connections accepted after it."""

    __slots__ = (
        "admission",
        "client_hello_timeout",
        "handshake_timeout",
        "http",
        "limits",
        "tls",
    )

    def __init__(
        self,
        name: str,
        cfg: ListenerConfig,
        tls: ServerContexts,
        admission: Admission | None,
        metrics: Metrics,
    ) -> None:
        self.tls = tls
        self.admission = admission
        self.handshake_timeout = cfg.tls.handshake_timeout
        self.client_hello_timeout = cfg.tls.client_hello_timeout
        limits = self.limits = cfg.limits
        self.http = Limits(
            name,
            metrics,
            header_timeout=limits.header_timeout,
            keepalive_timeout=limits.keepalive_timeout,
            max_request_line=limits.max_request_line,
            max_header_size=limits.max_header_size,
            max_headers=limits.max_headers,
            max_connection_age=limits.max_connection_age,
            body_timeout=limits.body_timeout,
            body_min_rate=float(limits.body_min_rate),
            max_concurrent_streams=limits.max_concurrent_streams,
            max_stream_resets=limits.max_stream_resets,
            max_control_frames=limits.max_control_frames,
            stall_timeout=limits.stall_timeout,
        )


@dataclass
class ConnInfo:
    """What the gateway knows about one open connection, fixed at handshake time."""

    listener: str
    peer_ip: str
    sni: str | None
    identity: Identity | None
    chain: tuple[bytes, ...]
    # post-handshake checks (strict profile, OCSP): requests wait for it; None = nothing to wait for
    gate: asyncio.Future[Failure | None] | None = None
    limits: ListenerLimits = _DEFAULT_LIMITS  # the listener's, as they were at accept

    def passed(self) -> bool:
        """Nothing to wait for: no post-handshake check, or one that passed."""
        gate = self.gate
        if gate is None:
            return True
        return (
            gate.done()
            and not gate.cancelled()
            and gate.exception() is None
            and gate.result() is None
        )


class ListenerConnections(HttpServer):
    """The listener's HTTP server, plus per-connection identity and the active-connection gauge."""

    def __init__(
        self, handler: Handler, listener: str, metrics: Metrics, identities: IdentityCache
    ) -> None:
        super().__init__(handler, Limits(listener, metrics))
        self.listener = listener
        self._metrics = metrics
        self.on_close: Callable[[], None] = lambda: None  # the listener's: capacity is back
        self.conns: dict[ClientChannel, ConnInfo] = {}
        self._identities = identities
        self._chains: Bounded[str, tuple[bytes, ...]] = Bounded(4096)
        gauge = metrics.connections_active
        self._active = {p: gauge.labels(listener, p) for p in ("HTTP/1.1", "HTTP/2")}

    def open(
        self, settings: ListenerSettings, transport: asyncio.Transport
    ) -> Http1Connection | Http2Connection:
        """The HTTP connection of a completed handshake, under the settings of its accept: the
        protocol the client chose by ALPN."""
        ssl_obj: ssl.SSLObject | None = transport.get_extra_info("ssl_object")
        conn: Http1Connection | Http2Connection
        if ssl_obj is not None and ssl_obj.selected_alpn_protocol() == "h2":
            conn = Http2Connection(self, settings.http)
        else:
            conn = Http1Connection(self, settings.http)
        conn.settings = settings
        return conn

    def connection_made(self, conn: ClientChannel, transport: asyncio.Transport) -> None:
        super().connection_made(conn, transport)
        ssl_obj: ssl.SSLObject | None = transport.get_extra_info("ssl_object")
        peer = transport.get_extra_info("peername")
        identity = None
        chain: tuple[bytes, ...] = ()
        sni: str | None = transport.get_extra_info("sni")
        if ssl_obj is not None:
            der = ssl_obj.getpeercert(binary_form=True)
            if der:
                try:
                    identity = self._identities.get(der)
                except ValueError as exc:  # OpenSSL accepted it, cryptography cannot read it
                    tls_log.warning("client certificate unreadable", extra=event(error=str(exc)))
                if identity is not None:
                    chain = self._chain_of(ssl_obj, identity)
                    if not ssl_obj.session_reused:
                        remaining = identity.not_after - time.time()
                        self._metrics.client_cert_remaining.observe(max(remaining, 0.0))

        info = ConnInfo(self.listener, peer[0] if peer else "", sni, identity, chain)
        settings = conn.settings
        admission = None
        if settings is not None:
            info.limits = settings.limits
            admission = settings.admission
        if identity is not None and admission is not None and admission.needed:
            loop = asyncio.get_running_loop()
            known = admission.settled(identity)
            if known is None:
                info.gate = loop.create_task(admission.check(identity, chain))
            elif known[0] is not None:  # a returning client already rejected: no task
                info.gate = loop.create_future()
                info.gate.set_result(known[0])
            # else: a returning client already admitted, nothing to wait for
        self.conns[conn] = info
        conn.info = info
        self._active[_protocol(conn)].inc()

    def _chain_of(self, ssl_obj: ssl.SSLObject, identity: Identity) -> tuple[bytes, ...]:
        """Intermediates the client's chain verified through (private API on 3.11; cached)."""
        cached = self._chains.get(identity.sha256)
        if cached is not None:
            return cached
        getter = getattr(getattr(ssl_obj, "_sslobj", None), "get_verified_chain", None)
        try:
            certs = getter() if getter is not None else None
            ders = [c.public_bytes(_DER) for c in certs[1:]] if certs else []
        except (AttributeError, ValueError, ssl.SSLError):
            return ()
        if not ders:  # resumed sessions have no chain
            return ()
        chain = tuple(ders[:-1])  # drop the trust anchor at the end
        return self._chains.put(identity.sha256, chain)

    def connection_lost(self, conn: ClientChannel) -> None:
        super().connection_lost(conn)
        if self.conns.pop(conn, None) is not None:
            self._active[_protocol(conn)].dec()
        self.on_close()


def _protocol(conn: ClientChannel) -> str:
    return "HTTP/2" if isinstance(conn, Http2Connection) else "HTTP/1.1"


def internal_error() -> Response:
    """The answer to a request the pipeline failed on (a gateway bug, logged by the caller)."""
    answer = json_error(500, "internal_error", request_ids.next())
    answer.force_close()
    return answer


async def _answer(request: Request, pending: Awaitable[Answer]) -> None:
    try:
        answer = await pending
    except Exception:  # the pipeline answers its own errors: this is a bug
        server_log.exception("request handling failed")
        answer = internal_error()
    if isinstance(answer, Hijacked):
        return  # the tunnel owns the connection until it closes
    if isinstance(answer, StreamResponse):
        if not answer.prepared:
            await answer.prepare(request)
        await answer.write_eof()
    request.protocol.respond(request, answer)
