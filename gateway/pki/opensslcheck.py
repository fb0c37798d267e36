"""OpenSSL's own verdict on a client chain, for `explain`: not a model of OpenSSL, OpenSSL.

The verdict comes from the server side of a real TLS 1.2 handshake, in memory, on a context
built by `tls.server_context` from the listener's own config: the same trust bundle, CRLs and
CRL flags, security level, verify mode and purpose as the running gateway's. Only the server
certificate differs (a throwaway one, so `explain` needs no access to the gateway's key); it
plays no part in verifying the client.

Without the client's private key: OpenSSL verifies the client's chain as soon as it has read
the client's Certificate message, before CertificateVerify (the one message that needs the
key). So a client with no certificate runs the handshake, and its Certificate message, which
TLS 1.2 sends in cleartext, is replaced by one carrying the chain in question
(`tlsrecords.with_certificate`). OpenSSL then either rejects the chain, with the verify code
the gateway maps to a reason (`tls.classify`), or accepts it and stops the handshake later,
for want of the CertificateVerify the client never sent. The protocol version does not change
how the chain is verified."""

from __future__ import annotations

import contextlib
import datetime as dt
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gateway.base.reasons import HandshakeReason as R
from gateway.config.listener import TlsConfig
from gateway.pki import devcerts
from gateway.pki.tls import classify, server_context
from gateway.pki.tlsrecords import with_certificate

# what OpenSSL says once it accepted the chain and finds no CertificateVerify after it
_ACCEPTED = {"UNEXPECTED_MESSAGE", "UNEXPECTED_RECORD", "CCS_RECEIVED_EARLY"}


@dataclass(frozen=True)
class OpenSslVerdict:
    """Whether OpenSSL accepts the chain on this listener; if not, why (reason, verify code,
    OpenSSL's message)."""

    ok: bool
    reason: R | None
    verify_code: int | None
    detail: str


class OpenSslJudge:
    """OpenSSL's verdicts for one listener: its context is built once, each verdict is one
    in-memory handshake on it."""

    def __init__(self, tls: TlsConfig, where: str) -> None:
        self._server_ctx = _listener_context(tls, where)
        self._client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self._client_ctx.check_hostname = False
        self._client_ctx.verify_mode = ssl.CERT_NONE
        for ctx in (self._server_ctx, self._client_ctx):
            ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_2

    def verdict(
        self, leaf: x509.Certificate, intermediates: list[x509.Certificate]
    ) -> OpenSslVerdict:
        """OpenSSL's verdict on `leaf` sent with `intermediates`, now."""
        c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
        client = self._client_ctx.wrap_bio(c_in, c_out)
        server = self._server_ctx.wrap_bio(s_in, s_out, server_side=True)
        _step(client)  # ClientHello
        s_in.write(c_out.read())
        _step(server)  # ServerHello ... CertificateRequest, ServerHelloDone
        c_in.write(s_out.read())
        _step(client)  # (empty) Certificate, ClientKeyExchange, ChangeCipherSpec, Finished
        der = serialization.Encoding.DER
        chain = [c.public_bytes(der) for c in [leaf, *intermediates]]
        forged = with_certificate(c_out.read(), chain)
        if forged is None:
            return OpenSslVerdict(False, R.OTHER, None, "no Certificate message to replace")
        s_in.write(forged)
        try:
            server.do_handshake()
        except ssl.SSLCertVerificationError as exc:
            failure = classify(exc)
            return OpenSslVerdict(False, failure.reason, failure.verify_code, failure.detail)
        except ssl.SSLError as exc:
            if str(exc.reason) in _ACCEPTED:
                return OpenSslVerdict(True, None, 0, "OpenSSL verified the chain")
            failure = classify(exc)
            return OpenSslVerdict(False, failure.reason, None, f"OpenSSL: {failure.detail}")
        return OpenSslVerdict(False, R.OTHER, None, "the handshake finished without a signature")


def openssl_verdict(
    tls: TlsConfig, where: str, leaf: x509.Certificate, intermediates: list[x509.Certificate]
) -> OpenSslVerdict:
    """OpenSSL's verdict on `leaf` sent with `intermediates`, by a listener with `tls`, now."""
    return OpenSslJudge(tls, where).verdict(leaf, intermediates)


def _step(side: ssl.SSLObject) -> None:
    with contextlib.suppress(ssl.SSLWantReadError):
        side.do_handshake()


def _listener_context(tls: TlsConfig, where: str) -> ssl.SSLContext:
    """The listener's server context, built as the gateway builds it, with a throwaway server
    certificate in place of the real one."""
    now = dt.datetime.now(dt.UTC)
    server = devcerts.issue(
        devcerts.name("mtls-gateway explain"),
        eku=None,
        not_before=now - dt.timedelta(hours=1),
        not_after=now + dt.timedelta(hours=1),
    )
    with tempfile.TemporaryDirectory(prefix="mtls-gateway-explain-") as tmp:
        cert, key = Path(tmp) / "server.pem", Path(tmp) / "server.key"
        cert.write_bytes(devcerts.pem(server.cert))
        key.write_bytes(devcerts.key_pem(server.key))
        return server_context(tls.model_copy(update={"cert": str(cert), "key": str(key)}), where)
