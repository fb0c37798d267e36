"""The one bounded cache the gateway keeps: a dict of at most `maxsize` entries. When it is
full, the oldest entry (by insertion) makes room for the new one; a hit is a dict lookup and
nothing more. Whatever a client or an upstream can make the gateway remember (targets,
header values, certificates) goes into one of these, so memory stays bounded whatever they
send."""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Bounded(Generic[K, V]):
    """At most `maxsize` entries; the oldest one goes first."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._items: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        return self._items.get(key)

    def __contains__(self, key: K) -> bool:
        return key in self._items

    def put(self, key: K, value: V) -> V:
        """Keep `value` for `key` (the oldest entry out when full); returns `value`."""
        items = self._items
        if key not in items and len(items) >= self.maxsize:
            items.popitem(last=False)
        items[key] = value
        return value

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)
