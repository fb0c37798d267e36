"""Revocation with CRLs: files (PEM, DER), coverage checks, expiry gauges and warnings, and
CRLs fetched over HTTP on a schedule with a disk cache."""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization

from gateway.config.load import parse_config
from gateway.pki import devcerts
from gateway.pki.certfiles import check_files
from tests.harness import (
    EchoServer,
    GatewayProcess,
    base_config,
    cert_args,
    curl,
    dev_root,
    expiry,
    handshake_counts,
    running,
    sample,
    scrape,
    wait_delta,
    write_config,
)


def _outcome(port: int, pki: Path, cert: str) -> str:
    out = curl(
        *cert_args(pki, cert), "-o", "/dev/null", "-w", "%{http_code}", f"https://localhost:{port}/"
    )
    return out.stdout if out.returncode == 0 else "failed"


# cert -> (handshake result, HTTP outcome) with crl.pem (root + intermediate CRLs)
CRL_CASES = {
    "client": ("ok", "200"),
    "client-intermediate": ("ok", "200"),
    "client-revoked": ("revoked", "failed"),
    "client-expired": ("expired", "failed"),
}


@pytest.fixture(scope="module")
def crl_gateway(pki: Path):
    with running(lambda port: base_config(pki, port, crl=[str(pki / "crl.pem")]), pki) as gw:
        yield gw


@pytest.mark.parametrize("cert", list(CRL_CASES))
def test_crl_file_revokes_at_the_handshake(crl_gateway, pki: Path, cert: str) -> None:
    result, outcome = CRL_CASES[cert]
    before = handshake_counts(crl_gateway.metrics)
    assert _outcome(crl_gateway.port, pki, cert) == outcome
    assert wait_delta(crl_gateway.metrics, before, {result: 1}) == {result: 1}


def test_crl_gauges_name_each_crl(crl_gateway) -> None:
    metrics = crl_gateway.metrics()
    (root,) = expiry(metrics, "crl", "mtls-gateway dev root CA").values()
    (inter,) = expiry(metrics, "crl", "mtls-gateway dev intermediate CA").values()
    assert time.time() + 29 * 86400 < root < time.time() + 31 * 86400
    assert inter > time.time()
    assert min(expiry(metrics, "server", "public").values()) > time.time()
    assert min(expiry(metrics, "ca", "mtls-gateway dev root CA").values()) > time.time()
    chain = expiry(metrics, "server_chain", "public/mtls-gateway dev intermediate CA")
    assert min(chain.values()) > time.time()


def test_der_crl_of_the_root_only(pki: Path) -> None:
    """DER works; a client of an issuer without a CRL fails closed with crl_error."""
    with running(lambda port: base_config(pki, port, crl=[str(pki / "crl.der")]), pki) as gw:
        for cert, result, outcome in [
            ("client", "ok", "200"),
            ("client-revoked", "revoked", "failed"),
            ("client-intermediate", "crl_error", "failed"),
        ]:
            before = handshake_counts(gw.metrics)
            assert _outcome(gw.port, pki, cert) == outcome, cert
            assert wait_delta(gw.metrics, before, {result: 1}) == {result: 1}, cert


def _problems(pki: Path, **tls: Any) -> list[str]:
    cfg = parse_config(base_config(pki, 9, **tls), pki)
    return [str(p) for p in check_files(cfg)[0]]


def test_check_refuses_a_trusted_ca_without_crl_unless_told(pki: Path) -> None:
    bundle = [str(pki / "ca.pem"), str(pki / "untrusted-ca.pem")]
    problems = _problems(pki, client_ca=bundle, crl=[str(pki / "crl.pem")])
    assert problems == [
        "listeners[0].tls.crl: no CRL for CA 'untrusted dev CA' of client_ca: with CRL checking "
        "on, every client it issued would fail with crl_error. Add its CRL, or set "
        "allow_missing_crl: true if it issues no client certificates"
    ]
    assert (
        _problems(pki, client_ca=bundle, crl=[str(pki / "crl.pem")], allow_missing_crl=True) == []
    )


def test_check_refuses_lapsed_unreadable_and_forged_crls(pki: Path, tmp_path: Path) -> None:
    root = dev_root(pki)
    lapsed = tmp_path / "lapsed.pem"
    lapsed.write_bytes(
        devcerts.make_crl(root, [], next_update_days=-1).public_bytes(serialization.Encoding.PEM)
    )
    problems = _problems(pki, crl=[str(lapsed)])
    assert (
        len(problems) == 1
        and "listeners[0].tls.crl[0]: the CRL of 'mtls-gateway dev root CA'" in problems[0]
    )
    assert "lapsed on" in problems[0] and "crl_error" in problems[0]

    garbage = tmp_path / "garbage.crl"
    garbage.write_bytes(b"not a crl")
    problems = _problems(pki, crl=[str(garbage)])
    assert problems[0].startswith(f"listeners[0].tls.crl[0]: {garbage} holds no readable CRL")

    impostor = devcerts.issue(devcerts.name("mtls-gateway dev root CA"), ca=True)
    forged = tmp_path / "forged.pem"
    forged.write_bytes(devcerts.make_crl(impostor, []).public_bytes(serialization.Encoding.PEM))
    problems = _problems(pki, crl=[str(forged)])
    assert any("is not signed by that CA's key" in p for p in problems), problems


def test_crl_near_next_update_is_logged_as_a_warning(pki: Path, tmp_path: Path) -> None:
    soon = tmp_path / "soon.pem"
    crl = devcerts.make_crl(dev_root(pki), [], next_update_days=0.5)
    soon.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    with EchoServer() as echo:
        path, _, admin = write_config(tmp_path, pki, echo.port)
        doc = yaml.safe_load(path.read_text())
        doc["listeners"][0]["tls"]["crl"] = [str(soon)]
        doc["listeners"][0]["tls"]["crl_warning"] = "2d"
        path.write_text(yaml.safe_dump(doc))
        with GatewayProcess(path, admin) as gw:
            lines = [json.loads(x) for x in gw.logs().splitlines() if x.startswith("{")]
            warned = [x for x in lines if x["msg"] == "CRL next update is near"]
            assert len(warned) == 1, lines
            assert warned[0]["name"] == "mtls-gateway dev root CA"
            assert 0.4 < warned[0]["days_left"] < 0.6
            assert warned[0]["level"] == "warning"


# --------------------------------------------------------------------------- CRLs over HTTP


class CrlServer:
    """A CRL distribution point on 127.0.0.1 whose answer the test changes."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.status = 200
        self.hits = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hits += 1
                self.send_response(outer.status)
                self.send_header("Content-Length", str(len(outer.body)))
                self.end_headers()
                self.wfile.write(outer.body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/root.crl"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> CrlServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)


def _der_crl(pki: Path, revoked: list[int]) -> bytes:
    return devcerts.make_crl(dev_root(pki), revoked).public_bytes(serialization.Encoding.DER)


@pytest.fixture
def served_crl(pki: Path) -> Iterator[CrlServer]:
    with CrlServer(_der_crl(pki, [])) as server:
        yield server


def _url_config(tmp_path: Path, pki: Path, echo: int, url: str) -> tuple[Path, int, int]:
    path, port, admin = write_config(tmp_path, pki, echo, reload={"watch": False})
    doc = yaml.safe_load(path.read_text())
    doc["listeners"][0]["tls"]["crl"] = [
        {"url": url, "cache": str(tmp_path / "cache" / "root.crl"), "refresh": "300ms"}
    ]
    path.write_text(yaml.safe_dump(doc))
    return path, port, admin


@pytest.mark.process
def test_crl_from_a_url_is_refreshed_and_a_failed_fetch_keeps_the_last_good_one(
    tmp_path: Path, pki: Path, served_crl: CrlServer
) -> None:
    from cryptography import x509

    revoked_serial = x509.load_pem_x509_certificates((pki / "client-revoked.pem").read_bytes())[
        0
    ].serial_number
    with EchoServer() as echo:
        path, port, admin = _url_config(tmp_path, pki, echo.port, served_crl.url)
        with GatewayProcess(path, admin) as gw:
            assert (tmp_path / "cache" / "root.crl").read_bytes() == served_crl.body
            assert _outcome(port, pki, "client-revoked") == "200"  # not revoked yet

            served_crl.body = _der_crl(pki, [revoked_serial])
            deadline = time.monotonic() + 10
            while _outcome(port, pki, "client-revoked") == "200" and time.monotonic() < deadline:
                time.sleep(0.2)
            assert _outcome(port, pki, "client-revoked") == "failed"
            metrics = scrape(admin)
            assert (
                sample(
                    metrics,
                    "mtls_gateway_tls_handshakes_total",
                    listener="public",
                    result="revoked",
                )
                >= 1
            )
            assert sample(metrics, "mtls_gateway_config_reloads_total", result="success") >= 1

            served_crl.status = 500
            hits = served_crl.hits
            deadline = time.monotonic() + 10
            while served_crl.hits < hits + 2 and time.monotonic() < deadline:
                time.sleep(0.1)
            metrics = scrape(admin)
            assert (
                sample(
                    metrics, "mtls_gateway_crl_fetches_total", url=served_crl.url, result="failure"
                )
                >= 1
            )
            # the last good CRL still applies: revoked stays revoked, others pass (no crl_error)
            assert _outcome(port, pki, "client-revoked") == "failed"
            assert _outcome(port, pki, "client") == "200"
            cached = x509.load_der_x509_crl((tmp_path / "cache" / "root.crl").read_bytes())
            assert cached.get_revoked_certificate_by_serial_number(revoked_serial) is not None
            assert "CRL fetch failed, keeping the last good copy" in gw.logs()


@pytest.mark.process
def test_unreachable_crl_url_without_cache_refuses_to_start(tmp_path: Path, pki: Path) -> None:
    with EchoServer() as echo:
        path, _, _ = _url_config(tmp_path, pki, echo.port, "http://127.0.0.1:9/none.crl")
        out = subprocess.run(
            [sys.executable, "-m", "gateway", "check", "-c", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert out.returncode == 2
    assert "listeners[0].tls.crl[0].url: no cached copy and the first fetch failed" in out.stderr


def _crls_revoking_the_intermediate(pki: Path, out: Path) -> Path:
    """crl.pem with the root's CRL replaced by one that lists the dev intermediate CA."""
    from cryptography import x509

    from gateway.pki import crl as crls

    inter = x509.load_pem_x509_certificate((pki / "intermediate.pem").read_bytes())
    kept = [c for c in crls.parse_crls((pki / "crl.pem").read_bytes()) if c.issuer == inter.subject]
    root_crl = devcerts.make_crl(dev_root(pki), [inter.serial_number])
    out.write_bytes(crls.to_pem([root_crl, *kept]))
    return out


def test_a_revoked_intermediate_fails_the_handshake(pki: Path, tmp_path: Path) -> None:
    """Every CA of the bundle has a CRL: the whole chain is checked, not only the leaf."""
    path = _crls_revoking_the_intermediate(pki, tmp_path / "crl.pem")
    with running(lambda port: base_config(pki, port, crl=[str(path)]), pki) as gw:
        for cert, result, outcome in [
            ("client-intermediate", "revoked", "failed"),  # its issuer is revoked
            ("client", "ok", "200"),  # issued by the root itself
        ]:
            before = handshake_counts(gw.metrics)
            assert _outcome(gw.port, pki, cert) == outcome, cert
            assert wait_delta(gw.metrics, before, {result: 1}) == {result: 1}, cert


def test_check_refuses_crls_that_break_rfc_5280(pki: Path, tmp_path: Path) -> None:
    """A CRL without crlNumber, with crlNumber critical, with an unknown critical extension, or
    from a CA whose keyUsage lacks cRLSign is a config error naming the file."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    root = dev_root(pki)

    def crl(issuer: devcerts.Issued, *exts: tuple[x509.ExtensionType, bool]) -> Path:
        now = dt.datetime.now(dt.UTC)
        b = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(issuer.cert.subject)
            .last_update(now - dt.timedelta(hours=1))
            .next_update(now + dt.timedelta(days=7))
        )
        for ext, critical in exts:
            b = b.add_extension(ext, critical=critical)
        out = tmp_path / f"crl-{len(list(tmp_path.iterdir()))}.pem"
        out.write_bytes(
            b.sign(issuer.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
        )
        return out

    number = x509.CRLNumber(7)
    unknown = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.55555.1"), b"\x05\x00")
    for path, words in [
        (crl(root), "has no crlNumber"),
        (crl(root, (number, True)), "crlNumber marked critical"),
        (crl(root, (number, False), (unknown, True)), "critical extension 1.3.6.1.4.1.55555.1"),
    ]:
        problems = _problems(pki, crl=[str(path)])
        assert any(str(path) in p and words in p for p in problems), (words, problems)

    # a CA whose keyUsage does not allow signing CRLs
    no_crl_sign = devcerts.issue(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "no crlSign CA")]), ca=True
    )
    key_usage = no_crl_sign.cert.extensions.get_extension_for_class(x509.KeyUsage).value
    if key_usage.crl_sign:  # devcerts gives CAs cRLSign: build one without it
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(no_crl_sign.cert.subject)
            .issuer_name(no_crl_sign.cert.subject)
            .public_key(no_crl_sign.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, False, False, False),
                critical=True,
            )
            .sign(no_crl_sign.key, hashes.SHA256())
        )
        no_crl_sign = devcerts.Issued(cert, no_crl_sign.key)
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(devcerts.pem(no_crl_sign.cert))
    path = crl(no_crl_sign, (number, False))
    problems = _problems(pki, client_ca=[str(bundle)], crl=[str(path)])
    assert any(str(path) in p and "cRLSign" in p for p in problems), problems


@pytest.mark.process
def test_a_crl_reload_closes_the_open_connection_of_a_client_it_revokes(
    tmp_path: Path, pki: Path
) -> None:
    """A client revoked by a new CRL loses its open keep-alive connection at the reload (after
    the answer in progress), counted and logged with its identity; other clients keep theirs."""
    import http.client
    import ssl

    from cryptography import x509

    from tests.harness import client_context
    from tests.integration.test_reload import post_reload

    crl_file = tmp_path / "crl.pem"
    crl_file.write_bytes((pki / "crl.pem").read_bytes())
    client = x509.load_pem_x509_certificate((pki / "client.pem").read_bytes())
    with EchoServer() as echo:
        path, port, admin = write_config(tmp_path, pki, echo.port, reload={"watch": False})
        doc = yaml.safe_load(path.read_text())
        doc["listeners"][0]["tls"]["crl"] = [str(crl_file)]
        path.write_text(yaml.safe_dump(doc))
        with GatewayProcess(path, admin) as gw:
            revoked = http.client.HTTPSConnection(
                "localhost", port, context=client_context(pki, "client"), timeout=10
            )
            other = http.client.HTTPSConnection(
                "localhost", port, context=client_context(pki, "client-intermediate"), timeout=10
            )
            for conn in (revoked, other):
                conn.request("GET", "/before")
                before = conn.getresponse()
                before.read()
                assert before.status == 200
            # the CA revokes `client`: a new CRL, then a reload
            root_crl = devcerts.make_crl(dev_root(pki), [client.serial_number])
            from gateway.pki import crl as crls

            inter_crls = [
                c for c in crls.parse_crls((pki / "crl.pem").read_bytes())
                if c.issuer != root_crl.issuer
            ]  # fmt: skip
            crl_file.write_bytes(crls.to_pem([root_crl, *inter_crls]))
            status, body = post_reload(admin)
            assert (status, body["result"]) == (200, "success"), body
            with pytest.raises((ConnectionError, http.client.HTTPException, ssl.SSLError, OSError)):
                revoked.request("GET", "/after")
                revoked.getresponse().read()
            other.request("GET", "/after")
            assert other.getresponse().status == 200  # the same connection, still served
            metric = "mtls_gateway_connections_closed_on_recheck_total"
            assert sample(scrape(admin), metric, listener="public", reason="revoked") == 1
            lines = [json.loads(x) for x in gw.logs().splitlines() if x.startswith("{")]
            (closed,) = [x for x in lines if x["msg"].startswith("open connection closed")]
            assert closed["client_serial"] == f"{client.serial_number:x}"
            revoked.close()
            other.close()


@pytest.mark.process
def test_a_connection_carries_no_request_past_its_max_age(tmp_path: Path, pki: Path) -> None:
    import http.client

    from tests.harness import client_context

    with EchoServer() as echo:
        path, port, admin = write_config(tmp_path, pki, echo.port)
        doc = yaml.safe_load(path.read_text())
        doc["listeners"][0]["limits"] = {"max_connection_age": "1s"}
        path.write_text(yaml.safe_dump(doc))
        with GatewayProcess(path, admin):
            conn = http.client.HTTPSConnection(
                "localhost", port, context=client_context(pki), timeout=10
            )
            conn.request("GET", "/young")
            first = conn.getresponse()
            first.read()
            assert first.getheader("Connection") is None  # kept alive
            time.sleep(1.2)
            conn.request("GET", "/old")
            second = conn.getresponse()
            second.read()
            assert second.status == 200 and second.getheader("Connection") == "close"
            conn.close()
