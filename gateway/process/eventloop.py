"""Which event loop runs the gateway: uvloop when it is installed (`--loop auto`, the
default) or asked for (`--loop uvloop`), else asyncio's own."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


def run_loop(coro: Coroutine[Any, Any, None], loop_kind: str) -> None:
    """Run `coro` to its end on the event loop `loop_kind` names (auto, uvloop, asyncio)."""
    if loop_kind in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if loop_kind == "uvloop":
                raise
        else:
            uvloop.run(coro)
            return
    asyncio.run(coro)
