"""`run --workers N`: N worker processes share each listening port (SO_REUSEPORT); the
supervisor restarts a worker that dies, passes SIGHUP/SIGTERM on, and serves the admin port
with the workers' metrics aggregated (prometheus-client multiprocess mode)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from aiohttp import web
from prometheus_client import CollectorRegistry, multiprocess

from gateway.admin import add_probes, metrics_response
from gateway.config import GatewayConfig
from gateway.log import event, server_log
from gateway.status import status_fields

READY_FD_ENV = "MTLS_GATEWAY_READY_FD"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
RESTART_BACKOFF = (0.5, 1.0, 2.0, 5.0, 10.0)


class Worker:
    """One worker process and the pipe it reports readiness on."""

    def __init__(self, slot: int, argv: list[str], env: dict[str, str]) -> None:
        self.slot = slot
        self.restarts = 0
        self._argv = argv
        self._env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready = False
        self._read_fd = -1

    def spawn(self) -> None:
        read_fd, write_fd = os.pipe()
        env = {**self._env, READY_FD_ENV: str(write_fd)}
        self.proc = subprocess.Popen(self._argv, env=env, pass_fds=(write_fd,))
        os.close(write_fd)
        self._read_fd = read_fd
        self.ready = False
        asyncio.get_running_loop().add_reader(read_fd, self._on_ready)

    def _on_ready(self) -> None:
        with contextlib.suppress(OSError):
            if os.read(self._read_fd, 1):
                self.ready = True
                return
        self._close_pipe()  # EOF: the worker exited

    def _close_pipe(self) -> None:
        if self._read_fd >= 0:
            asyncio.get_running_loop().remove_reader(self._read_fd)
            os.close(self._read_fd)
            self._read_fd = -1

    def exited(self) -> int | None:
        return self.proc.poll() if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def reap(self) -> None:
        self.ready = False
        self._close_pipe()
        if self.proc is not None:
            metrics_dir = self._env[MULTIPROC_ENV]
            multiprocess.mark_process_dead(self.proc.pid, metrics_dir)  # type: ignore[no-untyped-call]

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)


class Supervisor:
    """Starts and watches the workers; owns the admin port."""

    def __init__(self, cfg: GatewayConfig, config_path: str, workers: int, loop_kind: str) -> None:
        self.cfg = cfg
        self.started_at = time.time()
        self._metrics_dir = Path(tempfile.mkdtemp(prefix="mtls-gateway-metrics-"))
        env = {**os.environ, MULTIPROC_ENV: str(self._metrics_dir)}
        argv = [sys.executable, "-m", "gateway", "run", "-c", config_path, "--worker"]
        argv += ["--loop", loop_kind]
        self.workers = [Worker(i, argv, env) for i in range(workers)]
        self._stopping = False
        self._runner: web.AppRunner | None = None

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: self._fan_out(signal.SIGHUP))
        for worker in self.workers:
            worker.spawn()
        await self._start_admin()
        server_log.info(
            "supervisor ready",
            extra=event(workers=[w.proc.pid for w in self.workers if w.proc is not None]),
        )
        watcher = loop.create_task(self._watch())
        await stop.wait()
        self._stopping = True
        server_log.info("signal received, stopping workers")
        self._fan_out(signal.SIGTERM)
        for _ in range(int((self.cfg.shutdown_timeout + 10) * 10)):  # workers drain first
            if not any(w.alive() for w in self.workers):
                break
            await asyncio.sleep(0.1)
        for worker in self.workers:
            if worker.alive() and worker.proc is not None:
                worker.proc.kill()
                worker.proc.wait(5)
            if worker.proc is not None:
                worker.reap()
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        if self._runner is not None:
            await self._runner.cleanup()
        shutil.rmtree(self._metrics_dir, ignore_errors=True)
        server_log.info("supervisor stopped")

    def _fan_out(self, sig: int) -> None:
        for worker in self.workers:
            worker.signal(sig)

    async def _watch(self) -> None:
        """Restart a worker that died (with a growing back-off), unless we are stopping."""
        while not self._stopping:
            await asyncio.sleep(0.2)
            for worker in self.workers:
                code = worker.exited()
                if worker.proc is None or code is None or self._stopping:
                    continue
                worker.reap()
                pause = RESTART_BACKOFF[min(worker.restarts, len(RESTART_BACKOFF) - 1)]
                server_log.error(
                    "worker exited, restarting",
                    extra=event(
                        slot=worker.slot,
                        pid=worker.proc.pid if worker.proc else None,
                        code=code,
                        restart_in=pause,
                    ),
                )
                worker.restarts += 1
                worker.proc = None
                await asyncio.sleep(pause)
                if not self._stopping:
                    worker.spawn()

    # ------------------------------------------------------------ admin port

    async def _start_admin(self) -> None:
        if self.cfg.admin is None:
            return
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        add_probes(app, self._ready)
        app.router.add_get("/status", self._status)
        app.router.add_post("/reload", self._reload)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        host, _, port = self.cfg.admin.bind.rpartition(":")
        await web.TCPSite(self._runner, host.strip("[]"), int(port), reuse_address=True).start()

    def _ready(self) -> bool:
        return not self._stopping and all(w.ready and w.alive() for w in self.workers)

    async def _metrics(self, _request: web.Request) -> web.Response:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(self._metrics_dir))  # type: ignore[no-untyped-call]
        return metrics_response(registry)

    async def _status(self, _request: web.Request) -> web.Response:
        ready = self._ready()
        doc = {
            **status_fields(ready, self.started_at, "starting, restarting or draining"),
            "workers": [
                {
                    "slot": w.slot,
                    "pid": w.proc.pid if w.proc is not None else None,
                    "ready": w.ready,
                    "restarts": w.restarts,
                }
                for w in self.workers
            ],
        }
        return web.json_response(doc, status=200 if ready else 503)

    async def _reload(self, _request: web.Request) -> web.Response:
        """Each worker reloads on SIGHUP; results are in their logs and in the metrics."""
        self._fan_out(signal.SIGHUP)
        return web.json_response({"result": "signalled", "workers": len(self.workers)}, status=202)
