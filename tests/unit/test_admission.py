"""The strict profile after the handshake: each client certificate verified once, a returning
client decided without waiting (no task, no verification)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.config.listener import TlsConfig
from gateway.downstream.admission import Admission
from gateway.observe.metrics import Metrics
from gateway.pki.identity import parse_identity
from gateway.pki.ocsp import OcspChecker
from gateway.pki.verify import load_certs


def _identity(pki: Path, name: str) -> tuple[object, tuple[bytes, ...]]:
    from cryptography.hazmat.primitives.serialization import Encoding

    certs = load_certs((pki / f"{name}.pem").read_bytes())
    return parse_identity(certs[0].public_bytes(Encoding.DER)), tuple(
        c.public_bytes(Encoding.DER) for c in certs[1:]
    )


def test_a_returning_client_is_decided_without_waiting(pki: Path) -> None:
    tls = TlsConfig.model_validate(
        {"cert": str(pki / "server.pem"), "key": str(pki / "server.key"),
         "client_ca": [str(pki / "ca.pem")]}
    )  # fmt: skip
    admission = Admission("public", tls, "listeners[0].tls", OcspChecker(), Metrics())
    good, good_chain = _identity(pki, "client")
    noeku, noeku_chain = _identity(pki, "client-noeku")
    assert admission.settled(good) is None  # type: ignore[arg-type]  # never seen: check runs
    assert asyncio.run(admission.check(good, good_chain)) is None  # type: ignore[arg-type]
    failure = asyncio.run(admission.check(noeku, noeku_chain))  # type: ignore[arg-type]
    assert failure is not None and failure.reason == "bad_eku"
    assert admission.settled(good) == (None,)  # type: ignore[arg-type]
    assert admission.settled(noeku) == (failure,)  # type: ignore[arg-type]
    with_ocsp = tls.model_copy(update={"ocsp": tls.ocsp.model_copy(update={"mode": "soft"})})
    asked = Admission("public", with_ocsp, "listeners[0].tls", OcspChecker(), Metrics())
    assert asked.settled(good) is None  # type: ignore[arg-type]  # OCSP always asks
