"""Series that alert rules rely on exist from start-up, and the watcher cannot feed back."""

from __future__ import annotations

import io
import json
import logging

from gateway.base import log
from gateway.observe.metrics import Metrics


def _samples(m: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in m.registry.collect()
        for s in family.samples
    }


def test_reload_counters_exist_at_zero_from_the_start() -> None:
    """increase() sees the first failure only when the series was there before it."""
    samples = _samples(Metrics())
    for result in ("success", "failure"):
        assert samples[("mtls_gateway_config_reloads_total", (("result", result),))] == 0


def test_the_file_watchers_own_lines_stay_below_info() -> None:
    """watchfiles logs each change it sees at INFO: with stdout in a watched folder, every line
    would be a change, and the next line too."""
    out = io.StringIO()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        log.setup("info", out)
        logging.getLogger("watchfiles.main").info("1 change detected")
        logging.getLogger("gateway.config").info("config reloaded")
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in handlers:
            root.addHandler(h)
        root.setLevel(level)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [x["msg"] for x in lines] == ["config reloaded"]
