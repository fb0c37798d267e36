"""Watch the files a config references (incl. Kubernetes `..data` symlink swaps); call back on change."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

from watchfiles import awatch

from gateway.base.log import config_log, event

Fingerprint = tuple[tuple[str, str], ...]


def fingerprint(paths: Iterable[str]) -> Fingerprint:
    """(path, sha256 of what it resolves to now) for each path; `missing` when unreadable.

    Content, not mtimes: a Kubernetes secret update swaps the `..data` symlink, so the
    file's own path never sees a write."""
    out = []
    for path in sorted(set(paths)):
        try:
            digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        except OSError:
            digest = "missing"
        out.append((path, digest))
    return tuple(out)


def watched_dirs(paths: Iterable[str]) -> list[str]:
    """The folders to watch: each file's own folder (where an editor's rename or a
    `..data` swap happens) and, for a symlink, the folder of its target."""
    dirs: set[str] = set()
    for path in paths:
        p = Path(path)
        dirs.add(str(p.parent))
        with contextlib.suppress(OSError):
            if p.is_symlink():
                dirs.add(str(Path(os.path.realpath(p)).parent))
    return sorted(d for d in dirs if os.path.isdir(d))


class FileWatcher:
    """Runs `on_change` when the content behind any of `paths` changes."""

    def __init__(
        self, paths: list[str], on_change: Callable[[], Awaitable[object]], debounce: float
    ) -> None:
        self.paths = paths
        self._on_change = on_change
        self._debounce_ms = max(int(debounce * 1000), 50)
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    def start(self) -> None:
        # the content as the caller just read it, taken now: a change made before the task's
        # first step (a busy loop, a gateway that already says it is ready) is still seen
        baseline = fingerprint(self.paths)
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._run(baseline), name="file-watcher")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self, baseline: Fingerprint) -> None:
        files = self.paths
        while not self._stop.is_set():
            dirs = watched_dirs(files)
            if not dirs:
                return
            # a change that landed while the last reload ran (a certificate and its key written
            # one after the other) has no event left to wait for: it is seen here
            changed = fingerprint(files) != baseline
            if not changed:
                changed = await self._wait_for_change(files, dirs, baseline)
            if not changed:
                continue
            baseline = fingerprint(files)  # what this reload reads; later changes reload again
            config_log.info("referenced file changed, reloading", extra=event(trigger="watch"))
            try:
                await self._on_change()
            except Exception:  # the reload itself logs and counts; keep watching regardless
                config_log.exception("reload after a file change failed unexpectedly")

    async def _wait_for_change(
        self, files: list[str], dirs: list[str], baseline: Fingerprint
    ) -> bool:
        """Until the content behind `files` differs from `baseline` (True) or the watch stops
        or its folders vanish (False: the caller looks again)."""
        changed = False
        changes = awatch(
            *dirs,
            watch_filter=None,
            debounce=self._debounce_ms,
            step=50,
            stop_event=self._stop,
            recursive=False,
            ignore_permission_denied=True,
        )
        try:
            async with contextlib.aclosing(changes):
                async for _ in changes:
                    if fingerprint(files) != baseline:
                        changed = True
                        break
        except (OSError, RuntimeError) as exc:  # a watched folder vanished: rebuild the watch
            config_log.warning("file watch interrupted", extra=event(error=str(exc)))
            await asyncio.sleep(1.0)
            changed = fingerprint(files) != baseline
        return changed
