"""The admin port: / (status page), /status, /certs, /metrics, /healthz, /readyz, POST /reload."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from gateway.observe.traffic import SAMPLE_SECONDS, TrafficWindow
from gateway.ops.status import StatusSource, certs_doc, status_doc
from gateway.ops.statuspage import render_page
from gateway.request.serving import ReloadResult


def metrics_response(registry: CollectorRegistry) -> web.Response:
    return web.Response(
        body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


def add_probes(app: web.Application, ready: Callable[[], bool]) -> None:
    """/healthz (the process answers) and /readyz (it should receive traffic)."""

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_request: web.Request) -> web.Response:
        if ready():
            return web.json_response({"status": "ready"})
        return web.json_response({"status": "not ready"}, status=503)

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)


class Admin:
    """Plain-HTTP admin listener; keep it on loopback or a private interface. Served by the
    gateway itself, or by the supervisor of `run --workers N` (metrics of every worker, the
    workers' state in /status)."""

    def __init__(
        self,
        bind: str,
        registry: Callable[[], CollectorRegistry],
        ready: Callable[[], bool],
        reload: Callable[[str], Awaitable[ReloadResult]] | None = None,
        source: StatusSource | None = None,
        status_extra: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        host, _, port = bind.rpartition(":")
        self._host = host.strip("[]")
        self._port = int(port)
        self._registry = registry
        self._status_extra = status_extra
        self._ready = ready
        self._reload = reload
        self._source = source
        self._runner: web.AppRunner | None = None
        self.traffic = TrafficWindow(registry)
        self._sampler: asyncio.Task[None] | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics_view)
        add_probes(app, self._ready)
        app.router.add_post("/reload", self._reload_view)
        if self._source is not None:
            app.router.add_get("/", self._page)
            app.router.add_get("/status", self._status)
            app.router.add_get("/certs", self._certs)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port, reuse_address=True)
        await site.start()
        if self._source is not None:
            self._sampler = asyncio.get_running_loop().create_task(self._sample_traffic())

    async def _sample_traffic(self) -> None:
        """A reading of the traffic series a minute, for the page's window."""
        while True:
            self.traffic.sample()
            await asyncio.sleep(SAMPLE_SECONDS)

    @property
    def address(self) -> tuple[str, int]:
        assert self._runner is not None, "admin not started"
        host, port = self._runner.addresses[0][:2]
        return host, port

    async def stop(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
            self._sampler = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _metrics_view(self, _request: web.Request) -> web.Response:
        return metrics_response(self._registry())

    async def _reload_view(self, _request: web.Request) -> web.Response:
        """200 with the result when the new config is serving; 422 with every problem if not."""
        if self._reload is None:
            return web.json_response(
                {"result": "failure", "problems": ["reload unavailable"]}, status=501
            )
        result = await self._reload("admin")
        body = {
            "result": "success" if result.ok else "failure",
            "problems": result.problems,
            "duration_ms": round(result.seconds * 1000, 3),
        }
        return web.json_response(body, status=200 if result.ok else 422)

    async def _page(self, _request: web.Request) -> web.Response:
        assert self._source is not None
        extra = self._status_extra() if self._status_extra is not None else {}
        window, span = self.traffic.window()
        return web.Response(
            text=render_page(self._source, window, span, extra.get("workers")),
            content_type="text/html",
            headers={
                "Cache-Control": "no-store",
                "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
            },
        )

    async def _status(self, _request: web.Request) -> web.Response:
        assert self._source is not None
        code, doc = status_doc(self._source)
        if self._status_extra is not None:
            doc.update(self._status_extra())
        return web.json_response(doc, status=code)

    async def _certs(self, _request: web.Request) -> web.Response:
        assert self._source is not None
        return web.json_response(certs_doc(self._source))
