"""OCSP for client certificates: ask the responder (AIA or configured), verify, cache by serial."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import aiohttp
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from gateway.base.bounded import Bounded
from gateway.config.listener import OcspConfig

ERROR_CACHE_SECONDS = 5.0
CLOCK_SKEW = 300.0


@dataclass(frozen=True)
class OcspResult:
    """good | revoked | unknown | error, with what the log line needs."""

    status: str
    detail: str
    responder: str = ""
    cached: bool = False


def responder_url(leaf: x509.Certificate, configured: str | None) -> str | None:
    """The configured responder, else the leaf's AIA OCSP URL."""
    if configured:
        return configured
    try:
        aia = leaf.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except (x509.ExtensionNotFound, ValueError):
        return None
    for desc in aia:
        if desc.access_method == AuthorityInformationAccessOID.OCSP and isinstance(
            desc.access_location, x509.UniformResourceIdentifier
        ):
            return desc.access_location.value
    return None


def _signature_ok(signer: x509.Certificate, resp: ocsp.OCSPResponse) -> bool:
    key = signer.public_key()
    algo = resp.signature_hash_algorithm
    try:
        if isinstance(key, ec.EllipticCurvePublicKey) and algo is not None:
            key.verify(resp.signature, resp.tbs_response_bytes, ec.ECDSA(algo))
        elif isinstance(key, rsa.RSAPublicKey) and algo is not None:
            key.verify(resp.signature, resp.tbs_response_bytes, padding.PKCS1v15(), algo)
        else:
            return False
    except InvalidSignature:
        return False
    return True


def _signer(resp: ocsp.OCSPResponse, issuer: x509.Certificate) -> x509.Certificate | None:
    """The issuer itself, or a responder certificate it issued with EKU OCSPSigning."""
    if _signature_ok(issuer, resp):
        return issuer
    for cert in resp.certificates:
        try:
            cert.verify_directly_issued_by(issuer)
            eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except (ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
            continue
        if ExtendedKeyUsageOID.OCSP_SIGNING in eku and _signature_ok(cert, resp):
            return cert
    return None


def interpret(
    data: bytes, leaf: x509.Certificate, issuer: x509.Certificate, now: float
) -> tuple[OcspResult, float | None]:
    """Check an OCSP response for `leaf`; returns the result and the response's nextUpdate."""
    try:
        resp = ocsp.load_der_ocsp_response(data)
    except ValueError as exc:
        return OcspResult("error", f"unreadable OCSP response: {exc}"), None
    if resp.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
        return OcspResult("error", f"responder answered {resp.response_status.name}"), None
    if _signer(resp, issuer) is None:
        return OcspResult("error", "OCSP response not signed by the issuer or its responder"), None
    for single in resp.responses:
        if single.serial_number != leaf.serial_number:
            continue
        if single.issuer_name_hash != _name_hash(issuer, single.hash_algorithm):
            continue
        this_update = single.this_update_utc.timestamp()
        next_update = single.next_update_utc.timestamp() if single.next_update_utc else None
        if this_update > now + CLOCK_SKEW:
            return OcspResult("error", "OCSP response is from the future"), None
        if next_update is not None and next_update < now - CLOCK_SKEW:
            return OcspResult("error", "OCSP response is stale (nextUpdate passed)"), None
        status = single.certificate_status
        if status == ocsp.OCSPCertStatus.GOOD:
            return OcspResult("good", "responder says good"), next_update
        if status == ocsp.OCSPCertStatus.REVOKED:
            when = single.revocation_time_utc
            at = f" on {when:%Y-%m-%d %H:%M} UTC" if when else ""
            return OcspResult(
                "revoked", f"serial {leaf.serial_number:x} revoked{at} (OCSP)"
            ), next_update
        return OcspResult("unknown", "responder does not know this certificate"), next_update
    return OcspResult("error", "OCSP response does not cover this certificate"), None


def _name_hash(issuer: x509.Certificate, algo: hashes.HashAlgorithm) -> bytes:
    digest = hashes.Hash(algo)
    digest.update(issuer.subject.public_bytes())
    return digest.finalize()


class OcspChecker:
    """Queries responders with one pooled HTTP client; results cached by issuer and serial."""

    def __init__(self, maxsize: int = 65536) -> None:
        self._cache: Bounded[tuple[bytes, int], tuple[float, OcspResult]] = Bounded(maxsize)
        self._session: aiohttp.ClientSession | None = None
        self._inflight: dict[tuple[bytes, int], asyncio.Future[OcspResult]] = {}

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _key(self, leaf: x509.Certificate, issuer: x509.Certificate) -> tuple[bytes, int]:
        spki = issuer.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return spki, leaf.serial_number

    async def check(
        self, leaf: x509.Certificate, issuer: x509.Certificate, cfg: OcspConfig
    ) -> OcspResult:
        key = self._key(leaf, issuer)
        now = time.time()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            r = hit[1]
            return OcspResult(r.status, r.detail, r.responder, cached=True)
        pending = self._inflight.get(key)
        if pending is not None:  # one query per certificate, however many connections wait
            return await asyncio.shield(pending)
        fut: asyncio.Future[OcspResult] = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut
        try:
            result, next_update = await self._query(leaf, issuer, cfg)
            ttl = ERROR_CACHE_SECONDS if result.status == "error" else cfg.cache_ttl
            expires = now + ttl
            if next_update is not None:
                expires = min(expires, next_update)
            self._cache.put(key, (expires, result))
            fut.set_result(result)
            return result
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved here; waiters get it too
            raise
        finally:
            del self._inflight[key]

    async def _query(
        self, leaf: x509.Certificate, issuer: x509.Certificate, cfg: OcspConfig
    ) -> tuple[OcspResult, float | None]:
        url = responder_url(leaf, cfg.responder_url)
        if url is None:
            return OcspResult(
                "error",
                "no responder: the certificate has no AIA OCSP URL and "
                "ocsp.responder_url is not set",
            ), None
        req = ocsp.OCSPRequestBuilder().add_certificate(leaf, issuer, hashes.SHA1()).build()
        body = req.public_bytes(serialization.Encoding.DER)
        if self._session is None:
            self._session = aiohttp.ClientSession(trust_env=False)
        try:
            async with asyncio.timeout(cfg.timeout):
                async with self._session.post(
                    url, data=body, headers={"Content-Type": "application/ocsp-request"}
                ) as resp:
                    if resp.status != 200:
                        return OcspResult(
                            "error", f"responder answered HTTP {resp.status}", url
                        ), None
                    data = await resp.content.read(1 << 20)
        except TimeoutError:
            return OcspResult("error", f"no answer within {cfg.timeout:g}s", url), None
        except (aiohttp.ClientError, OSError) as exc:
            return OcspResult("error", f"cannot reach the responder: {exc}", url), None
        result, next_update = interpret(data, leaf, issuer, time.time())
        return OcspResult(result.status, result.detail, url), next_update
