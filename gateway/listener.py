"""Accept + TLS handshake we drive ourselves: every failure classified, counted, logged, alerted."""

from __future__ import annotations

import _ssl
import asyncio
import contextlib
import errno
import socket
import ssl
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from functools import partial
from typing import Any

from gateway.activity import Activity
from gateway.admission import Admission
from gateway.config import ListenerLimits
from gateway.http1 import Handler, Http1Connection, Http1Server, Limits
from gateway.identity import Identity, IdentityCache
from gateway.log import event, tls_log
from gateway.metrics import Metrics
from gateway.tls import Failure, classify
from gateway.tlsconn import TlsTransport, handshake

_DER = getattr(_ssl, "ENCODING_DER", 1)


@dataclass
class HandshakeState:
    """Filled in while one handshake runs (the SNI callback and connection_made see it)."""

    sni: str | None = None
    conn: ConnInfo | None = None  # set by connection_made once the handshake succeeded


# Protocol callbacks run in a copy of the context of the task that created the transport, so
# the handshake task's state reaches the SNI callback and connection_made without a lookup.
_HANDSHAKE: ContextVar[HandshakeState | None] = ContextVar("handshake", default=None)


def record_sni(_ssl_obj: ssl.SSLObject, server_name: str | None, _ctx: ssl.SSLContext) -> None:
    """`SSLContext.sni_callback`: remember the name the client asked for."""
    state = _HANDSHAKE.get()
    if state is not None and server_name:
        state.sni = server_name.lower().rstrip(".")


@dataclass
class ConnInfo:
    """What the gateway knows about one open connection, fixed at handshake time."""

    listener: str
    peer_ip: str
    sni: str | None
    identity: Identity | None
    chain: tuple[bytes, ...]
    # post-handshake checks (strict profile, OCSP): requests wait for it; None = nothing to wait for
    gate: asyncio.Task[Failure | None] | None = None


class ConnectionTracker(Http1Server):
    """The listener's HTTP server, plus per-connection identity and the active-connection gauge."""

    def __init__(
        self,
        handler: Handler,
        listener: str,
        metrics: Metrics,
        identities: IdentityCache,
        admission: Callable[[], Admission | None] = lambda: None,
    ) -> None:
        super().__init__(handler, Limits(listener, metrics))
        self.listener = listener
        self._metrics = metrics
        self.apply_limits(ListenerLimits())
        self._admission = admission
        self.capacity = asyncio.Event()  # set whenever a connection closes
        self.conns: dict[Http1Connection, ConnInfo] = {}
        self._identities = identities
        self._chains: dict[str, tuple[bytes, ...]] = {}
        self._active = metrics.connections_active.labels(listener)

    def apply_limits(self, limits: ListenerLimits) -> None:
        """HTTP limits for connections accepted from now on (a reload calls it again)."""
        self.limits = Limits(
            self.listener,
            self._metrics,
            header_timeout=limits.header_timeout,
            keepalive_timeout=limits.keepalive_timeout,
            max_request_line=limits.max_request_line,
            max_header_size=limits.max_header_size,
            max_headers=limits.max_headers,
        )

    def connection_made(self, conn: Http1Connection, transport: asyncio.Transport) -> None:
        super().connection_made(conn, transport)
        ssl_obj: ssl.SSLObject | None = transport.get_extra_info("ssl_object")
        peer = transport.get_extra_info("peername")
        identity = None
        chain: tuple[bytes, ...] = ()
        state = _HANDSHAKE.get()
        sni = state.sni if state is not None else None
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
        admission = self._admission()
        if identity is not None and admission is not None and admission.needed:
            loop = asyncio.get_running_loop()
            info.gate = loop.create_task(admission.check(identity, chain))
        if state is not None:
            state.conn = info
        self.conns[conn] = info
        self._active.inc()

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
        if len(self._chains) > 4096:
            self._chains.clear()
        self._chains[identity.sha256] = chain
        return chain

    def connection_lost(self, conn: Http1Connection) -> None:
        super().connection_lost(conn)
        if self.conns.pop(conn, None) is not None:
            self._active.dec()
        self.capacity.set()


class Listener:
    """One listening socket: accepts, handshakes under a timeout, hands over to HTTP."""

    def __init__(
        self,
        name: str,
        bind: str,
        context: Callable[[], ssl.SSLContext],
        handshake_timeout: float,
        server: ConnectionTracker,
        metrics: Metrics,
        activity: Activity | None = None,
    ) -> None:
        self.name = name
        self._activity = activity or Activity()
        self.bind = bind
        self._context = context
        self.handshake_timeout = handshake_timeout  # updated in place by a reload
        self.server = server
        self._metrics = metrics
        self._sock: socket.socket | None = None
        self._accept_task: asyncio.Task[None] | None = None
        self._handshakes: set[asyncio.Task[None]] = set()
        self._ok = metrics.tls_handshakes.labels(name, "ok")
        self._duration = metrics.tls_handshake_duration.labels(name)
        self._accepted = metrics.connections_accepted.labels(name)
        self.max_connections = 10000
        self.max_handshakes = 512
        self._handshake_done = asyncio.Event()

    def apply_limits(self, limits: ListenerLimits) -> None:
        self.max_connections = limits.max_connections
        self.max_handshakes = limits.max_handshakes
        self.server.apply_limits(limits)

    async def _wait_for_capacity(self) -> None:
        """Hold the accept while the listener is full: the kernel's backlog keeps the rest."""
        counted: set[str] = set()
        while True:
            if len(self._handshakes) >= self.max_handshakes:
                limit, event_ = "handshakes", self._handshake_done
            elif len(self.server.conns) + len(self._handshakes) >= self.max_connections:
                limit, event_ = "connections", self.server.capacity
            else:
                return
            if limit not in counted:
                counted.add(limit)
                self._metrics.limits_hit.labels(self.name, limit).inc()
            event_.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await event_.wait()

    @property
    def is_open(self) -> bool:
        return self._sock is not None

    @property
    def address(self) -> tuple[str, int]:
        assert self._sock is not None, "listener not started"
        host, port = self._sock.getsockname()[:2]
        return host, port

    def open(self) -> None:
        """Bind and listen (SO_REUSEPORT so several workers may share the port)."""
        host, _, port = self.bind.rpartition(":")
        host = host.strip("[]")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        infos = socket.getaddrinfo(
            host, int(port), family if ":" in host else 0, socket.SOCK_STREAM
        )
        family, _, _, _, addr = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if hasattr(socket, "SO_REUSEPORT"):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(addr)
            sock.listen(1024)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._sock = sock

    def start(self) -> None:
        if self._sock is None:
            self.open()
        loop = asyncio.get_running_loop()
        self._accept_task = loop.create_task(self._accept_loop(), name=f"accept-{self.name}")

    async def _accept_loop(self) -> None:
        assert self._sock is not None
        loop = asyncio.get_running_loop()
        while True:
            await self._wait_for_capacity()
            try:
                conn, addr = await loop.sock_accept(self._sock)
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    tls_log.error(
                        "accept failed: out of resources",
                        extra=event(listener=self.name, error=str(exc)),
                    )
                    await asyncio.sleep(0.1)
                    continue
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO):
                    continue
                raise
            self._accepted.inc()
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            task = loop.create_task(self._handshake(conn, addr))
            self._handshakes.add(task)
            task.add_done_callback(self._handshake_finished)

    def _handshake_finished(self, task: asyncio.Task[None]) -> None:
        self._handshakes.discard(task)
        self._handshake_done.set()

    async def _handshake(self, conn: socket.socket, addr: Any) -> None:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        ctx = self._context()
        state = HandshakeState()
        _HANDSHAKE.set(state)
        try:
            async with asyncio.timeout(self.handshake_timeout):
                sslobj, incoming, outgoing = await handshake(conn, ctx)
            transport, _ = await loop.connect_accepted_socket(
                partial(TlsTransport, sslobj, incoming, outgoing, self.server), conn
            )
        except asyncio.CancelledError:
            conn.close()
            raise
        except Exception as exc:  # every failure is classified, counted and logged
            conn.close()
            self._failed(classify(exc), addr, state, type(exc).__name__)
            return
        info = state.conn
        if info is not None and info.gate is not None:
            failure = await info.gate
            if failure is not None:  # rejected after the handshake: same metric, same log
                transport.abort()
                self._failed(failure, addr, state, "post_handshake")
                return
        self._ok.inc()
        self._duration.observe(time.perf_counter() - started)
        self._activity.handshake(self.name, "ok")

    def _failed(self, failure: Failure, addr: Any, state: HandshakeState, error_type: str) -> None:
        self._metrics.tls_handshakes.labels(self.name, failure.reason.value).inc()
        peer = f"{addr[0]}:{addr[1]}" if addr else ""
        self._activity.handshake(self.name, failure.reason.value, peer, failure.detail)
        tls_log.info(
            "tls handshake failed",
            extra=event(
                listener=self.name,
                peer=peer,
                sni=state.sni,
                reason=failure.reason.value,
                verify_code=failure.verify_code,
                detail=failure.detail,
                error_type=error_type,
            ),
        )

    async def stop_accepting(self) -> None:
        if self._accept_task is not None:
            self._accept_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._accept_task
            self._accept_task = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        for task in list(self._handshakes):
            task.cancel()
        if self._handshakes:
            await asyncio.gather(*self._handshakes, return_exceptions=True)
