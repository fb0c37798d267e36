"""Accept + TLS handshake we drive ourselves: every failure classified, counted, logged, alerted."""

from __future__ import annotations

import _ssl
import asyncio
import contextlib
import errno
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any, Final, cast

from gateway.base.log import event, tls_log
from gateway.base.reasons import HandshakeReason
from gateway.downstream.connections import ListenerConnections, ListenerSettings
from gateway.downstream.messages import ClientChannel
from gateway.downstream.tlsconn import TlsTransport, handshaking
from gateway.observe.activity import Activity
from gateway.observe.metrics import Metrics
from gateway.pki.identity import Identity
from gateway.pki.tls import Failure, classify
from gateway.pki.tlsrecords import client_identity

_DER: Final = getattr(_ssl, "ENCODING_DER", 1)


def record_sni(_ssl_obj: ssl.SSLObject, server_name: str | None, _ctx: ssl.SSLContext) -> None:
    """`SSLContext.sni_callback`: remember the name the client asked for."""
    transport = handshaking()
    if transport is not None and server_name:
        transport.set_sni(server_name.lower().rstrip("."))


class Listener:
    """One listening socket: accepts, handshakes under a timeout, hands over to HTTP.

    The listening socket stays registered with the event loop; each readiness accepts what
    the kernel has queued, up to the listener's limits. While the listener is full it stops
    accepting and the kernel's backlog holds the rest."""

    def __init__(
        self,
        name: str,
        bind: str,
        settings: Callable[[], ListenerSettings],
        server: ListenerConnections,
        metrics: Metrics,
        activity: Activity | None = None,
    ) -> None:
        self.name = name
        self._activity = activity or Activity()
        self.bind = bind
        self._settings = settings  # the snapshot's, read once per accepted connection
        self.server = server
        server.on_close = self._capacity_back
        self._metrics = metrics
        self._sock: socket.socket | None = None
        self._accepting = False  # registered for readiness
        self._paused: str | None = None  # the limit that stopped accepting
        self._retry: asyncio.TimerHandle | None = None
        self._handshakes: dict[TlsTransport, float] = {}  # running, with their start time
        # the running handshakes by client address, oldest first: when the listener is full, the
        # address holding the most gives its oldest back, so one source cannot hold every slot
        self._by_addr: dict[str, deque[TlsTransport]] = {}
        self._opening: set[asyncio.Task[Any]] = set()  # transports being made
        tally = metrics.tally
        self._ok = tally.counter(metrics.tls_handshakes.labels(name, "ok"))
        self._resumed = tally.counter(metrics.tls_resumed.labels(name))
        self._duration = tally.histogram(metrics.tls_handshake_duration.labels(name))
        self._accepted = tally.counter(metrics.connections_accepted.labels(name))
        for reason in HandshakeReason:  # at 0 from start-up: alerts see a first failure burst
            metrics.tls_handshakes.labels(name, reason.value)

    def config_changed(self) -> None:
        """A reload may have raised the limits: accept again if there is room now."""
        self._capacity_back()

    def _full(self) -> str | None:
        """The limit that is reached, if any."""
        limits = self._settings().limits
        handshakes = len(self._handshakes) + len(self._opening)
        if handshakes >= limits.max_handshakes:
            return "handshakes"
        if len(self.server.conns) + handshakes >= limits.max_connections:
            return "connections"
        return None

    def _capacity_back(self) -> None:
        if self._paused is not None and self._full() is None:
            self._paused = None
            self._resume()

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
        self._resume()

    def _resume(self) -> None:
        if self._sock is not None and not self._accepting and self._retry is None:
            asyncio.get_running_loop().add_reader(self._sock.fileno(), self._accept_ready)
            self._accepting = True

    def _pause(self) -> None:
        if self._sock is not None and self._accepting:
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._accepting = False

    def _back_off(self) -> None:
        """Out of descriptors or memory: stop accepting for a moment."""
        self._pause()
        self._retry = asyncio.get_running_loop().call_later(0.1, self._retry_accepting)

    def _retry_accepting(self) -> None:
        self._retry = None
        self._resume()

    def _accept_ready(self) -> None:
        sock = self._sock
        if sock is None:
            return
        for _ in range(64):  # then let other work run; the socket stays ready
            full = self._full()
            if full == "handshakes" and self._evict():
                full = self._full()
            if full is not None:
                if self._paused is None:
                    self._metrics.limits_hit.labels(self.name, full).inc()
                self._paused = full
                self._pause()
                return
            try:
                conn, addr = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO):
                    continue
                scarce = exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
                tls_log.error(
                    "accept failed: out of resources" if scarce else "accept failed",
                    extra=event(listener=self.name, error=str(exc)),
                )
                self._back_off()
                return
            self._accepted.inc()
            self._open(conn, addr)

    def _open(self, conn: socket.socket, addr: Any) -> None:
        """Make the connection's transport; the handshake runs in its callbacks."""
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        settings = self._settings()
        try:
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
            sslobj = settings.tls.current().wrap_bio(incoming, outgoing, server_side=True)
        except (OSError, ssl.SSLError) as exc:
            conn.close()
            self._failed(classify(exc), addr, None, type(exc).__name__)
            return

        # the transport, once made, is kept in `made` (for _opened). No closures here: those
        # would hold the connection in a cycle that the compiled module's collector misses
        made: list[TlsTransport] = []
        factory = partial(
            self._make_transport, sslobj, incoming, outgoing, started, addr, made, settings
        )
        task = loop.create_task(loop.connect_accepted_socket(factory, conn))
        self._opening.add(task)
        task.add_done_callback(partial(self._opened, conn, addr, made))

    def _make_transport(
        self,
        sslobj: ssl.SSLObject,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        started: float,
        addr: Any,
        made: list[TlsTransport],
        settings: ListenerSettings,
    ) -> TlsTransport:
        transport = TlsTransport(
            sslobj,
            incoming,
            outgoing,
            partial(self.server.open, settings),
            partial(self._handshake_done, addr),
            settings.handshake_timeout,
            settings.client_hello_timeout,
        )
        self._handshakes[transport] = started
        self._by_addr.setdefault(_ip(addr), deque()).append(transport)
        made.append(transport)
        return transport

    def _opened(
        self, conn: socket.socket, addr: Any, made: list[TlsTransport], task: asyncio.Task[Any]
    ) -> None:
        self._opening.discard(task)
        exc = None if task.cancelled() else task.exception()
        if task.cancelled() or exc is not None:
            conn.close()  # no-op if a transport took the socket; else it would leak
            for transport in made:
                if self._handshakes.pop(transport, None) is not None:
                    self._forget(addr, transport)
            if exc is not None:
                self._failed(classify(exc), addr, None, type(exc).__name__)
        self._capacity_back()

    def _handshake_done(
        self, addr: Any, transport: TlsTransport, exc: BaseException | None
    ) -> None:
        started = self._handshakes.pop(transport, None)
        if started is not None:
            self._forget(addr, transport)
        self._capacity_back()
        sni = transport.get_extra_info("sni")
        if started is None:  # aborted by stop_accepting: not the client's doing
            return
        if exc is not None:
            self._failed(classify(exc), addr, sni, type(exc).__name__, transport)
            return
        info = self.server.conns.get(cast(ClientChannel, transport.get_protocol()))
        if info is not None and info.gate is not None:  # post-handshake checks: strict, OCSP
            info.gate.add_done_callback(partial(self._gated, transport, addr, sni, started))
            return
        self._succeeded(started, transport)

    def _gated(
        self,
        transport: TlsTransport,
        addr: Any,
        sni: str | None,
        started: float,
        gate: asyncio.Future[Failure | None],
    ) -> None:
        """Rejected after the handshake: the same metric and log as a failed handshake."""
        if gate.cancelled():
            return
        failure = gate.result()
        if failure is not None:
            info = self.server.conns.get(cast(ClientChannel, transport.get_protocol()))
            self._failed(
                failure, addr, sni, "post_handshake", transport, info.identity if info else None
            )
            transport.abort()
        else:
            self._succeeded(started, transport)

    def _forget(self, addr: Any, transport: TlsTransport) -> None:
        ip = _ip(addr)
        running = self._by_addr.get(ip)
        if running is not None:
            with contextlib.suppress(ValueError):
                running.remove(transport)
            if not running:
                del self._by_addr[ip]

    def _evict(self) -> bool:
        """Full on handshakes: the address holding the most gives back its oldest handshake
        that has not sent a byte (else its oldest), when it holds more than one. True when a
        slot was freed."""
        if not self._by_addr:
            return False
        heaviest = max(self._by_addr.values(), key=len)
        if len(heaviest) < 2:
            return False
        victim = next((t for t in heaviest if not t.said_hello), heaviest[0])
        self._metrics.limits_hit.labels(self.name, "handshakes_per_address").inc()
        victim.evict()
        return True

    def _succeeded(self, started: float, transport: TlsTransport) -> None:
        self._ok.inc()
        if transport.get_extra_info("ssl_object").session_reused:
            self._resumed.inc()
        self._duration.observe(time.perf_counter() - started)
        self._activity.handshake(self.name, "ok")

    def _failed(
        self,
        failure: Failure,
        addr: Any,
        sni: str | None,
        error_type: str,
        transport: TlsTransport | None = None,
        identity: Identity | None = None,
    ) -> None:
        """Counted, shown on the status page and logged with what identifies the client: its
        address (`peer` as in access lines, and `peer_port`), the TLS version and cipher when
        they were agreed, and the certificate when the gateway saw it (post-handshake checks:
        strict profile, OCSP), or from the cleartext Certificate message of a TLS 1.2 handshake
        that OpenSSL rejected (Python's ssl module does not hand that certificate over). Under
        TLS 1.3 that message is encrypted: `detail` carries OpenSSL's verify message only."""
        self._metrics.tls_handshakes.labels(self.name, failure.reason.value).inc()
        peer = f"{addr[0]}:{addr[1]}" if addr else ""
        seen_in = "post_handshake"
        if identity is None and transport is not None:
            identity = client_identity(transport.client_flight())
            seen_in = "tls12_certificate_message"
        detail = failure.detail
        if identity is not None:
            detail = f"{detail} (client {identity.subject}, serial {identity.serial})"
        self._activity.handshake(self.name, failure.reason.value, peer, detail)
        fields: dict[str, Any] = {
            "listener": self.name,
            "peer": addr[0] if addr else "",
            "peer_port": addr[1] if addr else None,
            "sni": sni,
            "reason": failure.reason.value,
            "verify_code": failure.verify_code,
            "detail": failure.detail,
            "error_type": error_type,
        }
        if transport is not None:
            fields.update(_tls_fields(transport))
        if identity is not None:
            fields.update(
                client_subject=identity.subject,
                client_issuer=identity.issuer,
                client_serial=identity.serial,
                client_sha256=identity.sha256,
                client_cert_seen_in=seen_in,
            )
        tls_log.info("tls handshake failed", extra=event(**fields))

    async def stop_accepting(self) -> None:
        """Close the listening socket and abort the handshakes still running."""
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        self._pause()
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        for task in list(self._opening):
            task.cancel()
        if self._opening:
            await asyncio.gather(*self._opening, return_exceptions=True)
        running = list(self._handshakes)
        self._handshakes.clear()
        for transport in running:
            transport.abort()


def _tls_fields(transport: TlsTransport) -> dict[str, str | None]:
    """The TLS version and cipher a failed handshake had agreed on, if it got that far."""
    sslobj = transport.get_extra_info("ssl_object")
    try:
        version = sslobj.version() if sslobj is not None else None
        cipher = sslobj.cipher() if sslobj is not None else None
    except (ValueError, ssl.SSLError):
        return {}
    return {"tls_version": version, "cipher": cipher[0] if cipher else None}


def _ip(addr: Any) -> str:
    return str(addr[0]) if addr else ""
