"""Recent handshake results and policy denials, in per-minute buckets, for the status page."""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import astuple, dataclass
from typing import Any


@dataclass(frozen=True)
class Rejection:
    """One rejected client, as the status page lists it."""

    ts: float
    kind: str  # handshake | policy
    where: str  # listener or route name
    reason: str
    peer: str
    detail: str


class Activity:
    """Counts per minute for the last `minutes`, and the last `keep` rejections."""

    def __init__(
        self, minutes: int = 15, keep: int = 50, clock: Callable[[], float] = time.time
    ) -> None:
        self.minutes = minutes
        self._clock = clock
        self._buckets: deque[tuple[int, Counter[tuple[str, str, str]]]] = deque(maxlen=minutes)
        self._recent: deque[Rejection] = deque(maxlen=keep)
        self.version = 0  # grows with every event: a copy elsewhere knows when it is stale

    def _bucket(self) -> Counter[tuple[str, str, str]]:
        minute = int(self._clock() // 60)
        if not self._buckets or self._buckets[-1][0] != minute:
            self._buckets.append((minute, Counter()))
        return self._buckets[-1][1]

    def handshake(self, listener: str, result: str, peer: str = "", detail: str = "") -> None:
        self.version += 1
        self._bucket()[("handshake", listener, result)] += 1
        if result != "ok":
            self._recent.append(
                Rejection(self._clock(), "handshake", listener, result, peer, detail)
            )

    def denial(self, route: str, reason: str, peer: str, detail: str) -> None:
        self.version += 1
        self._bucket()[("policy", route, reason)] += 1
        self._recent.append(Rejection(self._clock(), "policy", route, reason, peer, detail))

    def _window(self) -> Counter[tuple[str, str, str]]:
        first = int(self._clock() // 60) - self.minutes + 1
        total: Counter[tuple[str, str, str]] = Counter()
        for minute, counts in self._buckets:
            if minute >= first:
                total.update(counts)
        return total

    def handshakes(self) -> dict[str, int]:
        """Handshake results over the window, by result (`ok` or a reason), all listeners."""
        out: Counter[str] = Counter()
        for (kind, _, result), n in self._window().items():
            if kind == "handshake":
                out[result] += n
        return dict(out.most_common())

    def denials(self) -> dict[tuple[str, str], int]:
        """Policy denials over the window by (route, reason)."""
        return {
            (where, reason): n
            for (kind, where, reason), n in self._window().most_common()
            if kind == "policy"
        }

    def recent(self) -> list[Rejection]:
        """Newest first."""
        return list(reversed(self._recent))

    # ------------------------------------------------------------ across worker processes

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready copy, for the supervisor of `run --workers N` to merge."""
        return {
            "buckets": [
                [minute, [[*key, n] for key, n in counts.items()]]
                for minute, counts in self._buckets
            ],
            "recent": [list(astuple(r)) for r in self._recent],
        }

    @classmethod
    def merged(
        cls, snapshots: list[dict[str, Any]], clock: Callable[[], float] = time.time
    ) -> Activity:
        """One Activity holding the counts and the newest rejections of every snapshot."""
        out = cls(clock=clock)
        minutes: dict[int, Counter[tuple[str, str, str]]] = {}
        recent: list[Rejection] = []
        for snap in snapshots:
            for minute, rows in snap.get("buckets", []):
                counts = minutes.setdefault(int(minute), Counter())
                for kind, where, reason, n in rows:
                    counts[(kind, where, reason)] += int(n)
            recent += [Rejection(*row) for row in snap.get("recent", [])]
        for minute in sorted(minutes)[-out.minutes :]:
            out._buckets.append((minute, minutes[minute]))
        for rejection in sorted(recent, key=lambda r: r.ts)[-out._recent.maxlen :]:  # type: ignore[operator]
            out._recent.append(rejection)
        return out
