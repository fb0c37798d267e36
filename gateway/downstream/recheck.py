"""Revocation that reaches open connections: after a reload (a new CRL, trust bundle or
config), every open connection's client certificate is judged again as a new handshake would
be, and a connection whose client is no longer accepted is closed (after the answer in
progress), counted and logged with the identity. Listeners with OCSP are also asked again as
cached answers expire (`ocsp.cache_ttl`, at least every `OCSP_RECHECK_SECONDS`): a revocation
published by the responder reaches open connections.

"As a new handshake would be": OpenSSL itself on the listener's new context (trust bundle,
CRLs; `opensslcheck`), then the listener's post-handshake checks (strict profile, OCSP;
`admission`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from cryptography import x509

from gateway.base.errors import ConfigError
from gateway.base.log import event, tls_log
from gateway.config.listener import TlsConfig
from gateway.config.model import GatewayConfig
from gateway.downstream.admission import Admission
from gateway.downstream.listener import Listener
from gateway.observe.metrics import Metrics
from gateway.pki.identity import Identity
from gateway.pki.opensslcheck import OpenSslJudge
from gateway.pki.tls import Failure

OCSP_RECHECK_SECONDS = 300.0


async def recheck(
    listener: Listener,
    tls: TlsConfig,
    where: str,
    metrics: Metrics,
    admission: Admission | None,
    *,
    handshake: bool = True,
) -> int:
    """Judge every open connection of `listener` with a client certificate against `tls` as it
    now is (`handshake=False`: the post-handshake checks only, for the OCSP round); close the
    ones no longer accepted. Returns how many were closed. Each distinct certificate is judged
    once, and the loop yields between batches so that many open connections do not stall the
    requests of the others."""
    conns = [(conn, info) for conn, info in listener.server.conns.items() if info.identity]
    if not conns or tls.client_auth == "none":
        return 0
    judge: OpenSslJudge | None = None
    if handshake:
        try:
            judge = OpenSslJudge(tls, where)
        except (OSError, ValueError, ConfigError) as exc:  # the reload checked them: a race
            tls_log.warning(
                "open connections not re-checked",
                extra=event(listener=listener.name, error=str(exc)),
            )
            return 0
    decided: dict[tuple[str, tuple[bytes, ...]], Failure | None] = {}
    closed = 0
    for n, (conn, info) in enumerate(conns):
        if n % 64 == 63:
            await asyncio.sleep(0)
        if conn.closed:
            continue
        ident = info.identity
        assert ident is not None
        key = (ident.sha256, info.chain)
        if key not in decided:
            decided[key] = await _judge(judge, admission, ident, info.chain)
        failure = decided[key]
        if failure is None:
            continue
        closed += 1
        metrics.connections_rechecked.labels(listener.name, failure.reason.value).inc()
        tls_log.info(
            "open connection closed: its client is no longer accepted",
            extra=event(
                listener=listener.name,
                peer=info.peer_ip,
                reason=failure.reason.value,
                detail=failure.detail,
                client_subject=ident.subject,
                client_issuer=ident.issuer,
                client_serial=ident.serial,
                client_sha256=ident.sha256,
            ),
        )
        conn.close_when_answered()
    return closed


async def _judge(
    judge: OpenSslJudge | None,
    admission: Admission | None,
    ident: Identity,
    chain: tuple[bytes, ...],
) -> Failure | None:
    """The failure a new handshake with this certificate would meet, or None."""
    if judge is not None:
        leaf = x509.load_der_x509_certificate(ident.der)
        sent = [x509.load_der_x509_certificate(c) for c in chain]
        real = judge.verdict(leaf, sent)
        if not real.ok:
            assert real.reason is not None
            return Failure(real.reason, real.verify_code, real.detail)
    if admission is not None and admission.needed:
        return await admission.check(ident, chain)
    return None


Admissions = dict[str, Admission]


async def recheck_all(
    listeners: dict[str, Listener],
    cfg: GatewayConfig,
    admissions: Admissions,
    metrics: Metrics,
    *,
    skip: set[str] | frozenset[str] = frozenset(),
    ocsp_only: bool = False,
) -> None:
    """`recheck` every listener of `cfg` that is open and not in `skip` (a listener opened by
    this reload has no connection from before it); `ocsp_only`: the OCSP round, on the
    listeners with OCSP, post-handshake checks alone."""
    for i, lst in enumerate(cfg.listeners):
        listener = listeners.get(lst.name)
        if listener is None or lst.name in skip or (ocsp_only and lst.tls.ocsp.mode == "off"):
            continue
        await recheck(
            listener, lst.tls, f"listeners[{i}].tls", metrics, admissions.get(lst.name),
            handshake=not ocsp_only,
        )  # fmt: skip


async def ocsp_rounds(
    state: Callable[[], tuple[dict[str, Listener], GatewayConfig, Admissions]], metrics: Metrics
) -> None:
    """Open connections of listeners with OCSP are asked about again as cached answers expire
    (every `ocsp.cache_ttl`, at most every OCSP_RECHECK_SECONDS): a revocation the responder
    publishes closes them. `state` gives the gateway's current listeners, config and checks."""
    while True:
        ttls = [lst.tls.ocsp.cache_ttl for lst in state()[1].listeners]
        await asyncio.sleep(max(1.0, min([*ttls, OCSP_RECHECK_SECONDS])))
        listeners, cfg, admissions = state()
        await recheck_all(listeners, cfg, admissions, metrics, ocsp_only=True)
