"""Server `SSLContext`s from listener config, and handshake failures -> the fixed reason set."""

from __future__ import annotations

import os
import ssl
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from cryptography import x509

from gateway.base.errors import ConfigError
from gateway.base.log import event, tls_log
from gateway.base.reasons import HandshakeReason as R
from gateway.config.listener import TlsConfig
from gateway.pki import crl as crls

# AEAD suites with forward secrecy only (TLS 1.2); TLS 1.3 suites are all AEAD + PFS.
TLS12_CIPHERS = ":".join(
    [
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
        "@SECLEVEL=2",  # keys below 2048-bit RSA / 224-bit EC are refused, on any distribution
    ]
)

_CLIENT_AUTH = {
    "require": ssl.CERT_REQUIRED,
    "optional": ssl.CERT_OPTIONAL,
    "none": ssl.CERT_NONE,
}

SniCallback = Callable[[ssl.SSLObject, str | None, ssl.SSLContext], int | None]


def server_context(
    cfg: TlsConfig,
    path: str,
    sni_callback: SniCallback | None = None,
    alpn: tuple[str, ...] = (),
) -> ssl.SSLContext:
    """Build the listener's context; `path` (e.g. `listeners[0].tls`) prefixes every error.
    `alpn`: the application protocols offered, in the server's order of preference (a client
    that offers none of them goes on without ALPN, on HTTP/1.1)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = (
        ssl.TLSVersion.TLSv1_3 if cfg.min_version == "1.3" else ssl.TLSVersion.TLSv1_2
    )
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.options |= getattr(ssl, "OP_NO_RENEGOTIATION", 0)
    try:
        ctx.load_cert_chain(cfg.cert, cfg.key)
    except FileNotFoundError:  # OpenSSL does not say which of the two is missing
        key = os.path.exists(cfg.cert)
        missing, where = (cfg.key, f"{path}.key") if key else (cfg.cert, f"{path}.cert")
        raise ConfigError(f"cannot read {missing}: no such file", where) from None
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"cannot load certificate {cfg.cert} with key {cfg.key}: {_ssl_text(exc)}",
            f"{path}.key",
        ) from None
    ctx.verify_mode = _CLIENT_AUTH[cfg.client_auth]
    # every CA of client_ca is a trust anchor as listed (RFC 5280 6.1; Python 3.13's default):
    # an issuing CA may be trusted without its root
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    if cfg.client_auth != "none":
        for i, ca in enumerate(cfg.client_ca):
            try:
                ctx.load_verify_locations(cafile=ca)
            except (ssl.SSLError, OSError) as exc:
                raise ConfigError(
                    f"cannot load CA bundle {ca}: {_ssl_text(exc)}", f"{path}.client_ca[{i}]"
                ) from None
        if cfg.crl:
            _load_crls(ctx, cfg, path)
    if sni_callback is not None:
        ctx.sni_callback = sni_callback
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    ctx.num_tickets = 1  # clients keep the latest; OpenSSL's default of two costs a second one
    if cfg.session_cache > 0:
        ctx.options |= ssl.OP_NO_TICKET  # TLS 1.3 tickets become ids into the server's cache
    return ctx


_RETRY_RENEW = 10.0  # seconds between attempts to renew a context whose files went bad


class ServerContexts:
    """A listener's server context, made afresh when its sessions reach their bounds.

    Python's `ssl` can set neither the size of OpenSSL's session cache nor how long a session
    resumes, and OpenSSL's defaults (20,480 sessions, two hours) are not ours. Both bounds
    hold by replacing the context instead: a context is used for new connections for at most
    `session_timeout`, and only until its cache holds `session_cache` sessions. A session (and
    a ticket's key) belongs to one context, so it cannot resume on the next one: every client
    does a full handshake at most `session_timeout` after its last one. Connections keep the
    context they were made with."""

    __slots__ = ("_born", "_build", "_ctx", "_path", "_size", "_timeout", "built")

    def __init__(self, build: Callable[[], ssl.SSLContext], cfg: TlsConfig, path: str) -> None:
        self._build = build
        self._path = path
        self._size = cfg.session_cache
        self._timeout = cfg.session_timeout
        self._ctx = build()
        self._born = time.monotonic()
        self.built = 1  # contexts made so far, this one included

    def current(self) -> ssl.SSLContext:
        """The context for a new connection."""
        if time.monotonic() - self._born >= self._timeout or (
            self._size and self._ctx.session_stats()["number"] >= self._size
        ):
            self._renew()
        return self._ctx

    def _renew(self) -> None:
        now = time.monotonic()
        try:
            ctx = self._build()
        except ConfigError as exc:  # a file changed under it: the reload that triggers decides
            self._born = now - self._timeout + min(self._timeout, _RETRY_RENEW)
            tls_log.error(
                "cannot renew the TLS context for its session bounds; keeping the current one",
                extra=event(config=self._path, detail=str(exc)),
            )
            return
        self._ctx, self._born = ctx, now
        self.built += 1


def _load_crls(ctx: ssl.SSLContext, cfg: TlsConfig, path: str) -> None:
    """Add every CRL (PEM or DER) to the context's store and check the leaf against them."""
    blocks: list[bytes] = []
    parsed: list[x509.CertificateRevocationList] = []
    for i, source in enumerate(cfg.crl):
        file = crls.source_path(source)
        try:
            with open(file, "rb") as fh:
                found = crls.parse_crls(fh.read())
            parsed += found
            blocks.append(crls.to_pem(found))
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"cannot load CRL {file}: {_ssl_text(exc)}", f"{path}.crl[{i}]"
            ) from None
    # `load_verify_locations(cadata=...)` takes certificates only; CRLs must come from a file.
    fd, tmp = tempfile.mkstemp(prefix="mtls-gateway-crl-", suffix=".pem")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(b"".join(blocks))
        ctx.load_verify_locations(cafile=tmp)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"OpenSSL rejected the CRLs: {_ssl_text(exc)}", f"{path}.crl") from None
    finally:
        os.unlink(tmp)
    # every CA of the bundle has a CRL (`check` insists unless allow_missing_crl): every
    # certificate of the chain is checked, intermediates too; otherwise only the leaf
    ctx.verify_flags |= (
        ssl.VERIFY_CRL_CHECK_CHAIN
        if crls.covers(parsed, _bundle(cfg.client_ca))
        else ssl.VERIFY_CRL_CHECK_LEAF
    )


def _bundle(paths: Iterable[str]) -> list[x509.Certificate]:
    certs: list[x509.Certificate] = []
    for path in paths:
        try:
            with open(path, "rb") as fh:
                certs += x509.load_pem_x509_certificates(fh.read())
        except (OSError, ValueError):
            return []  # reported by check; no coverage claimed
    return certs


def _ssl_text(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).lower().replace("_", " ")
    return getattr(exc, "strerror", None) or str(exc)


# --------------------------------------------------------------------------- classification

# X509_V_ERR_* codes (OpenSSL include/openssl/x509_vfy.h)
_VERIFY_CODES: dict[int, R] = {
    2: R.UNKNOWN_CA,  # unable to get issuer certificate
    18: R.UNKNOWN_CA,  # depth zero self-signed
    19: R.UNKNOWN_CA,  # self-signed certificate in chain
    20: R.UNKNOWN_CA,  # unable to get local issuer certificate
    21: R.UNKNOWN_CA,  # unable to verify the first certificate
    9: R.NOT_YET_VALID,
    10: R.EXPIRED,
    23: R.REVOKED,
    3: R.CRL_ERROR,  # unable to get CRL
    8: R.CRL_ERROR,  # CRL signature failure
    11: R.CRL_ERROR,  # CRL not yet valid
    12: R.CRL_ERROR,  # CRL has expired
    15: R.CRL_ERROR,
    16: R.CRL_ERROR,
    26: R.BAD_EKU,  # unsupported certificate purpose
    4: R.BAD_SIGNATURE,
    6: R.BAD_SIGNATURE,
    7: R.BAD_SIGNATURE,  # certificate signature failure
}

_SSL_REASONS: dict[str, R] = {
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": R.NO_CLIENT_CERT,
    "UNSUPPORTED_PROTOCOL": R.PROTOCOL_VERSION,
    "UNKNOWN_PROTOCOL": R.NOT_TLS,
    "WRONG_VERSION_NUMBER": R.NOT_TLS,
    "HTTP_REQUEST": R.NOT_TLS,
    "HTTPS_PROXY_REQUEST": R.NOT_TLS,
    "RECORD_LAYER_FAILURE": R.NOT_TLS,
    "PACKET_LENGTH_TOO_LONG": R.NOT_TLS,
    "NO_SHARED_CIPHER": R.NO_SHARED_CIPHER,
    "NO_SUITABLE_SIGNATURE_ALGORITHM": R.NO_SHARED_CIPHER,
    "NO_SHARED_SIGNATURE_ALGORITHMS": R.NO_SHARED_CIPHER,
    "BAD_SIGNATURE": R.BAD_SIGNATURE,
    "DIGEST_CHECK_FAILED": R.BAD_SIGNATURE,
    "UNEXPECTED_EOF_WHILE_READING": R.CLIENT_CLOSED,
}


@dataclass(frozen=True)
class Failure:
    """A classified handshake failure: the label plus what the log line needs."""

    reason: R
    verify_code: int | None = None
    detail: str = ""


def classify(exc: BaseException) -> Failure:
    """Map whatever the handshake raised to one reason from the fixed set."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = exc.verify_code
        return Failure(_VERIFY_CODES.get(code, R.BAD_CERT), code, exc.verify_message or str(exc))
    if isinstance(exc, ssl.SSLError):
        reason = str(exc.reason or "")
        if reason in _SSL_REASONS:
            return Failure(_SSL_REASONS[reason], None, reason)
        if reason.startswith(("TLSV1_ALERT_", "SSLV3_ALERT_", "TLSV13_ALERT_")):
            return Failure(R.CLIENT_ALERT, None, reason)
        if isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError):
            return Failure(R.CLIENT_CLOSED, None, reason or str(exc))
        return Failure(R.OTHER, None, reason or str(exc))
    if isinstance(exc, TimeoutError):
        return Failure(R.TIMEOUT, None, "handshake timed out")
    if isinstance(exc, ConnectionError | EOFError):
        return Failure(R.CLIENT_CLOSED, None, str(exc) or type(exc).__name__)
    return Failure(R.OTHER, None, f"{type(exc).__name__}: {exc}")
