"""The file watch, on real files: a change is a reload, and a change that lands while that
reload runs (a certificate and its key written one after the other) is a reload too, never
lost."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.process.watch import FileWatcher


def test_a_change_made_during_the_reload_is_reloaded_again(tmp_path: Path) -> None:
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert.write_text("cert 1")
    key.write_text("key 1")
    seen: list[tuple[str, str]] = []

    async def scenario() -> None:
        async def reload() -> None:
            seen.append((cert.read_text(), key.read_text()))
            if len(seen) == 1:  # the second file arrives while the first reload runs
                key.write_text("key 2")
                await asyncio.sleep(0.3)

        watcher = FileWatcher([str(cert), str(key)], reload, debounce=0.05)
        watcher.start()
        await asyncio.sleep(0.3)  # watching
        cert.write_text("cert 2")
        for _ in range(50):
            if seen and seen[-1] == ("cert 2", "key 2"):
                break
            await asyncio.sleep(0.1)
        await watcher.stop()

    asyncio.run(scenario())
    assert seen[0] == ("cert 2", "key 1")  # the first reload saw half of the change
    assert seen[-1] == ("cert 2", "key 2")  # and the rest was reloaded, not lost
