"""CRLs fetched over HTTP: first copy before start, refreshed on a schedule, cached on disk."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path

from gateway.base.errors import ConfigProblem
from gateway.base.log import config_log, event
from gateway.config.listener import CrlUrl
from gateway.config.model import GatewayConfig
from gateway.observe.metrics import Metrics
from gateway.pki import crl as crls

MAX_CRL_BYTES = 64 * 1024 * 1024


class FetchError(Exception):
    """A CRL could not be fetched or is not a CRL."""


def fetch(source: CrlUrl) -> bool:
    """GET the CRL, check it, write it to the cache atomically; True when it changed."""
    req = urllib.request.Request(source.url, headers={"User-Agent": "mtls-gateway"})
    try:
        with urllib.request.urlopen(req, timeout=source.timeout) as resp:
            data: bytes = resp.read(MAX_CRL_BYTES + 1)
    except urllib.error.HTTPError as exc:
        raise FetchError(f"{source.url}: HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise FetchError(f"{source.url}: {reason}") from None
    if len(data) > MAX_CRL_BYTES:
        raise FetchError(f"{source.url}: larger than {MAX_CRL_BYTES} bytes")
    try:
        found = crls.parse_crls(data)
    except ValueError as exc:
        raise FetchError(f"{source.url}: not a CRL ({exc})") from None
    now = dt.datetime.now(dt.UTC)
    for crl in found:
        if crl.next_update_utc is not None and crl.next_update_utc < now:
            raise FetchError(
                f"{source.url}: served a lapsed CRL (nextUpdate "
                f"{crl.next_update_utc:%Y-%m-%d %H:%M} UTC); keeping the last good copy"
            )
    cache = Path(source.cache)
    with contextlib.suppress(OSError):
        if cache.read_bytes() == data:
            return False
    _write_atomically(cache, data)
    return True


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def url_sources(cfg: GatewayConfig) -> list[tuple[str, CrlUrl]]:
    """(YAML path, source) of every CRL URL in the config."""
    return [
        (f"listeners[{i}].tls.crl[{j}]", src)
        for i, lst in enumerate(cfg.listeners)
        for j, src in enumerate(lst.tls.crl)
        if isinstance(src, CrlUrl)
    ]


def fetch_missing(cfg: GatewayConfig) -> list[ConfigProblem]:
    """Fetch every URL CRL that has no cached copy yet (before `check` or start)."""
    problems = []
    for where, src in url_sources(cfg):
        if Path(src.cache).is_file():
            continue
        try:
            fetch(src)
        except (FetchError, OSError) as exc:
            problems.append(
                ConfigProblem(f"{where}.url", f"no cached copy and the first fetch failed: {exc}")
            )
    return problems


class CrlRefresher:
    """Refreshes each CRL URL every `refresh`; a new CRL triggers `on_change` (a reload)."""

    def __init__(
        self, cfg: GatewayConfig, metrics: Metrics, on_change: Callable[[], Awaitable[object]]
    ) -> None:
        self.sources = [src for _, src in url_sources(cfg)]
        self._metrics = metrics
        self._on_change = on_change
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        for src in self.sources:
            task = loop.create_task(self._run(src), name=f"crl-{src.url}")
            self._tasks.add(task)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    async def _run(self, src: CrlUrl) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(src.refresh)
            try:
                changed = await loop.run_in_executor(None, fetch, src)
            except (FetchError, OSError) as exc:
                self._metrics.crl_fetches.labels(src.url, "failure").inc()
                config_log.warning(
                    "CRL fetch failed, keeping the last good copy",
                    extra=event(url=src.url, cache=src.cache, error=str(exc)),
                )
                continue
            self._metrics.crl_fetches.labels(src.url, "success").inc()
            if changed:
                config_log.info("CRL updated, reloading", extra=event(url=src.url))
                await self._on_change()
