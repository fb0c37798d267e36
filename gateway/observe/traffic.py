"""The status page's traffic view: per route, requests by status class and latency; per
upstream, outcomes and each target's health; over the last minutes.

It reads the same cumulative series `/metrics` serves (so under `--workers N` it is the
workers' sum) and keeps one reading a minute: the window is the newest reading minus the
oldest one still inside it. Nothing is added to the request path."""

from __future__ import annotations

import math
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

PREFIX = "mtls_gateway_"
SAMPLE_SECONDS = 60.0


@dataclass
class Totals:
    """Cumulative counts read from the registry at one moment."""

    codes: dict[str, Counter[str]] = field(default_factory=dict)  # route -> "2xx" -> n
    buckets: dict[str, dict[float, float]] = field(default_factory=dict)  # route -> le -> n
    outcomes: dict[str, Counter[str]] = field(default_factory=dict)  # upstream -> outcome -> n
    healthy: dict[tuple[str, str], bool] = field(default_factory=dict)  # (upstream, target)

    def minus(self, old: Totals) -> Totals:
        """What happened between `old` and this reading (health is this reading's)."""
        codes = {r: _sub(c, old.codes.get(r, Counter())) for r, c in self.codes.items()}
        buckets = {
            r: {le: n - old.buckets.get(r, {}).get(le, 0.0) for le, n in b.items()}
            for r, b in self.buckets.items()
        }
        outcomes = {u: _sub(c, old.outcomes.get(u, Counter())) for u, c in self.outcomes.items()}
        return Totals(codes, buckets, outcomes, dict(self.healthy))


def _sub(new: Counter[str], old: Counter[str]) -> Counter[str]:
    return Counter({k: n - old.get(k, 0) for k, n in new.items() if n - old.get(k, 0) > 0})


def read_totals(samples: Iterable[tuple[str, dict[str, str], float]]) -> Totals:
    """The totals in (name, labels, value) samples as prometheus-client collects them."""
    out = Totals()
    for name, labels, value in samples:
        if name == PREFIX + "requests_total":
            route = labels.get("route", "")
            code = labels.get("code", "")
            key = f"{code[:1]}xx" if code[:1].isdigit() else code
            out.codes.setdefault(route, Counter())[key] += int(value)
        elif name == PREFIX + "request_duration_seconds_bucket":
            per = out.buckets.setdefault(labels.get("route", ""), {})
            le = float(labels.get("le", "inf"))
            per[le] = per.get(le, 0.0) + value
        elif name == PREFIX + "upstream_requests_total":
            counts = out.outcomes.setdefault(labels.get("upstream", ""), Counter())
            counts[labels.get("outcome", "")] += int(value)
        elif name == PREFIX + "upstream_target_healthy":
            out.healthy[(labels.get("upstream", ""), labels.get("target", ""))] = value >= 1
    return out


def quantile(buckets: dict[float, float], q: float) -> float | None:
    """`histogram_quantile` of cumulative buckets (upper bound -> count): linear within the
    bucket the rank falls in; the last finite bound when it falls in +Inf; None if empty."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
    lower, below = 0.0, 0.0
    for le in bounds:
        count = buckets[le]
        if count >= rank:
            if math.isinf(le):
                return lower
            if count == below:
                return le
            return lower + (le - lower) * (rank - below) / (count - below)
        lower, below = le, count
    return lower


class TrafficWindow:
    """Readings of the registry, at most one a minute, for the last `minutes`."""

    def __init__(
        self,
        registry: Callable[[], CollectorRegistry],
        minutes: int = 15,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.minutes = minutes
        self._registry = registry
        self._clock = clock
        self._readings: deque[tuple[float, Totals]] = deque(maxlen=minutes + 1)

    def read(self) -> Totals:
        samples = (
            (s.name, s.labels, s.value)
            for family in self._registry().collect()
            for s in family.samples
        )
        return read_totals(samples)

    def sample(self) -> None:
        """Keep a reading (the admin port calls this once a minute)."""
        self._readings.append((self._clock(), self.read()))

    def window(self) -> tuple[Totals, float]:
        """What happened over the window, and how many seconds it covers: from the oldest
        reading inside it (the newest reading when none is; everything since start before
        the first reading)."""
        now = self._clock()
        current = self.read()
        if not self._readings:
            return current, 0.0
        inside = [(t, r) for t, r in self._readings if now - t <= self.minutes * 60 + 1]
        t, base = inside[0] if inside else self._readings[-1]
        return current.minus(base), now - t
