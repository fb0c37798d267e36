"""Histogram observations on the request path, compiled (setup.py): the bucket found by a
binary search, then the same two increments prometheus-client's `Histogram.observe` makes (the
sum, one bucket). Its own `observe` walks every bucket in interpreted Python: two of those per
proxied request cost about 3% of the CPU (see BENCHMARKS.md)."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from typing import Any


class Observer:
    """`observe(amount)` for one labelled histogram child."""

    def __init__(self, child: Any) -> None:
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

    def observe(self, amount: float) -> None:
        if self._sum is None or amount != amount:  # NaN: its own rules
            self._fallback(amount)
            return
        self._sum(amount)
        self._buckets[bisect_left(self._bounds, amount)](1.0)
