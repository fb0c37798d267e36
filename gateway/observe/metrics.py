"""Every Prometheus series the gateway exports, declared once; the registry is injected.

Under `run --workers N` each worker writes its series to PROMETHEUS_MULTIPROC_DIR and the
supervisor serves their aggregate; each gauge says how workers combine (multiprocess_mode)."""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from gateway.observe.procstats import Process, ProcessCollector, build_labels
from gateway.observe.tally import Tally

PREFIX = "mtls_gateway_"

_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
)
_DAY = 86400.0
_REMAINING_BUCKETS = (0.0, _DAY, 7 * _DAY, 14 * _DAY, 28 * _DAY, 90 * _DAY, 180 * _DAY, 365 * _DAY)


class Metrics:
    """The gateway's series. Names are public surface: extend, never rename."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.tally = Tally()  # the per-request updates, added to the values below in batches
        r = self.registry
        self.tls_handshakes = Counter(
            PREFIX + "tls_handshakes_total",
            "TLS handshakes by listener and result (ok or the failure reason).",
            ["listener", "result"],
            registry=r,
        )
        self.tls_resumed = Counter(
            PREFIX + "tls_resumed_handshakes_total",
            "Successful TLS handshakes that resumed a session (no certificate sent or verified).",
            ["listener"],
            registry=r,
        )
        self.tls_handshake_duration = Histogram(
            PREFIX + "tls_handshake_duration_seconds",
            "Duration of successful TLS handshakes.",
            ["listener"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.connections_active = Gauge(
            PREFIX + "connections_active",
            "Open client connections (after the handshake), by the protocol ALPN chose.",
            ["listener", "protocol"],
            multiprocess_mode="livesum",
            registry=r,
        )
        self.requests = Counter(
            PREFIX + "requests_total",
            "HTTP requests answered, by route, method and status code.",
            ["route", "method", "code"],
            registry=r,
        )
        self.request_duration = Histogram(
            PREFIX + "request_duration_seconds",
            "Time from request head to response end.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.policy_denials = Counter(
            PREFIX + "policy_denials_total",
            "Requests denied by route policy, by reason.",
            ["route", "reason"],
            registry=r,
        )
        self.upstream_requests = Counter(
            PREFIX + "upstream_requests_total",
            "Requests sent upstream, by outcome.",
            ["upstream", "outcome"],
            registry=r,
        )
        self.upstream_duration = Histogram(
            PREFIX + "upstream_duration_seconds",
            "Time until the upstream's response headers.",
            ["upstream"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.certificate_expiry = Gauge(
            PREFIX + "certificate_expiry_timestamp_seconds",
            "notAfter of each certificate the gateway holds, nextUpdate of each CRL "
            "(kind: server, server_chain, ca, crl; serial: one series per certificate).",
            ["kind", "name", "serial"],
            multiprocess_mode="livemax",
            registry=r,
        )
        self.client_cert_remaining = Histogram(
            PREFIX + "client_certificate_remaining_seconds",
            "Remaining lifetime of client certificates presented in full handshakes.",
            buckets=_REMAINING_BUCKETS,
            registry=r,
        )
        self.config_reloads = Counter(
            PREFIX + "config_reloads_total",
            "Reload attempts by result (success, failure).",
            ["result"],
            registry=r,
        )
        for result in ("success", "failure"):  # at 0 from start-up: alerts see the first one
            self.config_reloads.labels(result)
        self.config_last_reload_success = Gauge(
            PREFIX + "config_last_reload_success_timestamp_seconds",
            "When the config was last loaded successfully (start or reload).",
            multiprocess_mode="livemax",
            registry=r,
        )
        self.config_last_reload_success.set_to_current_time()
        self.crl_fetches = Counter(
            PREFIX + "crl_fetches_total",
            "Scheduled CRL downloads by URL and result (success, failure).",
            ["url", "result"],
            registry=r,
        )
        self.ocsp_checks = Counter(
            PREFIX + "ocsp_checks_total",
            "OCSP checks of client certificates by listener and status "
            "(good, revoked, unknown, error); cached answers count too.",
            ["listener", "result"],
            registry=r,
        )
        self.headers_dropped = Counter(
            PREFIX + "request_headers_dropped_total",
            "Request header or trailer fields not forwarded: an identity family a client may not "
            "send, or a name with characters other than letters, digits and '-'.",
            ["listener", "reason"],
            registry=r,
        )
        self.connections_rechecked = Counter(
            PREFIX + "connections_closed_on_recheck_total",
            "Open connections closed because a reload (a new CRL, trust bundle or config) no "
            "longer accepts their client certificate, by the reason.",
            ["listener", "reason"],
            registry=r,
        )
        self.limits_hit = Counter(
            PREFIX + "limits_hit_total",
            "Times a resource limit bit, by listener and limit (connections, handshakes, "
            "handshakes_per_address, request_line, header_size, header_count, body_size, "
            "header_timeout, body_timeout).",
            ["listener", "limit"],
            registry=r,
        )
        self.connections_accepted = Counter(
            PREFIX + "connections_accepted_total",
            "TCP connections accepted (each ends as one tls_handshakes_total result).",
            ["listener"],
            registry=r,
        )
        self.upstream_target_healthy = Gauge(
            PREFIX + "upstream_target_healthy",
            "1 while a target may receive traffic (active checks pass, not ejected), else 0.",
            ["upstream", "target"],
            multiprocess_mode="livemin",
            registry=r,
        )
        labels = build_labels(_compiled())
        self.build_info = Gauge(
            PREFIX + "build_info",
            "Always 1; the labels say which version, Python, OpenSSL and build run.",
            list(labels),
            multiprocess_mode="livemax",
            registry=r,
        )
        self.build_info.labels(**labels).set(1)
        if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:  # else the supervisor reports memory
            pid = os.getpid()
            r.register(ProcessCollector(lambda: [Process("gateway", "", pid)]))

    def current(self) -> CollectorRegistry:
        """The registry, with every pending per-request update added first."""
        self.tally.flush()
        return self.registry


def _compiled() -> bool:
    from gateway import compiled

    return compiled()
