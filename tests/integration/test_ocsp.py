"""OCSP for client certificates against a real responder (`openssl ocsp -index ... -port`)
started and stopped by the tests: good, revoked, cache, hard and soft failure, AIA discovery."""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import AuthorityInformationAccessOID

from gateway.pki import devcerts
from tests.harness import (
    RunningGateway,
    base_config,
    dev_root,
    free_port,
    handshake_counts,
    request,
    running,
    sample,
)

OCSP = "mtls_gateway_ocsp_checks_total"


def _index_line(cert: x509.Certificate, revoked: bool) -> str:
    expiry = cert.not_valid_after_utc.strftime("%y%m%d%H%M%SZ")
    when = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).strftime("%y%m%d%H%M%SZ")
    subject = "/" + "/".join(a.rfc4514_string() for a in cert.subject)
    return "\t".join(
        [
            "R" if revoked else "V",
            expiry,
            when if revoked else "",
            f"{cert.serial_number:X}",
            "unknown",
            subject,
        ]
    )


class Responder:
    """`openssl ocsp` answering for the dev root, signing with the root's own key."""

    def __init__(
        self, pki: Path, workdir: Path, entries: dict[str, tuple[x509.Certificate, bool]], port: int
    ):
        self.port = port
        self.url = f"http://[::1]:{self.port}"  # openssl ocsp -port listens on [::]
        index = workdir / "index.txt"
        index.write_text("".join(_index_line(c, r) + "\n" for c, r in entries.values()))
        self._log = workdir / "ocsp.log"
        self._cmd = [
            "openssl", "ocsp", "-index", str(index), "-port", str(self.port),
            "-rsigner", str(pki / "ca.pem"), "-rkey", str(pki / "ca.key"), "-CA", str(pki / "ca.pem"),
            "-nmin", "5", "-ignore_err",
        ]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Responder:
        # where this run's output begins: taken before it starts, or its banner may be missed
        start = self._log.stat().st_size if self._log.exists() else 0
        with self._log.open("ab") as log:
            self.proc = subprocess.Popen(self._cmd, stdout=log, stderr=subprocess.STDOUT)
        # A probe connection would block the single-threaded responder; wait for its banner:
        # "ACCEPT <addr>" once the socket listens (stderr, unbuffered), or the stdout line,
        # which a block-buffered stdout may hold back
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            out = self._log.read_bytes()[start:]
            if b"ACCEPT " in out or b"waiting for OCSP client connections" in out:
                return self
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"openssl ocsp did not start: {self._log.read_text()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


def _aia_client(pki: Path, out: Path, url: str) -> devcerts.Issued:
    root = dev_root(pki)
    item = devcerts.issue(
        devcerts.name("client-aia", ou="clients"),
        root,
        sans=[x509.UniformResourceIdentifier("spiffe://dev.local/client-aia")],
    )
    # re-issue with the AIA extension pointing at the responder
    builder = (
        x509.CertificateBuilder()
        .subject_name(item.cert.subject)
        .issuer_name(root.cert.subject)
        .public_key(item.key.public_key())
        .serial_number(item.cert.serial_number)
        .not_valid_before(item.cert.not_valid_before_utc)
        .not_valid_after(item.cert.not_valid_after_utc)
    )
    for ext in item.cert.extensions:
        builder = builder.add_extension(ext.value, ext.critical)
    builder = builder.add_extension(
        x509.AuthorityInformationAccess(
            [
                x509.AccessDescription(
                    AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(url)
                )
            ]
        ),
        critical=False,
    )
    from cryptography.hazmat.primitives import hashes

    aia = devcerts.Issued(builder.sign(root.key, hashes.SHA256()), item.key)
    devcerts.write_issued(out, "client-aia", aia, p12=False)
    return aia


@pytest.fixture(scope="module")
def ocsp_env(
    pki: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, Responder]]:
    work = tmp_path_factory.mktemp("ocsp")
    for name in ("ca.pem", "client.pem", "client.key", "client-revoked.pem", "client-revoked.key",
                 "client-noeku.pem", "client-noeku.key"):  # fmt: skip
        shutil.copy(pki / name, work / name)
    port = free_port()
    aia = _aia_client(pki, work, f"http://[::1]:{port}")

    def leaf(name: str) -> x509.Certificate:
        return x509.load_pem_x509_certificates((work / f"{name}.pem").read_bytes())[0]

    entries = {
        "client": (leaf("client"), False),
        "client-revoked": (leaf("client-revoked"), True),
        "client-aia": (aia.cert, False),
    }
    responder = Responder(pki, work, entries, port)
    responder.start()
    try:
        yield work, responder
    finally:
        responder.stop()


def _gateway(pki: Path, mode: str, url: str | None) -> Iterator[RunningGateway]:
    ocsp = {"mode": mode, "timeout": "1s", "cache_ttl": "5m"}
    if url:
        ocsp["responder_url"] = url
    # the OpenSSL profile alone: the no-EKU client below is "a certificate never seen before",
    # which the strict profile would refuse before OCSP is asked
    config = lambda port: base_config(pki, port, ocsp=ocsp, verify_profile="openssl")  # noqa: E731
    with running(config, pki) as gw:
        yield gw


def _try(gw: RunningGateway, certs: Path, cert: str) -> tuple[int | None, dict[str, float]]:
    before = handshake_counts(gw.metrics)
    try:
        status: int | None = request(gw.port, "/x", certs, cert).status
    except OSError:
        status = None
    deadline = time.monotonic() + 5
    while (after := handshake_counts(gw.metrics)) == before and time.monotonic() < deadline:
        time.sleep(0.05)
    return status, {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}


def test_good_revoked_and_cached_in_hard_mode(pki: Path, ocsp_env: tuple[Path, Responder]) -> None:
    certs, responder = ocsp_env
    if responder.proc is None:
        responder.start()
    for gw in _gateway(pki, "hard", responder.url):
        assert _try(gw, certs, "client") == (200, {"ok": 1})
        assert _try(gw, certs, "client-revoked") == (None, {"revoked": 1})
        m = gw.metrics()
        assert sample(m, OCSP, listener="public", result="good") == 1
        assert sample(m, OCSP, listener="public", result="revoked") == 1
        # the responder goes away: answers cached by issuer and serial keep serving
        responder.stop()
        try:
            assert _try(gw, certs, "client") == (200, {"ok": 1})
            assert _try(gw, certs, "client-revoked") == (None, {"revoked": 1})
            # a certificate never seen before cannot be vouched for: hard mode rejects
            assert _try(gw, certs, "client-noeku") == (None, {"ocsp_error": 1})
            assert sample(gw.metrics(), OCSP, listener="public", result="error") == 1
        finally:
            responder.start()


def test_soft_mode_lets_the_client_through_and_counts_it(
    pki: Path, ocsp_env: tuple[Path, Responder], caplog: pytest.LogCaptureFixture
) -> None:
    certs, _ = ocsp_env
    dead = f"http://127.0.0.1:{free_port()}"
    caplog.set_level(logging.WARNING, logger="gateway.tls")
    for gw in _gateway(pki, "soft", dead):
        assert _try(gw, certs, "client") == (200, {"ok": 1})
        assert sample(gw.metrics(), OCSP, listener="public", result="error") == 1
    soft = [r for r in caplog.records if r.getMessage() == "OCSP soft-fail: client let through"]
    assert len(soft) == 1
    assert "cannot reach the responder" in soft[0].event["detail"]  # type: ignore[attr-defined]


def test_responder_from_the_aia_extension(pki: Path, ocsp_env: tuple[Path, Responder]) -> None:
    certs, responder = ocsp_env
    if responder.proc is None:
        responder.start()
    for gw in _gateway(pki, "hard", None):
        assert _try(gw, certs, "client-aia") == (200, {"ok": 1})
        # the dev client has no AIA and no responder is configured: hard mode rejects
        assert _try(gw, certs, "client") == (None, {"ocsp_error": 1})


def test_explain_online_asks_the_responder(
    pki: Path, ocsp_env: tuple[Path, Responder], tmp_path: Path
) -> None:
    import json
    import subprocess
    import sys

    import yaml

    certs, responder = ocsp_env
    if responder.proc is None:
        responder.start()
    doc = base_config(pki, 9, ocsp={"mode": "hard", "responder_url": responder.url})
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump(doc))

    def explain(cert: str, *extra: str) -> tuple[int, dict[str, object]]:
        out = subprocess.run(
            [sys.executable, "-m", "gateway", "explain", "-c", str(config),
             "--cert", str(certs / f"{cert}.pem"), "--route", "all", "--json", *extra],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        return out.returncode, json.loads(out.stdout)

    code, doc_out = explain("client-revoked", "--online")
    assert code == 1 and doc_out["stage"] == "ocsp" and doc_out["reason"] == "revoked"
    code, doc_out = explain("client", "--online")
    assert code == 0
    steps = doc_out["steps"]
    assert isinstance(steps, list)
    assert any(s["name"] == "ocsp" and s["detail"].startswith("OCSP good") for s in steps)
    code, doc_out = explain("client-revoked")  # without --online: a note, no network
    assert code == 0 and any("--online" in n for n in doc_out["notes"])  # type: ignore[union-attr]


def test_a_revocation_the_responder_publishes_closes_the_open_connection(
    pki: Path, ocsp_env: tuple[Path, Responder], tmp_path: Path
) -> None:
    """The client's keep-alive connection was admitted on a good answer; the responder then
    says revoked: once the cached answer expires, the connection is closed, counted and logged."""
    import http.client
    import ssl

    from tests.harness import client_context

    certs, responder = ocsp_env
    client = x509.load_pem_x509_certificates((certs / "client.pem").read_bytes())[0]
    index = certs / "index.txt"
    good = index.read_text()
    ocsp = {"mode": "hard", "timeout": "1s", "cache_ttl": "1s", "responder_url": responder.url}
    with running(lambda port: base_config(pki, port, ocsp=ocsp), pki) as gw:
        conn = http.client.HTTPSConnection(
            "localhost", gw.port, context=client_context(certs, "client"), timeout=10
        )
        try:
            conn.request("GET", "/before")
            before = conn.getresponse()
            assert before.status == 200 and before.read()
            lines = [_index_line(client, True) if f"\t{client.serial_number:X}\t" in line else line
                     for line in good.splitlines()]  # fmt: skip
            responder.stop()  # the CA publishes the revocation: the responder's new index
            index.write_text("\n".join(lines) + "\n")
            responder.start()
            metric = "mtls_gateway_connections_closed_on_recheck_total"
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                if sample(gw.metrics(), metric, listener="public", reason="revoked") == 1:
                    break
                time.sleep(0.2)
            m = gw.metrics()
            assert sample(m, metric, listener="public", reason="revoked") == 1, [
                (k, v) for k, v in m.items() if "ocsp" in k[0]
            ]
            with pytest.raises((ConnectionError, http.client.HTTPException, ssl.SSLError, OSError)):
                conn.request("GET", "/after")
                conn.getresponse().read()
        finally:
            conn.close()
            responder.stop()
            index.write_text(good)
            responder.start()
