"""Server-side TLS that the gateway drives itself, inside one asyncio protocol: the handshake
runs in `data_received` of the plain TCP transport, so a rejected client gets its TLS alert
(with a lingering close), and a successful handshake turns the same object into the TLS
transport the application sees, encrypting and decrypting with the same `SSLObject`.

asyncio's and uvloop's SSL transports drop the alert of a failed handshake (CPython gh-98078)
and hide the failure; here the alert OpenSSL queued is written, writing is shut down and the
peer drained briefly, so the kernel does not turn the close into a reset that destroys the
alert. Driving the handshake from the transport's callbacks instead of `sock_recv`/
`sock_sendall` on the raw socket keeps the socket registered with the event loop once, for
its whole life (BENCHMARKS.md)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable
from typing import Any, Final, cast

READ_SIZE: Final = 256 * 1024
LINGER_SECONDS: Final = 0.5
FLIGHT_MAX: Final = 16 * 1024  # a ClientHello and a client chain; beyond it, not kept

HandshakeDone = Callable[["TlsTransport", BaseException | None], None]

_handshaking: TlsTransport | None = None  # whose do_handshake() is running (SNI callback)


def handshaking() -> TlsTransport | None:
    """The transport whose handshake step is running: for `SSLContext.sni_callback`, which
    runs inside `do_handshake()`."""
    return _handshaking


class TlsTransport(asyncio.Protocol, asyncio.Transport):
    """The plain TCP transport's protocol, and the TLS transport the application sees."""

    def __init__(
        self,
        sslobj: ssl.SSLObject,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        app_factory: Callable[[asyncio.Transport], asyncio.Protocol],
        on_handshake: HandshakeDone,
        timeout: float,
        first_byte_timeout: float | None = None,
    ) -> None:
        super().__init__()
        self._ssl: ssl.SSLObject | None = sslobj  # None once the connection is over
        # reads and writes go to the C object under ssl.SSLObject, skipping its Python wrapper
        # methods (a few % of the CPU per request); the same object where that is not there
        self._io: Any = getattr(sslobj, "_sslobj", sslobj)
        self._in = incoming
        self._out = outgoing
        self._app_factory = app_factory
        self._app: asyncio.Protocol | None = None  # made once the handshake succeeded
        self._on_handshake: HandshakeDone | None = on_handshake  # None once reported
        self._timeout = timeout
        self._first_byte_timeout = min(timeout, first_byte_timeout or timeout)
        self.said_hello = False  # a byte has come from the client
        self._timer: asyncio.TimerHandle | None = None
        self._raw: asyncio.Transport | None = None
        # made inside the loop (by the listener's accept); asking for it per write would cost
        # a getpid() system call each time (Python 3.11's get_running_loop checks the pid)
        self._loop = asyncio.get_running_loop()
        self._app_reading = True
        self._closing = False
        self._pending: list[bytes] = []  # plaintext written in this loop iteration
        self._flush_scheduled = False
        self._extra: dict[str, Any] = {"ssl_object": sslobj, "sslcontext": sslobj.context}
        # what the client sent until the handshake ends: a failed TLS 1.2 handshake's log line
        # names the client from its cleartext Certificate message (tlsrecords.py)
        self._flight: bytearray | None = bytearray()

    def client_flight(self) -> bytes:
        """The first bytes the client sent (up to FLIGHT_MAX) while the handshake ran; empty
        once it succeeded."""
        return bytes(self._flight or b"")

    def set_sni(self, name: str) -> None:
        """Remember the server name the client asked for (`get_extra_info("sni")`)."""
        self._extra["sni"] = name

    # ------------------------------------------------------------ the handshake

    def _handshake_step(self) -> None:
        global _handshaking
        _handshaking = self
        try:
            if self._ssl is not None:
                self._ssl.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return
        except ssl.SSLError as exc:
            self._flush()  # the alert OpenSSL queued for the client
            self._handshake_failed(exc, linger=True)
            return
        except Exception as exc:  # e.g. the SNI callback failed
            self._handshake_failed(exc, linger=False)
            return
        finally:
            _handshaking = None
        self._flush()  # our Finished (TLS 1.2), session tickets (TLS 1.3)
        self._flight = None
        if self._timer is not None:
            self._timer.cancel()
        self._app = app = self._app_factory(self)  # it may ask which protocol ALPN chose
        app.connection_made(self)
        self._report(None)
        self._deliver()  # application data that arrived with the end of the handshake

    def _report(self, exc: BaseException | None) -> None:
        done, self._on_handshake = self._on_handshake, None
        if done is not None:
            done(self, exc)

    def _handshake_failed(self, exc: BaseException, *, linger: bool) -> None:
        """Report the failure once; close with a linger (so the alert arrives) or at once."""
        if self._timer is not None:
            self._timer.cancel()
        self._closing = True
        self._report(exc)
        raw = self._raw
        if raw is None or raw.is_closing():
            return
        if not linger:
            raw.abort()
            return
        try:
            raw.write_eof()  # after the alert: the peer reads it, then sees the end
        except (OSError, RuntimeError):
            raw.abort()
            return
        self._timer = self._loop.call_later(LINGER_SECONDS, raw.close)

    def _handshake_timed_out(self) -> None:
        self._timer = None
        self._handshake_failed(
            TimeoutError(
                "handshake timed out" if self.said_hello else "no ClientHello in time (not a byte)"
            ),
            linger=False,
        )

    def evict(self) -> None:
        """Give the handshake slot back (the listener is full and this address holds the most
        of them): the connection is dropped, reported as timed out."""
        if self._app is None and not self._closing:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._handshake_failed(
                TimeoutError("handshake slot taken back (the listener was full)"), linger=False
            )

    # ------------------------------------------------------------ the raw (TCP) side

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._raw = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._started = self._loop.time()
        self._timer = self._loop.call_later(self._first_byte_timeout, self._handshake_timed_out)

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return  # lingering after a failed handshake or a close: dropped
        self._in.write(data)
        if self._app is not None:
            self._deliver()
            return
        flight = self._flight
        if flight is not None and len(flight) < FLIGHT_MAX:
            flight += data[: FLIGHT_MAX - len(flight)]
        if not self.said_hello:
            self.said_hello = True
            if self._timer is not None and self._first_byte_timeout < self._timeout:
                self._timer.cancel()  # now the whole handshake_timeout, from the connection
                left = self._timeout - (self._loop.time() - self._started)
                self._timer = self._loop.call_later(max(left, 0.0), self._handshake_timed_out)
        self._handshake_step()

    def eof_received(self) -> bool | None:
        if self._closing:
            return False  # the end of a linger: close the raw transport now
        app = self._app
        if app is None:
            if not self._closing:
                self._handshake_failed(
                    ConnectionResetError("the client closed the connection"), linger=False
                )
            return False
        self._in.write_eof()
        self._deliver()
        with contextlib.suppress(Exception):
            app.eof_received()
        return False  # close the raw transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        try:
            if self._app is None:
                self._report(exc or ConnectionResetError("the client closed the connection"))
            else:
                self._app.connection_lost(exc)
        finally:
            self._release()

    def _release(self) -> None:
        """Let go of the connection's TLS state now that it is over: the SSL object holds its
        session and its context (with that context's session cache), and the transport and
        its application hold each other, so without this they would wait for the collector."""
        self._ssl = None
        self._io = None
        self._extra.pop("ssl_object", None)
        self._extra.pop("sslcontext", None)
        self._pending.clear()

    def pause_writing(self) -> None:
        if self._app is not None:
            self._app.pause_writing()

    def resume_writing(self) -> None:
        if self._app is not None:
            self._app.resume_writing()

    def _deliver(self) -> None:
        """Decrypt what is buffered and hand it to the application while it reads."""
        while self._app_reading and not self._closing and (app := self._app) is not None:
            try:
                chunk = self._io.read(READ_SIZE)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:  # close_notify
                self._flush()
                with contextlib.suppress(Exception):
                    app.eof_received()
                self.close()
                break
            except ssl.SSLError as exc:  # corrupt record, renegotiation attempt, ...
                self._fatal(exc)
                break
            if not chunk:
                break
            app.data_received(chunk)
            if not self._in.pending and (self._io is None or not self._io.pending()):
                break  # all read: another read would only raise SSLWantReadError, at a cost
        self._flush()  # e.g. TLS 1.3 key updates

    def _flush(self) -> None:
        data = self._out.read()
        if data and self._raw is not None and not self._raw.is_closing():
            self._raw.write(data)

    def _fatal(self, exc: BaseException) -> None:
        self._flush()
        if self._raw is not None:
            self._raw.abort()

    # ------------------------------------------------------------ the application's transport

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name in self._extra:
            return self._extra[name]
        sslobj = self._ssl
        if sslobj is not None and name in ("peercert", "cipher", "compression"):
            if name == "peercert":
                return sslobj.getpeercert()
            return sslobj.cipher() if name == "cipher" else sslobj.compression()
        return self._raw.get_extra_info(name, default) if self._raw is not None else default

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Queue plaintext; everything written in one loop iteration (a streamed answer's head
        and first chunk, pipelined answers) becomes one TLS record and one send. Writing at
        once instead costs a record and a send per write (a whole answer: write_whole)."""
        if self._closing or not data:
            return
        self._pending.append(bytes(data))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._encrypt_pending)

    def write_whole(self, data: bytes) -> None:
        """A whole answer in one piece: encrypted and sent now, not at the end of the loop
        iteration, unless earlier writes are still queued (then it joins them, in order). There
        is nothing to gather for such an answer, and sending it at once answers sooner."""
        if self._closing or not data:
            return
        self._pending.append(data)
        if not self._flush_scheduled:
            self._encrypt_pending()

    def _encrypt_pending(self) -> None:
        self._flush_scheduled = False
        if not self._pending:
            return
        data = b"".join(self._pending) if len(self._pending) > 1 else self._pending[0]
        self._pending.clear()
        if self._raw is None or self._raw.is_closing() or self._io is None:
            return
        try:
            self._io.write(data)
        except ssl.SSLError as exc:
            self._fatal(exc)
            return
        self._flush()

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def can_write_eof(self) -> bool:
        return False

    def write_eof(self) -> None:
        raise NotImplementedError("TLS has no half-close; use close()")

    def is_closing(self) -> bool:
        return self._closing or (self._raw is not None and self._raw.is_closing())

    def close(self) -> None:
        """close_notify, then a lingering close: the TCP side is half-closed and what the
        client still sends (the rest of a body the answer did not wait for) is read and dropped
        until it ends or for LINGER_SECONDS. Closing with unread bytes would make the kernel
        reset the connection, and the client could lose the answer before reading it."""
        if self._closing:
            return
        self._encrypt_pending()  # what the application wrote before closing still goes out
        self._closing = True
        sslobj = self._ssl
        if sslobj is not None:
            with contextlib.suppress(ssl.SSLError, ValueError):
                sslobj.unwrap()  # queues close_notify; wants the peer's, not waited for
        self._flush()
        raw = self._raw
        if raw is None or raw.is_closing():
            return
        try:
            raw.write_eof()
            raw.resume_reading()
        except (OSError, RuntimeError):
            raw.close()
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_later(LINGER_SECONDS, raw.close)

    def abort(self) -> None:
        self._closing = True
        if self._raw is not None:
            self._raw.abort()

    def pause_reading(self) -> None:
        self._app_reading = False
        if self._raw is not None:
            self._raw.pause_reading()

    def resume_reading(self) -> None:
        self._app_reading = True
        if self._raw is not None:
            self._raw.resume_reading()
        self._deliver()

    def is_reading(self) -> bool:
        return self._app_reading

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if self._raw is not None:
            self._raw.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        queued = sum(len(d) for d in self._pending)
        return queued + (self._raw.get_write_buffer_size() if self._raw is not None else 0)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._raw.get_write_buffer_limits() if self._raw is not None else (0, 0)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        assert isinstance(protocol, asyncio.Protocol)
        self._app = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self._app is not None, "no application before the handshake"
        return self._app
