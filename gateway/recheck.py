"""Revocation that reaches open connections: after a reload (a new CRL, trust bundle or
config), every open connection's client certificate is verified again against the new state,
and a connection whose client is no longer accepted is closed (after the answer in progress),
counted and logged with the identity."""

from __future__ import annotations

import asyncio
import datetime as dt

from cryptography import x509

from gateway import crl as crls
from gateway.admission import load_bundle
from gateway.config import TlsConfig
from gateway.errors import ConfigError
from gateway.listener import Listener
from gateway.log import event, tls_log
from gateway.metrics import Metrics
from gateway.verify import Verdict, verify_chain


def _crls(tls: TlsConfig) -> list[x509.CertificateRevocationList] | None:
    if not crls.has_crls(tls):
        return None
    found: list[x509.CertificateRevocationList] = []
    for source in tls.crl:
        with open(crls.source_path(source), "rb") as fh:
            found += crls.parse_crls(fh.read())
    return found


async def recheck(listener: Listener, tls: TlsConfig, where: str, metrics: Metrics) -> int:
    """Verify every open connection of `listener` with a client certificate against `tls` as
    it now is; close the ones no longer accepted. Returns how many were closed. Each distinct
    certificate is verified once, and the loop yields between batches so that many open
    connections do not stall the requests of the others."""
    conns = [(conn, info) for conn, info in listener.server.conns.items() if info.identity]
    if not conns or tls.client_auth == "none":
        return 0
    try:
        bundle = load_bundle(tls.client_ca, where)
        crl_list = _crls(tls)
    except (OSError, ValueError, ConfigError) as exc:  # the reload checked them: a race
        tls_log.warning(
            "open connections not re-checked", extra=event(listener=listener.name, error=str(exc))
        )
        return 0
    now = dt.datetime.now(dt.UTC)
    verdicts: dict[tuple[str, tuple[bytes, ...]], Verdict] = {}
    closed = 0
    for n, (conn, info) in enumerate(conns):
        if n % 64 == 63:
            await asyncio.sleep(0)
        if conn.closed:
            continue
        ident = info.identity
        assert ident is not None
        key = (ident.sha256, info.chain)
        verdict = verdicts.get(key)
        if verdict is None:
            verdict = verdicts[key] = verify_chain(
                ident.der, list(info.chain), bundle, at=now, crls=crl_list,
                profile=tls.verify_profile,
            )  # fmt: skip
        if verdict.ok:
            continue
        assert verdict.reason is not None
        closed += 1
        metrics.connections_rechecked.labels(listener.name, verdict.reason.value).inc()
        tls_log.info(
            "open connection closed: its client is no longer accepted",
            extra=event(
                listener=listener.name,
                peer=info.peer_ip,
                reason=verdict.reason.value,
                detail=verdict.detail,
                client_subject=ident.subject,
                client_issuer=ident.issuer,
                client_serial=ident.serial,
                client_sha256=ident.sha256,
            ),
        )
        conn.close_when_answered()
    return closed
