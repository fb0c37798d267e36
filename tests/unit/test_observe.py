"""The request path's histogram observations land in the same buckets, sum and count as
prometheus-client's own `observe`."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram

from gateway.metrics import _LATENCY_BUCKETS
from gateway.observe import Observer

VALUES = [0.0, 0.0005, 0.001, 0.0049, 0.005, 0.0051, 0.1, 0.25, 2.5, 9.99, 10.0, 60.0, 1e9]


def _samples(histogram: Histogram) -> list[tuple[str, dict[str, str], float]]:
    return [
        (s.name, s.labels, s.value)
        for metric in histogram.collect()
        for s in metric.samples
        if not s.name.endswith("_created")
    ]


def test_the_same_buckets_as_prometheus_client() -> None:
    ours = Histogram("ours", "x", ["route"], buckets=_LATENCY_BUCKETS, registry=CollectorRegistry())
    theirs = Histogram(
        "ours", "x", ["route"], buckets=_LATENCY_BUCKETS, registry=CollectorRegistry()
    )
    observe = Observer(ours.labels("r")).observe
    for value in VALUES + list(_LATENCY_BUCKETS):
        observe(value)
        theirs.labels("r").observe(value)
    assert _samples(ours) == _samples(theirs)
    assert ("ours_count", {"route": "r"}, float(len(VALUES) + len(_LATENCY_BUCKETS))) in _samples(
        ours
    )


def test_a_child_without_the_expected_internals_uses_its_own_observe() -> None:
    class Plain:
        def __init__(self) -> None:
            self.seen: list[float] = []

        def observe(self, amount: float) -> None:
            self.seen.append(amount)

    plain = Plain()
    Observer(plain).observe(0.5)
    assert plain.seen == [0.5]
