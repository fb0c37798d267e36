"""Process facts on /metrics: what was built, how much memory each process holds, how often
the supervisor of `run --workers N` had to restart a worker.

prometheus-client's own process collector describes only the process it runs in, and under
`--workers N` the supervisor serves the workers' series from files. So the supervisor reads
every process's resident memory from /proc itself and labels it by role and slot."""

from __future__ import annotations

import os
import platform
import ssl
from collections.abc import Callable, Iterator
from typing import NamedTuple

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway import __version__

PREFIX = "mtls_gateway_"
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class Process(NamedTuple):
    role: str  # gateway (one process) | supervisor | worker
    slot: str  # a worker's slot, "" otherwise
    pid: int
    restarts: int = 0  # a worker's restarts so far


def resident_bytes(pid: int) -> int | None:
    """The resident set of `pid` in bytes, or None when it is gone (or there is no /proc)."""
    try:
        with open(f"/proc/{pid}/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


def build_labels(compiled: bool) -> dict[str, str]:
    """`mtls_gateway_build_info`'s labels: which code and which libraries this process runs."""
    return {
        "version": __version__,
        "python": platform.python_version(),
        "openssl": ssl.OPENSSL_VERSION,
        "compiled": "true" if compiled else "false",
    }


class ProcessCollector(Collector):
    """Resident memory of each process `processes()` names; worker restarts when asked."""

    def __init__(self, processes: Callable[[], list[Process]], restarts: bool = False) -> None:
        self._processes = processes
        self._restarts = restarts

    def collect(self) -> Iterator[Metric]:
        processes = self._processes()
        memory = GaugeMetricFamily(
            PREFIX + "process_resident_memory_bytes",
            "Resident memory of each gateway process (role: gateway, supervisor or worker).",
            labels=["role", "slot"],
        )
        for proc in processes:
            rss = resident_bytes(proc.pid)
            if rss is not None:
                memory.add_metric([proc.role, proc.slot], rss)
        yield memory
        if self._restarts:
            restarts = CounterMetricFamily(
                PREFIX + "worker_restarts",
                "Workers the supervisor restarted after they exited, by slot.",
                labels=["slot"],
            )
            for proc in processes:
                if proc.role == "worker":
                    restarts.add_metric([proc.slot], proc.restarts)
            yield restarts
