"""The one bounded cache: never more than its size, the oldest entry out first, a hit is a
lookup; and no module keeps a cache of its own kind beside it."""

from __future__ import annotations

from pathlib import Path

from gateway.base.bounded import Bounded

PKG = Path(__file__).resolve().parents[2] / "gateway"


def test_the_oldest_entry_makes_room() -> None:
    cache: Bounded[str, int] = Bounded(3)
    for i, key in enumerate("abcd"):
        assert cache.put(key, i) == i
    assert len(cache) == 3 and cache.get("a") is None and "a" not in cache
    assert [cache.get(k) for k in "bcd"] == [1, 2, 3]
    cache.put("b", 10)  # a key already there: replaced, nothing evicted
    assert len(cache) == 3 and cache.get("b") == 10 and cache.get("c") == 2
    cache.put("e", 4)  # the oldest by insertion ("b", even though just updated) goes
    assert cache.get("b") is None and cache.get("e") == 4
    cache.clear()
    assert len(cache) == 0


def test_a_flood_of_new_keys_stays_bounded() -> None:
    cache: Bounded[int, int] = Bounded(100)
    for i in range(10_000):
        cache.put(i, i)
    assert len(cache) == 100 and cache.get(9_999) == 9_999 and cache.get(9_899) is None


def test_no_module_keeps_a_hand_rolled_cache() -> None:
    """LRU dicts and clear-when-full dicts were the other two rules: gone."""
    for path in PKG.glob("*.py"):
        if path.name == "bounded.py":
            continue
        text = path.read_text()
        assert "OrderedDict" not in text, path.name
        assert "popitem(" not in text, path.name
