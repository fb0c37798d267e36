"""Many deadlines on one event-loop timer: the timer is armed for the earliest, and an item
whose deadline passes has its `expire()` called. Adding and removing a deadline is a dict
operation; the timer is re-armed only when a new deadline comes before the armed one, which is
rare when the deadlines share a length (a pool's header timeout).

A timer per request (`loop.call_later`) costs the proxy path a timer-heap insertion and
removal per request (BENCHMARKS.md)."""

from __future__ import annotations

import asyncio
from typing import Final, Protocol

# the loop may run a timer up to a millisecond early (uvloop's clock has that resolution)
_EARLY: Final = 0.001


class Expiring(Protocol):
    def expire(self) -> None: ...


class Deadlines:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._due: dict[Expiring, float] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._armed_for = float("inf")

    def __len__(self) -> int:
        return len(self._due)

    def add(self, item: Expiring, seconds: float) -> None:
        """`item.expire()` in `seconds`, unless it is discarded before."""
        when = self._loop.time() + seconds
        self._due[item] = when
        if when < self._armed_for:
            self._arm(when)

    def discard(self, item: Expiring) -> None:
        self._due.pop(item, None)

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._armed_for = when
        self._timer = self._loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._armed_for = float("inf")
        now = self._loop.time() + _EARLY
        expired = [item for item, when in self._due.items() if when <= now]
        for item in expired:
            del self._due[item]
        if self._due:
            self._arm(min(self._due.values()))
        for item in expired:
            item.expire()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._armed_for = float("inf")
        self._due.clear()
