"""Listener-level checks after a successful handshake, before any request: strict profile, OCSP."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from gateway.base.bounded import Bounded
from gateway.base.errors import ConfigError
from gateway.base.log import event, tls_log
from gateway.base.reasons import HandshakeReason as R
from gateway.config.listener import TlsConfig
from gateway.observe.metrics import Metrics
from gateway.pki.identity import Identity
from gateway.pki.ocsp import OcspChecker
from gateway.pki.tls import Failure
from gateway.pki.verify import load_certs, verify_chain


def load_bundle(paths: tuple[str, ...], where: str) -> list[x509.Certificate]:
    certs: list[x509.Certificate] = []
    for i, path in enumerate(paths):
        try:
            certs += load_certs(Path(path).read_bytes())
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"cannot read CA bundle {path}: {exc}", f"{where}.client_ca[{i}]"
            ) from None
    return certs


class Admission:
    """What one listener checks on each new client identity; verdicts cached by fingerprint."""

    def __init__(
        self, listener: str, tls: TlsConfig, where: str, ocsp: OcspChecker, metrics: Metrics
    ) -> None:
        self.listener = listener
        self.strict = tls.verify_profile == "strict"
        self._ocsp_cfg = tls.ocsp
        self.needed = tls.client_auth != "none" and (self.strict or tls.ocsp.mode != "off")
        self._trusted = load_bundle(tls.client_ca, where) if self.needed else []
        self._ocsp = ocsp
        self._metrics = metrics
        self._verdicts: Bounded[str, tuple[Failure | None]] = Bounded(4096)

    def settled(self, identity: Identity) -> tuple[Failure | None] | None:
        """The decision when it is known without waiting (strict profile alone, a certificate
        seen before): `(None,)` passes, `(failure,)` rejects; None: `check` must run."""
        if not self.strict or self._ocsp_cfg.mode != "off":
            return None
        return self._verdicts.get(identity.sha256)

    async def check(self, identity: Identity, chain: tuple[bytes, ...]) -> Failure | None:
        """None when the client may proceed, else why not. Never raises."""
        try:
            if self.strict:
                failure = self._strict(identity, chain)
                if failure is not None:
                    return failure
            if self._ocsp_cfg.mode != "off":
                return await self._ocsp_check(identity, chain)
        except Exception as exc:  # a bug here must not take the listener down; fail closed
            tls_log.exception("post-handshake check failed", extra=event(listener=self.listener))
            return Failure(R.OTHER, None, f"post-handshake check failed: {exc!r}")
        return None

    def _strict(self, identity: Identity, chain: tuple[bytes, ...]) -> Failure | None:
        known = self._verdicts.get(identity.sha256)
        if known is not None:
            return known[0]
        verdict = verify_chain(identity.der, list(chain), self._trusted, profile="strict")
        failure = None
        if not verdict.ok:
            assert verdict.reason is not None
            failure = Failure(verdict.reason, None, f"strict profile: {verdict.detail}")
        self._verdicts.put(identity.sha256, (failure,))
        return failure

    def _issuer(self, leaf: x509.Certificate, chain: tuple[bytes, ...]) -> x509.Certificate | None:
        candidates = [x509.load_der_x509_certificate(c) for c in chain[:1]] + self._trusted
        for cert in candidates:
            if cert.subject != leaf.issuer:
                continue
            try:
                leaf.verify_directly_issued_by(cert)
            except (ValueError, TypeError, InvalidSignature):
                continue
            return cert
        return None

    async def _ocsp_check(self, identity: Identity, chain: tuple[bytes, ...]) -> Failure | None:
        cfg = self._ocsp_cfg
        leaf = x509.load_der_x509_certificate(identity.der)
        issuer = self._issuer(leaf, chain)
        if issuer is None:
            status, detail, responder, cached = (
                "error",
                "issuer of the leaf not found for OCSP",
                "",
                False,
            )
        else:
            result = await self._ocsp.check(leaf, issuer, cfg)
            status, detail, responder, cached = (
                result.status,
                result.detail,
                result.responder,
                result.cached,
            )
        self._metrics.ocsp_checks.labels(self.listener, status).inc()
        if status == "good":
            return None
        if status == "revoked":
            return Failure(R.REVOKED, None, detail)
        if cfg.mode == "hard":
            return Failure(R.OCSP_ERROR, None, f"OCSP {status}: {detail}")
        tls_log.warning(
            "OCSP soft-fail: client let through",
            extra=event(
                listener=self.listener,
                status=status,
                detail=detail,
                responder=responder,
                cached=cached,
                client_subject=identity.subject,
            ),
        )
        return None
