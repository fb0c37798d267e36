"""The request path's metric updates, gathered in a Tally, land in the same series as
prometheus-client's own `inc` and `observe` once flushed: on a timer inside an event loop, at
once outside one."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry, Counter, Histogram

from gateway.observe.metrics import _LATENCY_BUCKETS
from gateway.observe.tally import FLUSH_SECONDS, Tally

VALUES = [0.0, 0.0005, 0.001, 0.0049, 0.005, 0.0051, 0.1, 0.25, 2.5, 9.99, 10.0, 60.0, 1e9]


def _samples(metric: Histogram | Counter) -> list[tuple[str, dict[str, str], float]]:
    return [
        (s.name, s.labels, s.value)
        for family in metric.collect()
        for s in family.samples
        if not s.name.endswith("_created")
    ]


def _pair() -> tuple[Histogram, Histogram]:
    return tuple(  # type: ignore[return-value]
        Histogram("h", "x", ["route"], buckets=_LATENCY_BUCKETS, registry=CollectorRegistry())
        for _ in range(2)
    )


def test_observations_land_in_the_same_buckets_as_prometheus_client() -> None:
    ours, theirs = _pair()
    tally = Tally()
    observe = tally.histogram(ours.labels("r")).observe

    async def run() -> None:
        for value in VALUES + list(_LATENCY_BUCKETS):
            observe(value)
            theirs.labels("r").observe(value)
        assert ("h_count", {"route": "r"}, 0.0) in _samples(ours)  # not flushed yet
        tally.flush()

    asyncio.run(run())
    assert _samples(ours) == _samples(theirs)
    count = float(len(VALUES) + len(_LATENCY_BUCKETS))
    assert ("h_count", {"route": "r"}, count) in _samples(ours)


def test_counts_reach_the_counter_on_the_timer() -> None:
    registry = CollectorRegistry()
    counter = Counter("c", "x", ["k"], registry=registry)
    inc = Tally().counter(counter.labels("a")).inc
    seen: list[float | None] = []

    def value() -> float | None:
        return registry.get_sample_value("c_total", {"k": "a"})

    async def run() -> None:
        for _ in range(5):
            inc()
        seen.append(value())
        await asyncio.sleep(FLUSH_SECONDS * 3)
        seen.append(value())
        inc()  # a later update arms the timer again
        await asyncio.sleep(FLUSH_SECONDS * 3)
        seen.append(value())

    asyncio.run(run())
    assert seen == [0.0, 5.0, 6.0]


def test_outside_an_event_loop_updates_apply_at_once() -> None:
    ours, theirs = _pair()
    Tally().histogram(ours.labels("r")).observe(0.3)
    theirs.labels("r").observe(0.3)
    assert _samples(ours) == _samples(theirs)


def test_a_child_without_the_expected_internals_uses_its_own_observe() -> None:
    class Plain:
        def __init__(self) -> None:
            self.seen: list[float] = []

        def observe(self, amount: float) -> None:
            self.seen.append(amount)

    plain = Plain()
    Tally().histogram(plain).observe(0.5)
    assert plain.seen == [0.5]
