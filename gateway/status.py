"""What the admin port shows: /status (ghostunnel's shape), /certs (Envoy's idea), and / in HTML."""

from __future__ import annotations

import asyncio
import time
from html import escape
from typing import Any, Protocol

from gateway import __version__
from gateway.activity import Activity
from gateway.certfiles import HeldCert
from gateway.config import GatewayConfig, Matcher, Policy, RouteConfig
from gateway.policy import eku_name

DAY = 86400.0
WARN_DAYS = 28
CRITICAL_DAYS = 14


class StatusSource(Protocol):
    """What the running gateway exposes to the admin port."""

    started_at: float
    last_reload: float | None

    @property
    def activity(self) -> Activity: ...

    @property
    def config(self) -> GatewayConfig: ...

    def ready(self) -> bool: ...

    def held_certs(self) -> list[HeldCert]: ...

    def listener_addresses(self) -> dict[str, str]: ...


def _iso(ts: float | None) -> str | None:
    return None if ts is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def status_fields(ready: bool, started_at: float, not_ready: str) -> dict[str, Any]:
    """The fields every /status answer starts with (ghostunnel's `/_status` shape)."""
    return {
        "ok": ready,
        "status": "ok" if ready else "unavailable",
        "message": "listening" if ready else f"not ready: {not_ready}",
        "version": __version__,
        "uptime_seconds": round(time.time() - started_at, 1),
        "started_at": _iso(started_at),
    }


def status_doc(src: StatusSource) -> tuple[int, dict[str, Any]]:
    """ghostunnel-style status: 200 `ok` when serving, 503 otherwise."""
    ready = src.ready()
    doc = {
        **status_fields(ready, src.started_at, "starting or draining"),
        "last_reload": _iso(src.last_reload),
        "listeners": src.listener_addresses(),
        "tasks": len(asyncio.all_tasks()),  # a leak shows as steady growth
    }
    return (200 if ready else 503), doc


def certs_doc(src: StatusSource) -> dict[str, Any]:
    """Every certificate (and CRL) the gateway holds, soonest expiry first."""
    now = time.time()
    items = []
    for c in sorted(src.held_certs(), key=lambda h: h.not_after):
        items.append(
            {
                "kind": c.kind,
                "name": c.name,
                "subject": c.subject,
                "issuer": c.issuer,
                "serial_number": c.serial or None,
                "valid_from": _iso(c.not_before) if c.not_before else None,
                "expiration_time": _iso(c.not_after),
                "days_until_expiration": round((c.not_after - now) / DAY, 2),
                "path": c.path,
            }
        )
    return {"certificates": items}


# --------------------------------------------------------------------------- policy in words


def _values(vals: tuple[str, ...]) -> str:
    return " or ".join(vals)


def describe_matcher(m: Matcher) -> str:
    parts: list[str] = []
    for which in ("subject", "issuer"):
        names = getattr(m, which)
        if names is not None:
            parts += [f"{which} {attr} {_values(v)}" for attr, v in names.items()]
    labels = {
        "san_dns": "SAN DNS",
        "san_uri": "SAN URI",
        "san_email": "SAN e-mail",
        "san_ip": "SAN IP",
        "serial": "serial",
        "fingerprint_sha256": "fingerprint",
        "spki_sha256": "key pin",
    }
    for field, label in labels.items():
        vals = getattr(m, field)
        if vals is not None:
            parts.append(f"{label} {_values(vals)}")
    return " and ".join(parts)


def describe_policy(p: Policy) -> str:
    """The route's policy as a sentence an operator can check at a glance."""
    out: list[str] = []
    if p.require_client_cert:
        out.append("client certificate required")
    else:
        out.append("anonymous clients admitted")
    if p.deny:
        out.append("denies " + "; ".join(describe_matcher(m) for m in p.deny))
    if p.required_eku:
        out.append("leaf must list EKU " + ", ".join(eku_name(e) for e in p.required_eku))
    if p.allow == "any" or (p.allow is None and not p.require_client_cert):
        out.append("allows any verified client")
    elif isinstance(p.allow, tuple):
        out.append("allows " + " | ".join(describe_matcher(m) for m in p.allow))
    return "; ".join(out)


def describe_match(r: RouteConfig) -> str:
    host = r.match.host or "any host"
    methods = ", ".join(r.match.methods) if r.match.methods else "any method"
    return f"{host} {r.match.path_prefix} ({methods})"


# --------------------------------------------------------------------------- HTML

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#1d2330;background:#fafbfc}
h1{font-size:1.4em;margin:0 0 .2em}h2{font-size:1.1em;margin:1.4em 0 .4em}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{border:1px solid #d8dde6;padding:.3em .5em;text-align:left;vertical-align:top}
th{background:#eef1f6}.ok{color:#17703a;font-weight:600}.bad{color:#b3261e;font-weight:600}
.days-ok{background:#e3f5e8}.days-warn{background:#fff1cc}.days-critical{background:#fbd9d6}
.muted{color:#667085}code{font-size:.95em}
"""


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
    body = "".join("<tr>" + "".join(rows_i) + "</tr>" for rows_i in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _td(text: object, cls: str = "") -> str:
    attr = f' class="{cls}"' if cls else ""
    return f"<td{attr}>{escape(str(text))}</td>"


def render_page(src: StatusSource) -> str:
    """The whole status page: self-contained HTML, every value escaped."""
    code, st = status_doc(src)
    cfg = src.config
    addresses = src.listener_addresses()
    listeners = [
        [
            _td(lst.name),
            _td(addresses.get(lst.name, lst.bind)),
            _td(lst.tls.client_auth),
            _td(f"TLS {lst.tls.min_version}+"),
            _td(lst.tls.verify_profile),
            _td("on" if lst.tls.crl else "off"),
            _td(lst.tls.ocsp.mode),
        ]
        for lst in cfg.listeners
    ]
    routes = [
        [_td(r.name), _td(describe_match(r)), _td(r.upstream), _td(describe_policy(r.policy))]
        for r in cfg.routes
    ]
    now = time.time()
    certs = []
    for c in certs_doc(src)["certificates"]:
        days = c["days_until_expiration"]
        certs.append(
            [
                _td(c["kind"]),
                _td(c["name"]),
                _td(c["subject"]),
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
            _td(_iso(r.ts)),
            _td(r.kind),
            _td(r.where),
            _td(r.reason, "bad"),
            _td(r.peer),
            _td(r.detail[:300]),
        ]
        for r in act.recent()
    ]
    state_cls = "ok" if code == 200 else "bad"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="15">
<title>mtls-gateway status</title><style>{_CSS}</style></head><body>
<h1>mtls-gateway <span class="{state_cls}">{escape(str(st["status"]))}</span></h1>
<p class="muted">version {escape(__version__)} · up {escape(_uptime(now - src.started_at))} ·
started {escape(str(st["started_at"]))} · last reload {escape(str(st["last_reload"] or "never"))}</p>
<h2>Listeners</h2>
{_table(["name", "address", "client auth", "TLS", "profile", "CRL", "OCSP"], listeners, "no listeners")}
<h2>Routes (first match wins)</h2>
{_table(["route", "match", "upstream", "policy"], routes, "no routes")}
<h2>Certificates</h2>
{_table(["kind", "name", "subject", "expires (UTC)", "days left"], certs, "no certificates loaded")}
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
