"""One running gateway: snapshot, listeners, admin port, reload, start and graceful stop."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import time
from collections.abc import Callable, Coroutine
from contextlib import suppress
from functools import partial
from pathlib import Path
from typing import Any

from gateway import compiled
from gateway.base.errors import ConfigError
from gateway.base.log import access_log, config_log, event, server_log
from gateway.config.listener import ListenerConfig
from gateway.config.load import check_admin_unchanged
from gateway.config.model import GatewayConfig
from gateway.downstream.connections import ListenerConnections, ListenerSettings
from gateway.downstream.listener import Listener
from gateway.downstream.recheck import ocsp_rounds, recheck_all
from gateway.observe.accesslog import access_lines
from gateway.observe.activity import Activity
from gateway.observe.metrics import Metrics
from gateway.ops import expiry
from gateway.ops.admin import Admin
from gateway.ops.workerstate import share_state
from gateway.pki.certfiles import HeldCert, load_checked
from gateway.pki.crlfetch import CrlRefresher, fetch_missing
from gateway.pki.identity import IdentityCache
from gateway.pki.ocsp import OcspChecker
from gateway.process.watch import FileWatcher
from gateway.request.handler import RequestHandler
from gateway.request.proxy import Upstream
from gateway.request.serving import ReloadResult, ServingConfig, build_snapshot


async def wait_for_stop_signal(on_signal: Callable[[], None] | None = None) -> None:
    """Return once SIGTERM or SIGINT arrives; `on_signal` runs in the signal callback itself."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def received() -> None:
        if on_signal is not None:
            on_signal()
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        with suppress(NotImplementedError):
            loop.add_signal_handler(sig, received)
    await stop.wait()


def referenced_files(cfg: GatewayConfig) -> list[str]:
    """Every local file a config names (what a reload re-reads)."""
    files: list[str] = []
    for lst in cfg.listeners:
        files += [lst.tls.cert, lst.tls.key, *lst.tls.client_ca]
        files += [c for c in lst.tls.crl if isinstance(c, str)]
    return files


class Gateway:
    """Build everything from a validated config, bind, serve; `reload` swaps, `stop` drains."""

    def __init__(
        self,
        cfg: GatewayConfig,
        metrics: Metrics | None = None,
        held: list[HeldCert] | None = None,
        config_path: str | Path | None = None,
        serve_admin: bool = True,
        state_file: Path | None = None,
    ):
        self.metrics = metrics or Metrics()
        self.ocsp = OcspChecker()  # its cache outlives reloads
        self._snapshot = build_snapshot(cfg, self.metrics, ocsp=self.ocsp)
        self._held = held or []
        self._config_path = Path(config_path).resolve() if config_path is not None else None
        self._serve_admin = serve_admin  # a worker leaves the admin port to its supervisor
        self.identities = IdentityCache()
        self.activity = Activity()
        self._state_file = state_file  # a worker's view for its supervisor's admin port
        self.started_at = time.time()
        self.last_reload: float | None = None
        self._listeners: dict[str, Listener] = {}
        self.admin: Admin | None = None
        self._ready = False
        self._reload_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._watcher: FileWatcher | None = None
        self._refresher: CrlRefresher | None = None
        self._retired_upstreams: list[Upstream] = []  # closed once idle, or at stop
        self._retired_listeners: list[Listener] = []
        self._expiry_warnings = expiry.ExpiryWarnings()
        access_log.disabled = not cfg.logging.access_log

    @property
    def config(self) -> GatewayConfig:
        return self._snapshot.config

    @property
    def listeners(self) -> list[Listener]:
        return list(self._listeners.values())

    def snapshot(self) -> ServingConfig:
        return self._snapshot

    def settings_for(self, listener: str) -> ListenerSettings:
        """What a listener's new connections take from the current config: a reload applies
        to the connections accepted after it."""
        return self._snapshot.listeners[listener]

    def held_certs(self) -> list[HeldCert]:
        return list(self._held)

    def listener_addresses(self) -> dict[str, str]:
        out = {}
        for name, lst in self._listeners.items():
            if not lst.is_open:  # stopping
                continue
            host, port = lst.address
            out[name] = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        return out

    def ready(self) -> bool:
        """Serving, and (when the admin section asks for it) the named upstreams are healthy."""
        if not self._ready:
            return False
        admin = self.config.admin
        wanted = admin.ready_requires_upstreams if admin is not None else False
        if wanted is False:
            return True
        names = self._snapshot.upstreams if wanted is True else wanted
        return all(self._snapshot.upstreams[n].healthy() for n in names)

    def _not_ready(self) -> None:
        self._ready = False

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ start / stop

    def _open_listener(self, lst: ListenerConfig) -> Listener:
        pipeline = RequestHandler(self.snapshot, self.metrics, self.activity)
        tracker = ListenerConnections(pipeline, lst.name, self.metrics, self.identities)
        listener = Listener(
            lst.name,
            lst.bind,
            partial(self.settings_for, lst.name),
            tracker,
            self.metrics,
            self.activity,
        )
        try:
            listener.open()
        except OSError as exc:
            raise OSError(
                exc.errno, f"listener {lst.name!r} cannot bind {lst.bind}: {exc.strerror}"
            ) from None
        return listener

    async def start(self) -> None:
        """Bind every listener (raising OSError if one cannot), then start serving."""
        cfg = self._snapshot.config
        opened: list[Listener] = []
        try:
            for lst in cfg.listeners:
                opened.append(self._open_listener(lst))
        except OSError:
            for listener in opened:
                await listener.stop_accepting()
            raise
        self._listeners = {lst.name: lst for lst in opened}
        if cfg.admin is not None and self._serve_admin:
            self.admin = Admin(cfg.admin.bind, self.metrics.current, self.ready, self.reload, self)
            await self.admin.start()
        for listener in opened:
            listener.start()
        for upstream in self._snapshot.upstreams.values():
            upstream.start()
        self._publish_held()
        self._spawn(self._expiry_loop(), "expiry-check")
        state = lambda: (self._listeners, self.config, self._snapshot.admissions)  # noqa: E731
        self._spawn(ocsp_rounds(state, self.metrics), "ocsp-recheck")
        if self._state_file is not None:
            shared = share_state(
                self._state_file, self.activity, self.held_certs, lambda: self.last_reload
            )
            self._spawn(shared, "share-state")
        self._restart_watcher()
        self._restart_refresher()
        self._ready = True
        # what start-up built (modules, the first config) is long-lived: out of the collector's
        # sight, a full collection under load has far less to walk. Only once: a
        # config replaced by a reload must stay collectable
        gc.freeze()
        server_log.info(
            "gateway ready",
            extra=event(
                listeners={
                    lst.name: f"{lst.address[0]}:{lst.address[1]}" for lst in self.listeners
                },
                admin=f"{self.admin.address[0]}:{self.admin.address[1]}" if self.admin else None,
                compiled=compiled(),
            ),
        )

    async def stop(self, drain_seconds: float | None = None) -> None:
        """Not ready at once, stop accepting, let in-flight requests finish, close pools."""
        drain = self.config.shutdown_timeout if drain_seconds is None else drain_seconds
        self._ready = False
        for listener in self.listeners + self._retired_listeners:
            await listener.stop_accepting()
        started = time.monotonic()
        if self._watcher is not None:
            await self._watcher.stop()
        if self._refresher is not None:
            await self._refresher.stop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        draining = self.listeners + self._retired_listeners
        await asyncio.gather(
            *(lst.server.shutdown(drain) for lst in draining), return_exceptions=True
        )
        await self._snapshot.close()
        for upstream in self._retired_upstreams:
            await upstream.close()
        await self.ocsp.close()
        if self.admin is not None:
            await self.admin.stop()
        self.metrics.tally.flush()  # a worker's last counts reach the supervisor's files
        access_lines.flush()  # every access line before the last log line
        server_log.info(
            "gateway stopped", extra=event(drain_seconds=round(time.monotonic() - started, 3))
        )

    async def serve_until_signalled(self, on_ready: Callable[[], None] | None = None) -> None:
        """Run until SIGTERM or SIGINT, then stop gracefully; SIGHUP reloads."""
        await self.start()
        loop = asyncio.get_running_loop()
        with suppress(NotImplementedError):
            loop.add_signal_handler(
                signal.SIGHUP, lambda: self._spawn(self.reload("signal"), "reload")
            )
        if on_ready is not None:
            on_ready()
        await wait_for_stop_signal(on_signal=self._not_ready)
        server_log.info(
            "signal received, draining",
            extra=event(shutdown_timeout=self.config.shutdown_timeout),
        )
        await self.stop()

    # ------------------------------------------------------------------ reload

    async def reload(self, trigger: str = "admin") -> ReloadResult:
        """Re-read the config file and every file it names; swap only if all of it is good."""
        async with self._reload_lock:
            started = time.perf_counter()
            try:
                new, held, opened = await self._prepare(trigger)
            except ConfigError as exc:
                problems = [str(p) for p in exc.problems]
                self.metrics.config_reloads.labels("failure").inc()
                config_log.error(
                    "reload rejected, still serving the previous config",
                    extra=event(trigger=trigger, problems=problems),
                )
                return ReloadResult(False, trigger, problems, time.perf_counter() - started)
            self._swap(new, held, opened)
            # revocation reaches open connections before the reload is reported done
            await recheck_all(self._listeners, self.config, self._snapshot.admissions,
                              self.metrics, skip={x.name for x in opened})  # fmt: skip
            seconds = time.perf_counter() - started
            self.metrics.config_reloads.labels("success").inc()
            self.last_reload = time.time()
            self.metrics.config_last_reload_success.set(self.last_reload)
            config_log.info(
                "config reloaded",
                extra=event(trigger=trigger, duration_ms=round(seconds * 1000, 3)),
            )
            return ReloadResult(True, trigger, [], seconds)

    async def _prepare(self, trigger: str) -> tuple[ServingConfig, list[HeldCert], list[Listener]]:
        if self._config_path is None:
            raise ConfigError("this gateway was started without a config file; nothing to reload")
        loop = asyncio.get_running_loop()
        cfg, held = await loop.run_in_executor(None, load_checked, self._config_path, fetch_missing)
        if self._serve_admin:
            check_admin_unchanged(self.config, cfg)
        new = build_snapshot(cfg, self.metrics, previous=self._snapshot, ocsp=self.ocsp)
        opened: list[Listener] = []
        for i, lst in enumerate(cfg.listeners):
            current = self._listeners.get(lst.name)
            if current is not None and current.bind == lst.bind:
                continue
            try:
                opened.append(self._open_listener(lst))
            except OSError as exc:
                for listener in opened:
                    await listener.stop_accepting()
                raise ConfigError(str(exc.strerror), f"listeners[{i}].bind") from None
        return new, held, opened

    def _swap(self, new: ServingConfig, held: list[HeldCert], opened: list[Listener]) -> None:
        old = self._snapshot
        self._snapshot = new
        cfg = new.config
        by_name = {lst.name: lst for lst in cfg.listeners}
        for name, listener in list(self._listeners.items()):
            lst = by_name.get(name)
            if lst is None or lst.bind != listener.bind:
                del self._listeners[name]
                self._retired_listeners.append(listener)
                self._spawn(self._retire_listener(listener), f"retire-{name}")
            else:
                listener.config_changed()
        for listener in opened:
            self._listeners[listener.name] = listener
            listener.start()
        for upstream in new.upstreams.values():
            if upstream not in old.upstreams.values():
                upstream.start()
        for upstream in old.retired_by(new):
            self._retired_upstreams.append(upstream)
            self._spawn(upstream.close_when_idle(), f"retire-{upstream.name}")
        self._held = held
        self._publish_held()
        access_log.disabled = not cfg.logging.access_log
        logging.getLogger().setLevel(cfg.logging.level.upper())
        self._restart_watcher()
        self._restart_refresher()

    async def _retire_listener(self, listener: Listener) -> None:
        await listener.stop_accepting()
        await listener.server.shutdown(self.config.shutdown_timeout)

    def _restart_watcher(self) -> None:
        """(Re)start the file watcher so it covers exactly the files of the current config."""
        if self._config_path is None or not self.config.reload.watch:
            if self._watcher is not None:
                self._spawn(self._watcher.stop(), "watcher-stop")
                self._watcher = None
            return
        files = [str(self._config_path), *referenced_files(self.config)]
        if self._watcher is not None and self._watcher.paths == files:
            return
        if self._watcher is not None:
            self._spawn(self._watcher.stop(), "watcher-stop")
        self._watcher = FileWatcher(
            files, partial(self.reload, "watch"), self.config.reload.debounce
        )
        self._watcher.start()

    def _restart_refresher(self) -> None:
        """(Re)start the CRL downloads so they follow the current config's URLs."""
        refresher = CrlRefresher(self.config, self.metrics, partial(self.reload, "crl"))
        if self._refresher is not None:
            if self._refresher.sources == refresher.sources:
                return
            self._spawn(self._refresher.stop(), "crl-refresher-stop")
        self._refresher = refresher
        refresher.start()

    # ------------------------------------------------------------------ expiry

    def _publish_held(self) -> None:
        multiproc = "PROMETHEUS_MULTIPROC_DIR" in os.environ  # workers cannot clear: they overwrite
        expiry.publish(self.metrics.certificate_expiry, self._held, clear=not multiproc)
        self._expiry_warnings.check(self._held)

    async def _expiry_loop(self) -> None:
        while True:
            await asyncio.sleep(expiry.CHECK_SECONDS)
            self._expiry_warnings.check(self._held)
