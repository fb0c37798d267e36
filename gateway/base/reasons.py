"""The fixed reason sets: why a handshake failed and why a policy denied (metric labels)."""

from __future__ import annotations

from enum import StrEnum


class HandshakeReason(StrEnum):
    """Why a TLS handshake failed. Values are the public `result` / `reason` metric labels."""

    NO_CLIENT_CERT = "no_client_cert"
    UNKNOWN_CA = "unknown_ca"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    BAD_EKU = "bad_eku"
    REVOKED = "revoked"
    CRL_ERROR = "crl_error"
    OCSP_ERROR = "ocsp_error"
    BAD_SIGNATURE = "bad_signature"
    BAD_CERT = "bad_cert"
    PROTOCOL_VERSION = "protocol_version"
    NO_SHARED_CIPHER = "no_shared_cipher"
    NOT_TLS = "not_tls"
    CLIENT_ALERT = "client_alert"
    TIMEOUT = "timeout"
    CLIENT_CLOSED = "client_closed"
    OTHER = "other"


HANDSHAKE_HINTS: dict[HandshakeReason, str] = {
    HandshakeReason.NO_CLIENT_CERT: "the client sent no certificate; configure the client's "
    "cert/key (curl --cert/--key)",
    HandshakeReason.UNKNOWN_CA: "the client's chain does not lead to a CA in client_ca; add the "
    "issuing CA to the trust bundle or have the client send its intermediates",
    HandshakeReason.EXPIRED: "the client certificate (or a CA in its chain) has expired; reissue it",
    HandshakeReason.NOT_YET_VALID: "the client certificate is not valid yet; check notBefore and "
    "the clocks",
    HandshakeReason.BAD_EKU: "a certificate in the chain has an extendedKeyUsage without "
    "clientAuth; issue the client certificate with EKU clientAuth",
    HandshakeReason.REVOKED: "the client certificate is revoked by its CA; issue the client a "
    "new certificate",
    HandshakeReason.CRL_ERROR: "a CRL is missing, expired or unreadable for the client's issuer",
    HandshakeReason.OCSP_ERROR: "ocsp mode is hard and the responder could not vouch for the "
    "certificate (unreachable, error, unknown status); check ocsp.responder_url or the AIA URL",
    HandshakeReason.BAD_SIGNATURE: "a signature in the chain does not verify (tampered or "
    "mismatched certificate)",
    HandshakeReason.BAD_CERT: "the client certificate was rejected for another verification "
    "error; see verify_code in the log",
    HandshakeReason.PROTOCOL_VERSION: "the client offered only TLS versions below min_version",
    HandshakeReason.NO_SHARED_CIPHER: "client and gateway share no cipher suite",
    HandshakeReason.NOT_TLS: "the client spoke something other than TLS (plain HTTP to the "
    "TLS port?)",
    HandshakeReason.CLIENT_ALERT: "the client aborted the handshake: it rejected the gateway's "
    "certificate (trust the gateway's CA on the client, check the SAN)",
    HandshakeReason.TIMEOUT: "the handshake did not finish within handshake_timeout",
    HandshakeReason.CLIENT_CLOSED: "the client closed the connection during the handshake",
    HandshakeReason.OTHER: "an unclassified handshake failure; see the log line for details",
}


class PolicyReason(StrEnum):
    """Why a route policy denied a request (`policy_denials_total{reason}`)."""

    NO_CLIENT_CERT = "no_client_cert"
    EKU_MISSING = "eku_missing"
    NOT_ALLOWED = "not_allowed"
    DENIED = "denied"


POLICY_ERROR_CODES: dict[PolicyReason, str] = {
    PolicyReason.NO_CLIENT_CERT: "client_cert_required",
    PolicyReason.EKU_MISSING: "eku_missing",
    PolicyReason.NOT_ALLOWED: "client_cert_not_allowed",
    PolicyReason.DENIED: "client_cert_not_allowed",
}
