"""`run --workers N`: N worker processes share each listening port (SO_REUSEPORT); the
supervisor restarts a worker that dies, passes SIGHUP/SIGTERM on, and serves the admin port
with the workers' metrics aggregated (prometheus-client multiprocess mode) and the workers'
own view of what they serve (each writes it to a state file once a second it changed)."""

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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, multiprocess
from prometheus_client.core import Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from gateway.base.errors import ConfigError
from gateway.base.log import config_log, event, server_log
from gateway.config.load import check_admin_unchanged
from gateway.config.model import GatewayConfig
from gateway.observe.activity import Activity
from gateway.observe.procstats import Process, ProcessCollector, resident_bytes
from gateway.ops.admin import Admin
from gateway.ops.workerstate import read_state, state_file
from gateway.pki.certfiles import HeldCert, load_checked
from gateway.pki.crlfetch import fetch_missing
from gateway.request.serving import ReloadResult

READY_FD_ENV = "MTLS_GATEWAY_READY_FD"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
RESTART_BACKOFF = (0.5, 1.0, 2.0, 5.0, 10.0)
RELOAD_WAIT_SECONDS = 15.0  # for every worker to report its reload in the metrics
RELOADS = "mtls_gateway_config_reloads_total"
RETIRED_KEEP = 4  # activity of a slot's exited workers, kept for the status page's window


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
        self.retired: list[dict[str, Any]] = []  # activity of this slot's exited workers

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

    def state(self) -> dict[str, Any] | None:
        """What this worker last wrote of its view, if it is running and wrote one."""
        if self.proc is None:
            return None
        return read_state(state_file(self._env[MULTIPROC_ENV], self.proc.pid))

    def reap(self) -> None:
        self.ready = False
        self._close_pipe()
        if self.proc is not None:
            metrics_dir = self._env[MULTIPROC_ENV]
            multiprocess.mark_process_dead(self.proc.pid, metrics_dir)  # type: ignore[no-untyped-call]
            path = state_file(metrics_dir, self.proc.pid)
            last = read_state(path)
            if last is not None:  # its history stays on the status page after a restart
                self.retired = [*self.retired, last.get("activity", {})][-RETIRED_KEEP:]
            path.unlink(missing_ok=True)

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)


class Supervisor:
    """Starts and watches the workers; owns the admin port (status page, /status, /certs,
    aggregated /metrics, POST /reload checked here first, then applied by every worker)."""

    def __init__(
        self,
        cfg: GatewayConfig,
        config_path: str,
        workers: int,
        loop_kind: str,
        held: list[HeldCert] | None = None,
    ) -> None:
        self.cfg = cfg
        self._held = held or []
        self._config_path = config_path
        self._config_mtime = _mtime(config_path)
        self.started_at = time.time()
        self._last_reload: float | None = None
        self.rejected_reloads = 0  # rejected here: no worker was signalled, none counted it
        self._metrics_dir = Path(tempfile.mkdtemp(prefix="mtls-gateway-metrics-"))
        env = {**os.environ, MULTIPROC_ENV: str(self._metrics_dir)}
        argv = [sys.executable, "-m", "gateway", "run", "-c", config_path, "--worker"]
        argv += ["--loop", loop_kind]
        self.workers = [Worker(i, argv, env) for i in range(workers)]
        self._stopping = False
        self._admin: Admin | None = None
        self._reload_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[object]] = set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        for worker in self.workers:
            worker.spawn()
        if self.cfg.admin is not None:
            self._admin = Admin(
                self.cfg.admin.bind,
                self._registry,
                self.ready,
                self.reload,
                self,
                lambda: {"workers": self._worker_states()},
            )
            await self._admin.start()
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
        for task in [watcher, *self._tasks]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._admin is not None:
            await self._admin.stop()
        shutil.rmtree(self._metrics_dir, ignore_errors=True)
        server_log.info("supervisor stopped")

    def _fan_out(self, sig: int) -> None:
        for worker in self.workers:
            worker.signal(sig)

    def _on_sighup(self) -> None:
        task = asyncio.get_running_loop().create_task(self.reload("signal"))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

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

    # ------------------------------------------------------------ reload

    async def reload(self, trigger: str = "admin") -> ReloadResult:
        """Check the new config here (nothing is signalled when it is broken), then have every
        worker apply it and wait for their results in the metrics."""
        async with self._reload_lock:
            started = time.perf_counter()
            loop = asyncio.get_running_loop()
            try:
                cfg, held = await loop.run_in_executor(
                    None, load_checked, self._config_path, fetch_missing
                )
                check_admin_unchanged(self.cfg, cfg)
            except ConfigError as exc:
                problems = [str(p) for p in exc.problems]
                self.rejected_reloads += 1
                config_log.error(
                    "reload rejected, workers keep the previous config",
                    extra=event(trigger=trigger, problems=problems),
                )
                return ReloadResult(False, trigger, problems, time.perf_counter() - started)
            before = self._reload_counts()
            expected = sum(1 for w in self.workers if w.alive())
            self._fan_out(signal.SIGHUP)
            after = before
            for _ in range(int(RELOAD_WAIT_SECONDS * 10)):
                await asyncio.sleep(0.1)
                after = self._reload_counts()
                if sum(after) - sum(before) >= expected:
                    break
            failed = after[1] - before[1]
            missing = expected - (sum(after) - sum(before))
            seconds = time.perf_counter() - started
            if failed > 0 or missing > 0:
                problem = (
                    f"{failed} of {expected} workers rejected the new config"
                    if failed > 0
                    else f"{missing} of {expected} workers did not report within "
                    f"{RELOAD_WAIT_SECONDS:.0f} s"
                )
                if failed == 0:  # no worker counted this failure
                    self.rejected_reloads += 1
                return ReloadResult(False, trigger, [f"{problem}: see their logs"], seconds)
            self.cfg, self._held = cfg, held
            self._config_mtime = _mtime(self._config_path)
            self._last_reload = time.time()
            config_log.info(
                "workers reloaded",
                extra=event(trigger=trigger, workers=expected, duration_ms=round(seconds * 1000)),
            )
            return ReloadResult(True, trigger, [], seconds)

    def _reload_counts(self) -> tuple[float, float]:
        """config_reloads_total of all workers: (success, failure)."""
        success = failure = 0.0
        for family in self._registry().collect():
            for sample in family.samples:
                if sample.name == RELOADS:
                    if sample.labels.get("result") == "success":
                        success += sample.value
                    else:
                        failure += sample.value
        return success, failure

    # ------------------------------------------------------------ admin port

    def _registry(self) -> CollectorRegistry:
        registry = CollectorRegistry()
        registry.register(_WorkersCollector(self._metrics_dir, lambda: self.rejected_reloads))
        registry.register(ProcessCollector(self._processes, restarts=True))
        return registry

    def _processes(self) -> list[Process]:
        out = [Process("supervisor", "", os.getpid())]
        for w in self.workers:
            if w.proc is not None and w.alive():
                out.append(Process("worker", str(w.slot), w.proc.pid, w.restarts))
            else:
                out.append(Process("worker", str(w.slot), -1, w.restarts))  # restarting
        return out

    def ready(self) -> bool:
        return not self._stopping and all(w.ready and w.alive() for w in self.workers)

    def _worker_states(self) -> list[dict[str, object]]:
        return [
            {
                "slot": w.slot,
                "pid": w.proc.pid if w.proc is not None else None,
                "ready": w.ready,
                "restarts": w.restarts,
                "memory_bytes": resident_bytes(w.proc.pid) if w.proc is not None else None,
            }
            for w in self.workers
        ]

    # the status page's view of the gateway (gateway.status.StatusSource)

    @property
    def config(self) -> GatewayConfig:
        self._follow_config_file()
        return self.cfg

    @property
    def activity(self) -> Activity:
        """Every worker's recent rejections and counts, merged, those of exited ones too."""
        snapshots = []
        for worker in self.workers:
            snapshots += worker.retired
            state = worker.state()
            if state is not None:
                snapshots.append(state.get("activity", {}))
        return Activity.merged(snapshots)

    def _newest_state(self) -> dict[str, Any] | None:
        """The view of the worker that loaded its config last (they agree once all reloaded)."""
        states = [s for w in self.workers if (s := w.state()) is not None]
        return max(states, key=lambda s: s.get("last_reload") or 0.0, default=None)

    @property
    def last_reload(self) -> float | None:
        """The last reload of any worker (signalled, or by its own file watch), or of ours."""
        times = [s.get("last_reload") for w in self.workers if (s := w.state()) is not None]
        known = [t for t in [self._last_reload, *times] if isinstance(t, (int, float))]
        return max(known, default=None)

    def held_certs(self) -> list[HeldCert]:
        """The certificates the workers hold: after a secret rotation their files say so."""
        state = self._newest_state()
        if state is not None and isinstance(state.get("held"), list):
            with contextlib.suppress(TypeError):
                return [HeldCert(**h) for h in state["held"]]
        self._follow_config_file()
        return list(self._held)

    def listener_addresses(self) -> dict[str, str]:
        return {lst.name: lst.bind for lst in self.config.listeners}

    def _follow_config_file(self) -> None:
        """Workers that watch their files reload on their own: show what they now serve."""
        mtime = _mtime(self._config_path)
        if mtime == self._config_mtime:
            return
        self._config_mtime = mtime
        with contextlib.suppress(ConfigError):
            self.cfg, self._held = load_checked(self._config_path)


def _mtime(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return 0.0


class _WorkersCollector(Collector):
    """The workers' series from their files, with the reloads this supervisor rejected added
    to `config_reloads_total{result="failure"}`: they never reached a worker to be counted."""

    def __init__(self, metrics_dir: Path, rejected: Callable[[], int]) -> None:
        self._files = multiprocess.MultiProcessCollector(None, path=str(metrics_dir))  # type: ignore[no-untyped-call]
        self._rejected = rejected

    def collect(self) -> Iterator[Metric]:
        rejected = self._rejected()
        for family in self._files.collect():  # type: ignore[no-untyped-call]
            if family.name + "_total" == RELOADS and rejected:
                family.samples = [_plus(s, rejected) for s in family.samples]
            yield family


def _plus(sample: Sample, rejected: int) -> Sample:
    if sample.name == RELOADS and sample.labels.get("result") == "failure":
        return sample._replace(value=sample.value + rejected)
    return sample
