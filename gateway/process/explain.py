"""`mtls-gateway explain`: would this client certificate get through, and why, step by step."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from gateway.base.errors import ConfigError, DownstreamError
from gateway.base.reasons import HANDSHAKE_HINTS, HandshakeReason, PolicyReason
from gateway.config.listener import ListenerConfig
from gateway.config.model import GatewayConfig
from gateway.downstream.admission import load_bundle
from gateway.pki import crl as crls
from gateway.pki.identity import parse_identity
from gateway.pki.ocsp import OcspChecker
from gateway.pki.opensslcheck import openssl_verdict
from gateway.pki.verify import Step, Verdict, load_certs, verify_chain
from gateway.request.policy import RoutePolicy
from gateway.request.routing import Router, normalise_host, normalise_target


class InputError(Exception):
    """The certificate or the question cannot be read (exit 2)."""


@dataclass
class Explanation:
    """The verdict, where it was decided, and every step that led there."""

    allowed: bool
    stage: str  # handshake (by OpenSSL or the strict profile) | ocsp | policy | route | done
    reason: str | None
    listener: str
    route: str | None
    steps: list[Step] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    fix: str | None = None
    # openssl | checks (--at) | strict | ocsp | route | policy; None when allowed
    decided_by: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["verdict"] = "allowed" if self.allowed else "denied"
        return out


def read_client_cert(
    path: str, password: str | None, extra: list[str]
) -> tuple[x509.Certificate, list[x509.Certificate]]:
    """Leaf and intermediates from PEM, DER or PKCS#12 (+ any --chain files)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    certs: list[x509.Certificate]
    try:
        certs = load_certs(data)
    except ValueError:
        try:
            _, leaf, more = pkcs12.load_key_and_certificates(
                data, password.encode() if password is not None else None
            )
        except ValueError as exc:
            hint = (
                ""
                if password is not None
                else " (a PKCS#12 file needs --password-file or --password-env)"
            )
            raise InputError(
                f"{path} is not a PEM/DER certificate or readable PKCS#12: {exc}{hint}"
            ) from None
        if leaf is None:
            raise InputError(f"{path}: the PKCS#12 file holds no certificate") from None
        certs = [leaf, *more]
    for chain_path in extra:
        try:
            certs += load_certs(Path(chain_path).read_bytes())
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read intermediates from {chain_path}: {exc}") from None
    return certs[0], certs[1:]


def _listener(cfg: GatewayConfig, name: str | None) -> tuple[int, ListenerConfig]:
    for i, lst in enumerate(cfg.listeners):
        if name is None or lst.name == name:
            return i, lst
    names = ", ".join(lst.name for lst in cfg.listeners)
    raise InputError(f"no listener named {name!r}; defined: {names}")


def _listener_crls(lst: ListenerConfig, where: str) -> list[x509.CertificateRevocationList] | None:
    if not lst.tls.crl:
        return None
    found: list[x509.CertificateRevocationList] = []
    for j, source in enumerate(lst.tls.crl):
        path = crls.source_path(source)
        try:
            found += crls.parse_crls(Path(path).read_bytes())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read CRL {path}: {exc}", f"{where}.crl[{j}]") from None
    return found


def explain(
    cfg: GatewayConfig,
    leaf: x509.Certificate,
    intermediates: list[x509.Certificate],
    *,
    listener: str | None = None,
    route: str | None = None,
    host: str | None = None,
    path: str | None = None,
    method: str = "GET",
    online: bool = False,
    at: dt.datetime | None = None,
) -> Explanation:
    """Everything the gateway would decide for this certificate, in order."""
    i, lst = _listener(cfg, listener)
    where = f"listeners[{i}].tls"
    out = Explanation(True, "done", None, lst.name, None)
    out.steps.append(
        Step(
            "listener",
            True,
            f"{lst.name} ({lst.bind}): client_auth {lst.tls.client_auth}, "
            f"verify_profile {lst.tls.verify_profile}, CRLs {'on' if lst.tls.crl else 'off'}, "
            f"OCSP {lst.tls.ocsp.mode}",
        )
    )
    if lst.tls.client_auth != "none":
        trusted = load_bundle(lst.tls.client_ca, where)
        verdict = verify_chain(
            leaf, intermediates, trusted, at, crls=_listener_crls(lst, where), profile="openssl"
        )
        out.steps += verdict.steps
        ok, reason = _handshake_verdict(out, lst, where, leaf, intermediates, verdict, at)
        if not ok:
            assert reason is not None
            out.decided_by = "openssl" if at is None else "checks"
            return _denied(out, "handshake", reason.value, HANDSHAKE_HINTS[reason])
        strict = verify_chain(leaf, intermediates, trusted, at, profile="strict")
        if lst.tls.verify_profile == "strict":  # as the gateway: after the handshake, no CRLs
            out.steps.append(Step("strict", strict.ok, f"verify_profile strict: {strict.detail}"))
            if not strict.ok:
                assert strict.reason is not None
                out.decided_by = "strict"
                hint = HANDSHAKE_HINTS[strict.reason]
                return _denied(out, "handshake", strict.reason.value, hint)
        elif not strict.ok:
            out.notes.append(
                f"verify_profile: strict (the default) would reject it ({strict.reason}): "
                f"{strict.detail}"
            )
        if lst.tls.ocsp.mode != "off":
            issuer = verdict.chain[1] if len(verdict.chain) > 1 else verdict.chain[0]
            stop = _ocsp_step(out, lst, leaf, issuer, online)
            if stop:
                return out
    return _route_and_policy(out, cfg, leaf, route, host, path, method)


def _handshake_verdict(
    out: Explanation,
    lst: ListenerConfig,
    where: str,
    leaf: x509.Certificate,
    intermediates: list[x509.Certificate],
    model: Verdict,
    at: dt.datetime | None,
) -> tuple[bool, HandshakeReason | None]:
    """OpenSSL's own verdict, by the listener's context (opensslcheck); the step-by-step checks
    before it say why. At another time than now OpenSSL cannot be asked: the checks decide."""
    if at is not None:
        out.notes.append(
            "--at: OpenSSL verifies at the current time only, so the handshake verdict here is "
            "the step-by-step checks' (a model of OpenSSL), not OpenSSL's"
        )
        return model.ok, model.reason
    real = openssl_verdict(lst.tls, where, leaf, intermediates)
    code = f" (verify code {real.verify_code})" if real.verify_code else ""
    out.steps.append(
        Step("openssl", real.ok, f"the handshake, by {ssl.OPENSSL_VERSION}: {real.detail}{code}")
    )
    if (model.ok, model.reason) != (real.ok, real.reason):
        out.notes.append(
            f"the step-by-step checks say {model.reason or 'ok'}, OpenSSL says "
            f"{real.reason or 'ok'}: OpenSSL decides the handshake"
        )
    return real.ok, real.reason


def _ocsp_step(
    out: Explanation,
    lst: ListenerConfig,
    leaf: x509.Certificate,
    issuer: x509.Certificate,
    online: bool,
) -> bool:
    """Add the OCSP step; True when it decided (denied)."""
    if not online:
        out.notes.append("OCSP is on for this listener but was not asked; add --online to query it")
        return False

    async def ask() -> tuple[str, str]:
        checker = OcspChecker()
        try:
            result = await checker.check(leaf, issuer, lst.tls.ocsp)
        finally:
            await checker.close()
        return result.status, f"{result.detail} ({result.responder or 'no responder'})"

    status, detail = asyncio.run(ask())
    out.steps.append(Step("ocsp", status == "good", f"OCSP {status}: {detail}"))
    if status == "revoked":
        _denied(
            out, "ocsp", HandshakeReason.REVOKED.value, HANDSHAKE_HINTS[HandshakeReason.REVOKED]
        )
        return True
    if status != "good":
        if lst.tls.ocsp.mode == "hard":
            reason = HandshakeReason.OCSP_ERROR
            _denied(out, "ocsp", reason.value, HANDSHAKE_HINTS[reason])
            return True
        out.notes.append("ocsp mode is soft: the client is let through and the soft-fail counted")
    return False


_POLICY_FIXES = {
    PolicyReason.EKU_MISSING: "reissue the client certificate with the EKU the route requires, or "
    "remove it from the route's policy.required_eku",
    PolicyReason.NOT_ALLOWED: "add an allow entry that matches this client (for example its "
    "san_uri or subject CN) to the route's policy.allow, or use a certificate that matches one",
    PolicyReason.DENIED: "this certificate matches a deny entry; remove the entry or issue a new "
    "certificate",
    PolicyReason.NO_CLIENT_CERT: "present a client certificate",
}


def _route_and_policy(
    out: Explanation,
    cfg: GatewayConfig,
    leaf: x509.Certificate,
    route: str | None,
    host: str | None,
    path: str | None,
    method: str,
) -> Explanation:
    index = {r.name: i for i, r in enumerate(cfg.routes)}
    if route is None and host is None and path is None:
        out.notes.append("no route given (--route, or --host/--path): handshake verdict only")
        return out
    if route is not None:
        if route not in index:
            raise InputError(f"no route named {route!r}; defined: {', '.join(index)}")
        name = route
        out.steps.append(Step("route", True, f"route {name!r} (given)"))
    else:
        try:
            target = normalise_target(path or "/")
            matched = Router(cfg.routes).route(normalise_host(host), target.path, method.upper())
        except DownstreamError as exc:
            out.steps.append(Step("route", False, f"{exc.code}: {exc}"))
            return _denied(out, "route", exc.code, "no route serves this host and path; add one")
        name = matched.name
        out.steps.append(
            Step("route", True, f"{method.upper()} {host or '*'}{target.path} -> route {name!r}")
        )
    out.route = name
    i = index[name]
    try:
        ident = parse_identity(leaf.public_bytes(serialization.Encoding.DER))
    except ValueError as exc:
        out.steps.append(Step("policy", False, f"the certificate cannot be read for policy: {exc}"))
        return _denied(out, "policy", PolicyReason.NO_CLIENT_CERT.value, "reissue the certificate")
    decision = RoutePolicy(cfg.routes[i].policy, f"routes[{i}].policy").decide(ident)
    out.steps.append(Step("policy", decision.allowed, decision.detail))
    if not decision.allowed:
        assert decision.reason is not None
        return _denied(out, "policy", decision.reason.value, _POLICY_FIXES[decision.reason])
    return out


def _denied(out: Explanation, stage: str, reason: str, fix: str) -> Explanation:
    out.decided_by = out.decided_by or stage
    out.allowed = False
    out.stage = stage
    out.reason = reason
    out.fix = fix
    return out


def render(out: Explanation, cert_name: str) -> str:
    """The human-readable form."""
    if out.allowed:
        head = f"{cert_name}: ALLOWED on listener {out.listener!r}"
        head += f", route {out.route!r}" if out.route else " (handshake)"
    else:
        by = {
            "openssl": " by OpenSSL",
            "strict": " by the strict profile",
            "checks": " by the step-by-step checks",
        }.get(out.decided_by or "", "")
        head = f"{cert_name}: DENIED at {out.stage}{by} ({out.reason}) on listener {out.listener!r}"
        head += f", route {out.route!r}" if out.route else ""
    lines = [head]
    for step in out.steps:
        lines.append(f"  {'ok  ' if step.ok else 'FAIL'} {step.name:<10} {step.detail}")
    lines += [f"  note: {n}" for n in out.notes]
    if out.fix:
        lines.append(f"fix: {out.fix}")
    return "\n".join(lines)
