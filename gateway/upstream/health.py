"""Active health checks: GET the configured path on every target of an upstream, on a schedule,
in the protocol the upstream speaks (HTTP/1.1 through aiohttp; HTTP/2 on a stream of the
target's own pool)."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp

from gateway.config.model import HealthCheck
from gateway.upstream.connection import ConnectionLost, ConnectTimeout, UpstreamResponse
from gateway.upstream.h1response import BadResponse
from gateway.upstream.h2pool import H2Pool
from gateway.upstream.targets import Target


class _Status:
    """Waits for the status of a health check's answer on an HTTP/2 stream."""

    def __init__(self) -> None:
        self.status: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def response(self, response: UpstreamResponse) -> None:
        response.release()
        if not self.status.done():
            self.status.set_result(response.status)

    def error(self, exc: BaseException) -> None:
        if not self.status.done():
            self.status.set_exception(exc)


async def h2_status(pool: H2Pool, origin: str, path: str, within: float) -> int:
    """The status a GET of `path` gets on a stream of `pool`."""
    scheme, _, authority = origin.partition("://")
    call = await pool.acquire(within)
    waiter = _Status()
    head = [
        (b":method", b"GET"),
        (b":scheme", scheme.encode()),
        (b":authority", authority.encode()),
        (b":path", path.encode()),
        (b"user-agent", b"mtls-gateway health check"),
    ]
    call.send(head, None, False, True, waiter)
    try:
        return await waiter.status
    finally:
        call.abandon()  # (nothing left to do once the answer was released)


class HealthChecker:
    """One task per upstream with `health:`; results go to each target's state."""

    def __init__(self, targets: list[Target], health: HealthCheck) -> None:
        self._targets = targets
        self._health = health
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="health-check")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.gather(*(self._check(t) for t in self._targets))
            for target in self._targets:
                target.available()  # an ejection that ran out shows as healthy again
            await asyncio.sleep(self._health.interval)

    async def _check(self, target: Target) -> None:
        health = self._health
        low, high = health.expect_status
        try:
            async with asyncio.timeout(health.timeout):
                if isinstance(target.pool, H2Pool):
                    status = await h2_status(
                        target.pool, target.origin, health.path, health.timeout
                    )
                else:
                    async with target.session.get(
                        target.origin + health.path, allow_redirects=False
                    ) as resp:
                        status = resp.status
            ok = low <= status <= high
            detail = f"HTTP {status}"
        except (
            TimeoutError,
            aiohttp.ClientError,
            OSError,
            ConnectTimeout,
            ConnectionLost,
            BadResponse,
        ) as exc:
            ok, detail = False, f"{type(exc).__name__}: {exc}"[:200]
        target.checked(ok, health, detail)
