"""Active health checks: GET the configured path on every target of an upstream, on a schedule."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp

from gateway.config.model import HealthCheck
from gateway.upstream.targets import Target


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
                async with target.session.get(
                    target.origin + health.path, allow_redirects=False
                ) as resp:
                    ok = low <= resp.status <= high
                    detail = f"HTTP {resp.status}"
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            ok, detail = False, f"{type(exc).__name__}: {exc}"[:200]
        target.checked(ok, health, detail)
