"""Per-request metric updates, compiled (setup.py): counted in plain numbers and added to
prometheus-client's values in one go, at most `FLUSH_SECONDS` after the first of them and
whenever `/metrics` is read in this process.

prometheus-client's `inc` takes a lock, and its `Histogram.observe` walks every bucket in
interpreted Python: the four updates each proxied request makes were a visible share of its
CPU (BENCHMARKS.md). Here an update is an addition to a number of a compiled
object. What is summed is exactly what prometheus-client would have counted: the bucket is the
first whose upper bound is >= the value, the same rule as its own `observe`."""

from __future__ import annotations

import asyncio
from bisect import bisect_left
from collections.abc import Callable
from typing import Any, Final

# How long a worker's counts may wait before they reach prometheus-client's values: the
# supervisor's /metrics (multiprocess mode) reads those, and a scrape every few seconds never
# sees the difference. One process's own /metrics flushes first, so it is always exact.
FLUSH_SECONDS: Final = 0.1


class _Pending:
    """Something with updates not yet added to prometheus-client's values."""

    def apply(self) -> None:
        raise NotImplementedError


class Tally:
    """The pending updates of one registry, and the timer that flushes them."""

    def __init__(self) -> None:
        self._dirty: list[_Pending] = []
        self._armed = False

    def counter(self, child: Any) -> Count:
        """An `inc()` for one labelled counter child."""
        return Count(self, child)

    def histogram(self, child: Any) -> Observations:
        """An `observe(amount)` for one labelled histogram child."""
        return Observations(self, child)

    def flush(self) -> None:
        """Add every pending update to prometheus-client's values now."""
        dirty, self._dirty = self._dirty, []
        for pending in dirty:
            pending.apply()

    def touched(self, pending: _Pending) -> None:
        """`pending` has its first update since the last flush."""
        self._dirty.append(pending)
        if self._armed:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # outside an event loop (a tool, a unit test): no one would flush
            self.flush()
            return
        self._armed = True
        loop.call_later(FLUSH_SECONDS, self._timer)

    def _timer(self) -> None:
        self._armed = False
        self.flush()


class Count(_Pending):
    """Increments of one counter child."""

    def __init__(self, tally: Tally, child: Any) -> None:
        self._tally = tally
        self._inc: Callable[[float], None] = child.inc
        self.pending = 0.0

    def inc(self) -> None:
        self.pending += 1.0
        if self.pending == 1.0:
            self._tally.touched(self)

    def apply(self) -> None:
        amount, self.pending = self.pending, 0.0
        if amount:
            self._inc(amount)


class Observations(_Pending):
    """Observations of one histogram child: the sum and one count per bucket."""

    def __init__(self, tally: Tally, child: Any) -> None:
        self._tally = tally
        self._fallback: Callable[[float], None] = child.observe
        try:  # prometheus-client's internals: where they differ, its own observe is used
            bounds = [float(b) for b in child._upper_bounds]
            buckets = [bucket.inc for bucket in child._buckets]
            self._sum: Callable[[float], None] | None = child._sum.inc
        except (AttributeError, TypeError, ValueError):
            bounds, buckets, self._sum = [], [], None
        if len(bounds) != len(buckets) or not bounds or bounds[-1] != float("inf"):
            self._sum = None
        self._bounds = bounds
        self._buckets = buckets
        self._counts = [0.0] * len(buckets)
        self._total = 0.0
        self._pending = False

    def observe(self, amount: float) -> None:
        if self._sum is None or amount != amount:  # NaN: its own rules
            self._fallback(amount)
            return
        self._total += amount
        self._counts[bisect_left(self._bounds, amount)] += 1.0
        if not self._pending:
            self._pending = True
            self._tally.touched(self)

    def apply(self) -> None:
        if not self._pending or self._sum is None:
            return
        self._pending = False
        self._sum(self._total)
        self._total = 0.0
        counts = self._counts
        for i, n in enumerate(counts):
            if n:
                self._buckets[i](n)
                counts[i] = 0.0
