"""`verify_profile: strict` against real handshakes: each crafted certificate breaks one profile
rule; OpenSSL's check alone lets most of them in, the strict listener rejects each with its
reason in tls_handshakes_total. verify_chain's "openssl" profile predicts the lenient outcome."""

from __future__ import annotations

import http.client
import shutil
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.pki.verify import verify_chain
from tests.crafted import PROFILE_CASES, write_cases
from tests.harness import (
    RunningGateway,
    base_config,
    dev_root,
    handshake_counts,
    running,
)


@pytest.fixture(scope="module")
def crafted(pki: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = write_cases(dev_root(pki), tmp_path_factory.mktemp("crafted"))
    shutil.copy(pki / "ca.pem", out / "ca.pem")
    return out


@pytest.fixture(scope="module", params=["openssl", "strict"])
def profile_gateway(
    request: pytest.FixtureRequest, pki: Path
) -> Iterator[tuple[str, RunningGateway]]:
    with running(lambda port: base_config(pki, port, verify_profile=request.param), pki) as gw:
        yield request.param, gw


def _status(port: int, crafted: Path, name: str) -> int | None:
    """GET over a fresh connection presenting `name`; None when the connection fails."""
    ctx = ssl.create_default_context(cafile=str(crafted / "ca.pem"))
    ctx.set_ciphers("DEFAULT@SECLEVEL=0")  # let the client present even a weak key
    ctx.load_cert_chain(crafted / f"{name}.pem", crafted / f"{name}.key")
    conn = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=10)
    try:
        conn.request("GET", "/x")
        return conn.getresponse().status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def _outcome(gw: RunningGateway, crafted: Path, name: str) -> str:
    """The handshake result label this certificate earns (exactly one handshake counted)."""
    before = handshake_counts(gw.metrics)
    status = _status(gw.port, crafted, name)
    deadline = time.monotonic() + 5
    while True:
        after = handshake_counts(gw.metrics)
        moved = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
        if moved or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(moved) == 1 and sum(moved.values()) == 1, moved
    (result,) = moved
    assert (status == 200) == (result == "ok"), (name, status, result)
    return result


@pytest.mark.parametrize("name", list(PROFILE_CASES))
def test_profile_rule_at_the_handshake(
    profile_gateway: tuple[str, RunningGateway], crafted: Path, pki: Path, name: str
) -> None:
    profile, gw = profile_gateway
    _, strict_reason, openssl_accepts = PROFILE_CASES[name]
    result = _outcome(gw, crafted, name)
    predicted = verify_chain(
        (crafted / f"{name}.pem").read_bytes(), (), (pki / "ca.pem").read_bytes(), profile=profile
    )
    if profile == "strict":
        assert result == strict_reason
    else:
        assert (result == "ok") == openssl_accepts
    assert (predicted.reason or "ok") == result, predicted.steps


def test_a_rejection_after_the_handshake_names_the_client(crafted: Path, pki: Path) -> None:
    """The strict profile's rejection is logged with the certificate it saw and the TLS
    version and cipher agreed, so the client can be identified from the log line alone."""
    import logging

    from cryptography import x509

    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("gateway.tls")
    keep, old = Keep(logging.INFO), logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(keep)
    try:
        with running(lambda port: base_config(pki, port, verify_profile="strict"), pki) as gw:
            assert _outcome(gw, crafted, "leaf-is-ca") == "bad_cert"
    finally:
        logger.removeHandler(keep)
        logger.setLevel(old)
    (line,) = [r.event for r in records if r.getMessage() == "tls handshake failed"]  # type: ignore[attr-defined]
    cert = x509.load_pem_x509_certificate((crafted / "leaf-is-ca.pem").read_bytes())
    assert line["client_serial"] == f"{cert.serial_number:x}"
    assert line["client_subject"] and line["client_issuer"] and len(line["client_sha256"]) == 64
    assert line["tls_version"] in ("TLSv1.2", "TLSv1.3") and line["cipher"]
    assert line["peer"] == "127.0.0.1" and line["peer_port"] > 0
