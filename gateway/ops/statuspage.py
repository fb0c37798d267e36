"""The admin port's page (`/`): one self-contained HTML page an operator on call reads top
down: is it serving, which workers, what traffic each route had and how fast, which upstream
targets are healthy, which certificates expire when, and who was rejected and why."""

from __future__ import annotations

import time
from collections import Counter
from html import escape
from typing import Any, Final

from gateway import __version__
from gateway.observe.traffic import Totals, quantile
from gateway.ops.status import (
    CRITICAL_DAYS,
    WARN_DAYS,
    StatusSource,
    certs_doc,
    describe_match,
    describe_policy,
    status_doc,
)

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#1d2330;background:#fafbfc}
h1{font-size:1.4em;margin:0 0 .2em}h2{font-size:1.1em;margin:1.4em 0 .4em}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{border:1px solid #d8dde6;padding:.3em .5em;text-align:left;vertical-align:top}
th{background:#eef1f6}.ok{color:#17703a;font-weight:600}.bad{color:#b3261e;font-weight:600}
.days-ok{background:#e3f5e8}.days-warn{background:#fff1cc}.days-critical{background:#fbd9d6}
.muted{color:#667085}code{font-size:.95em}td.num{text-align:right}
"""
MIB = 1024 * 1024
NONE = "-"


def _days_class(days: float) -> str:
    if days < CRITICAL_DAYS:
        return "days-critical"
    if days < WARN_DAYS:
        return "days-warn"
    return "days-ok"


def _table(headers: list[str], rows: list[list[str]], empty: str) -> str:
    if not rows:
        return f'<p class="muted">{escape(empty)}</p>'
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _td(text: object, cls: str = "") -> str:
    attr = f' class="{cls}"' if cls else ""
    return f"<td{attr}>{escape(str(text))}</td>"


def _ms(seconds: float | None) -> str:
    return NONE if seconds is None else f"{seconds * 1000:.1f} ms"


def _span(seconds: float) -> str:
    return "since start" if seconds < 60 else f"last {round(seconds / 60)} min"


def route_rows(src: StatusSource, traffic: Totals) -> list[list[str]]:
    """Each route in match order: its upstream and policy, then the window's requests by
    status class and its latency (p50, p99)."""
    rows = []
    for r in src.config.routes:
        codes = traffic.codes.get(r.name, Counter())
        total = sum(codes.values())
        buckets = traffic.buckets.get(r.name, {})
        errors = codes.get("5xx", 0)
        rows.append(
            [
                _td(r.name),
                _td(describe_match(r)),
                _td(r.upstream),
                _td(total, "num"),
                _td(codes.get("2xx", 0), "num"),
                _td(codes.get("3xx", 0), "num"),
                _td(codes.get("4xx", 0), "num"),
                _td(errors, "num bad" if errors else "num"),
                _td(_ms(quantile(buckets, 0.5)), "num"),
                _td(_ms(quantile(buckets, 0.99)), "num"),
                _td(describe_policy(r.policy)),
            ]
        )
    return rows


# an upstream's `protocol`, as the listeners' ALPN column names protocols
UPSTREAM_PROTOCOLS: Final = {"h1": "http/1.1", "h2c": "h2c", "h2": "h2"}


def upstream_rows(src: StatusSource, traffic: Totals) -> list[list[str]]:
    """Each upstream: what it speaks, its targets' health now and the window's outcomes."""
    rows = []
    protocols = {u.name: UPSTREAM_PROTOCOLS[u.protocol] for u in src.config.upstreams}
    for name in sorted({r.upstream for r in src.config.routes} | set(traffic.outcomes)):
        targets = sorted((t, ok) for (u, t), ok in traffic.healthy.items() if u == name)
        down = [t for t, ok in targets if not ok]
        health = f"{len(targets) - len(down)} of {len(targets)} healthy" if targets else NONE
        outcomes = ", ".join(f"{k} {n}" for k, n in sorted(traffic.outcomes.get(name, {}).items()))
        rows.append(
            [
                _td(name),
                _td(protocols.get(name, NONE)),
                _td(health, "bad" if down else "ok" if targets else ""),
                _td(", ".join(down) or NONE, "bad" if down else ""),
                _td(outcomes or "none"),
            ]
        )
    return rows


def worker_rows(workers: list[dict[str, Any]]) -> list[list[str]]:
    return [
        [
            _td(w["slot"]),
            _td(w["pid"] if w["pid"] is not None else "restarting"),
            _td("ready" if w["ready"] else "not ready", "ok" if w["ready"] else "bad"),
            _td(w["restarts"], "num bad" if w["restarts"] else "num"),
            _td(f"{w['memory_bytes'] / MIB:.0f} MiB" if w.get("memory_bytes") else NONE, "num"),
        ]
        for w in workers
    ]


def render_page(
    src: StatusSource, traffic: Totals, span: float, workers: list[dict[str, Any]] | None = None
) -> str:
    """The whole status page: self-contained HTML, every value escaped."""
    code, st = status_doc(src)
    addresses = src.listener_addresses()
    listeners = [
        [
            _td(lst.name),
            _td(addresses.get(lst.name, lst.bind)),
            _td("h2, http/1.1" if lst.http2 else "http/1.1"),  # what ALPN offers
            _td(lst.tls.client_auth),
            _td(f"TLS {lst.tls.min_version}+"),
            _td(lst.tls.verify_profile),
            _td("on" if lst.tls.crl else "off"),
            _td(lst.tls.ocsp.mode),
        ]
        for lst in src.config.listeners
    ]
    certs = []
    for c in certs_doc(src)["certificates"]:
        days = c["days_until_expiration"]
        certs.append(
            [
                _td(", ".join(c["listeners"]) or NONE),
                _td(c["kind"]),
                _td(c["name"]),
                _td(c["subject"]),
                _td(c["serial_number"] or NONE),
                _td(c["expiration_time"]),
                _td(f"{days:.1f}", _days_class(days)),
            ]
        )
    act = src.activity
    handshakes = [
        [_td(result), _td(n, "ok" if result == "ok" else "bad")]
        for result, n in act.handshakes().items()
    ]
    denials = [[_td(route), _td(reason), _td(n)] for (route, reason), n in act.denials().items()]
    recent = [
        [
            _td(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(r.ts))),
            _td(r.kind),
            _td(r.where),
            _td(r.reason, "bad"),
            _td(r.peer),
            _td(r.detail[:300]),
        ]
        for r in act.recent()
    ]
    state_cls = "ok" if code == 200 else "bad"
    workers_html = ""
    if workers is not None:
        heads = ["slot", "pid", "state", "restarts", "memory"]
        workers_html = f"<h2>Workers</h2>\n{_table(heads, worker_rows(workers), 'no workers')}"
    window = _span(span)
    route_heads = ["route", "match", "upstream", "requests", "2xx", "3xx", "4xx", "5xx", "p50",
                   "p99", "policy"]  # fmt: skip
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="15">
<title>mtls-gateway status</title><style>{_CSS}</style></head><body>
<h1>mtls-gateway <span class="{state_cls}">{escape(str(st["status"]))}</span></h1>
<p class="muted">version {escape(__version__)} · up {escape(_uptime(time.time() - src.started_at))} ·
started {escape(str(st["started_at"]))} · last reload {escape(str(st["last_reload"] or "never"))}</p>
{workers_html}
<h2>Routes, {escape(window)} (first match wins)</h2>
{_table(route_heads, route_rows(src, traffic), "no routes")}
<h2>Upstreams, {escape(window)}</h2>
{_table(["upstream", "protocol", "health", "unhealthy targets", "outcomes"], upstream_rows(src, traffic), "no upstreams")}
<h2>Listeners</h2>
{_table(["name", "address", "protocols", "client auth", "TLS", "profile", "CRL", "OCSP"], listeners, "no listeners")}
<h2>Certificates</h2>
{_table(["listeners", "kind", "name", "subject", "serial", "expires (UTC)", "days left"], certs, "no certificates loaded")}
<h2>Handshakes, last {act.minutes} minutes</h2>
{_table(["result", "count"], handshakes, "no handshakes yet")}
<h2>Policy denials, last {act.minutes} minutes</h2>
{_table(["route", "reason", "count"], denials, "no denials")}
<h2>Recent rejections</h2>
{_table(["time (UTC)", "stage", "listener / route", "reason", "peer", "detail"], recent, "no rejections")}
</body></html>
"""


def _uptime(seconds: float) -> str:
    minutes, _ = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h {minutes}m" if days else f"{hours}h {minutes}m"
