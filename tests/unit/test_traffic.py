"""The status page's traffic window: totals read from real prometheus-client series, the
window's difference, and histogram quantiles as Prometheus computes them."""

from __future__ import annotations

import math

from prometheus_client import CollectorRegistry

from gateway.observe.metrics import Metrics
from gateway.observe.traffic import TrafficWindow, quantile
from tests.unit.test_status import Clock


def test_quantile_interpolates_within_the_bucket_like_histogram_quantile() -> None:
    buckets = {0.1: 50.0, 0.2: 90.0, 0.4: 100.0, math.inf: 100.0}
    assert quantile(buckets, 0.5) == 0.1  # the 50th of 100 is the last of the first bucket
    assert quantile(buckets, 0.7) == 0.1 + 0.1 * (70 - 50) / 40
    assert quantile(buckets, 0.99) == 0.2 + 0.2 * (99 - 90) / 10
    assert quantile({0.1: 0.0, math.inf: 0.0}, 0.5) is None
    assert quantile({0.1: 1.0, math.inf: 3.0}, 0.9) == 0.1  # in +Inf: the last finite bound


def _registry_with(metrics: Metrics) -> CollectorRegistry:
    return metrics.current()


def test_the_window_is_what_happened_since_its_oldest_reading() -> None:
    metrics = Metrics()
    clock = Clock()
    window = TrafficWindow(lambda: _registry_with(metrics), minutes=2, clock=clock)
    requests = metrics.requests
    requests.labels("api", "GET", "200").inc(3)
    requests.labels("api", "GET", "503").inc()
    metrics.request_duration.labels("api").observe(0.002)
    metrics.upstream_requests.labels("orders", "ok").inc(3)
    metrics.upstream_target_healthy.labels("orders", "10.0.0.1:80").set(1)
    metrics.upstream_target_healthy.labels("orders", "10.0.0.2:80").set(0)

    totals, span = window.window()  # no reading yet: everything since start
    assert span == 0.0 and totals.codes["api"] == {"2xx": 3, "5xx": 1}
    window.sample()
    clock.now += 60
    requests.labels("api", "POST", "201").inc(2)
    requests.labels("api", "GET", "403").inc()
    metrics.request_duration.labels("api").observe(0.3)
    totals, span = window.window()
    assert span == 60 and totals.codes["api"] == {"2xx": 2, "4xx": 1}
    assert totals.buckets["api"][math.inf] == 1 and quantile(totals.buckets["api"], 0.5) > 0.25
    assert totals.outcomes["orders"] == {}
    assert totals.healthy == {("orders", "10.0.0.1:80"): True, ("orders", "10.0.0.2:80"): False}

    window.sample()
    clock.now += 100  # the first reading has left the window; the second is the base
    requests.labels("api", "GET", "200").inc()
    totals, span = window.window()
    assert span == 100 and totals.codes["api"] == {"2xx": 1}
    clock.now += 600  # no reading inside the window: the newest one is the base
    totals, span = window.window()
    assert span == 700 and totals.codes["api"] == {"2xx": 1}
