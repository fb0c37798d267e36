"""What the admin port shows: /status (ghostunnel's shape), /certs (Envoy's idea), and / in HTML."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol

from gateway import __version__
from gateway.config.model import GatewayConfig, Matcher, Policy, RouteConfig
from gateway.observe.activity import Activity
from gateway.pki.certfiles import HeldCert
from gateway.request.policy import eku_name

DAY = 86400.0
WARN_DAYS = 28
CRITICAL_DAYS = 14


class StatusSource(Protocol):
    """What the running gateway exposes to the admin port."""

    started_at: float

    @property
    def last_reload(self) -> float | None: ...

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
    """Every certificate (and CRL) the gateway holds, once with the listeners that hold it,
    soonest expiry first."""
    now = time.time()
    items: dict[tuple[str, str, str, str, float], dict[str, Any]] = {}
    for c in sorted(src.held_certs(), key=lambda h: h.not_after):
        key = (c.kind, c.name, c.serial, c.path, c.not_after)
        if key in items:
            if c.listener and c.listener not in items[key]["listeners"]:
                items[key]["listeners"].append(c.listener)
            continue
        items[key] = {
            "kind": c.kind,
            "name": c.name,
            "subject": c.subject,
            "issuer": c.issuer,
            "serial_number": c.serial or None,
            "valid_from": _iso(c.not_before) if c.not_before else None,
            "expiration_time": _iso(c.not_after),
            "days_until_expiration": round((c.not_after - now) / DAY, 2),
            "path": c.path,
            "listeners": [c.listener] if c.listener else [],
        }
    return {"certificates": list(items.values())}


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
