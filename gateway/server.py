"""One running gateway: snapshot, listeners, admin port, start and graceful stop."""

from __future__ import annotations

import asyncio
import signal
import ssl
from contextlib import suppress
from functools import partial

from gateway.admin import Admin
from gateway.certfiles import HeldCert
from gateway.config import GatewayConfig
from gateway.handler import Pipeline
from gateway.identity import IdentityCache
from gateway.listener import ConnectionTracker, Listener
from gateway.log import access_log, event, server_log
from gateway.metrics import Metrics
from gateway.runtime import Snapshot, build_snapshot


async def wait_for_stop_signal() -> None:
    """Return once SIGTERM or SIGINT arrives."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()


class Gateway:
    """Build everything from a validated config, bind, serve; `stop` drains gracefully."""

    def __init__(
        self, cfg: GatewayConfig, metrics: Metrics | None = None, held: list[HeldCert] | None = None
    ):
        self.metrics = metrics or Metrics()
        self._snapshot = build_snapshot(cfg, self.metrics)
        self._held = held or []
        self.identities = IdentityCache()
        self.listeners: list[Listener] = []
        self.admin: Admin | None = None
        self._ready = False
        access_log.disabled = not cfg.logging.access_log

    @property
    def config(self) -> GatewayConfig:
        return self._snapshot.config

    def snapshot(self) -> Snapshot:
        return self._snapshot

    def context_for(self, listener: str) -> ssl.SSLContext:
        """The current TLS context of a listener (new connections pick up a reload)."""
        return self._snapshot.contexts[listener]

    def ready(self) -> bool:
        return self._ready

    async def start(self) -> None:
        """Bind every listener (raising OSError if one cannot), then start serving."""
        cfg = self._snapshot.config
        for lst in cfg.listeners:
            pipeline = Pipeline(self.snapshot, self.metrics)
            tracker = ConnectionTracker(
                pipeline, lst.name, self.metrics, self.identities, keepalive_timeout=75.0
            )
            pipeline.tracker = tracker
            listener = Listener(
                lst.name,
                lst.bind,
                partial(self.context_for, lst.name),
                lst.tls.handshake_timeout,
                tracker,
                self.metrics,
            )
            try:
                listener.open()
            except OSError as exc:
                for opened in self.listeners:
                    await opened.stop_accepting()
                raise OSError(
                    exc.errno, f"listener {lst.name!r} cannot bind {lst.bind}: {exc.strerror}"
                ) from None
            self.listeners.append(listener)
        if cfg.admin is not None:
            self.admin = Admin(cfg.admin.bind, self.metrics, self.ready)
            await self.admin.start()
        for listener in self.listeners:
            listener.start()
        for cert in self._held:
            self.metrics.certificate_expiry.labels(cert.kind, cert.name).set(cert.not_after)
        self._ready = True
        server_log.info(
            "gateway ready",
            extra=event(
                listeners={
                    lst.name: f"{lst.address[0]}:{lst.address[1]}" for lst in self.listeners
                },
                admin=f"{self.admin.address[0]}:{self.admin.address[1]}" if self.admin else None,
            ),
        )

    async def stop(self, drain_seconds: float = 10.0) -> None:
        """Stop accepting, let in-flight requests finish (up to `drain_seconds`), close pools."""
        self._ready = False
        for listener in self.listeners:
            await listener.stop_accepting()
        await asyncio.gather(
            *(lst.server.shutdown(drain_seconds) for lst in self.listeners), return_exceptions=True
        )
        await self._snapshot.close()
        if self.admin is not None:
            await self.admin.stop()
        server_log.info("gateway stopped")

    async def serve_until_signalled(self) -> None:
        """Run until SIGTERM or SIGINT, then stop gracefully."""
        await self.start()
        await wait_for_stop_signal()
        server_log.info("signal received, draining")
        await self.stop()
