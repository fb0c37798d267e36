"""The client's certificates from the bytes of its handshake flight: real flights recorded
from an in-memory handshake between two `ssl` objects (TLS 1.2 and 1.3), then cut and
corrupted byte by byte."""

from __future__ import annotations

import contextlib
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from gateway.pki import devcerts
from gateway.pki.tlsrecords import client_certificates, handshake_messages, with_certificate


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, x509.Certificate]:
    out = tmp_path_factory.mktemp("records")
    root = devcerts.issue(devcerts.name("records root"), ca=True)
    server = devcerts.issue(
        devcerts.name("localhost"), root, eku=[ExtendedKeyUsageOID.SERVER_AUTH],
        sans=[x509.DNSName("localhost")],
    )  # fmt: skip
    client = devcerts.issue(devcerts.name("the client", ou="clients"), root)
    stranger = devcerts.issue(devcerts.name("another root"), ca=True)
    (out / "ca.pem").write_bytes(devcerts.pem(root.cert))
    (out / "stranger.pem").write_bytes(devcerts.pem(stranger.cert))
    devcerts.write_issued(out, "server", server, p12=False)
    (out / "client.pem").write_bytes(devcerts.pem(client.cert) + devcerts.pem(root.cert))
    (out / "client.key").write_bytes(devcerts.key_pem(client.key))
    return out, client.cert


def _client_flight(out: Path, version: ssl.TLSVersion) -> bytes:
    """Everything the client sends in a handshake the server rejects (unknown CA)."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(out / "server.pem", out / "server.key")
    server_ctx.load_verify_locations(out / "stranger.pem")
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    server_ctx.maximum_version = version
    client_ctx = ssl.create_default_context(cafile=str(out / "ca.pem"))
    client_ctx.load_cert_chain(out / "client.pem", out / "client.key")
    pipes = [ssl.MemoryBIO() for _ in range(4)]
    client = client_ctx.wrap_bio(pipes[0], pipes[1], server_hostname="localhost")
    server = server_ctx.wrap_bio(pipes[2], pipes[3], server_side=True)
    sent = bytearray()
    for _ in range(10):
        for side in (client, server):
            try:
                side.do_handshake()
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError:
                return bytes(sent)
        data = pipes[1].read()
        sent += data
        pipes[2].write(data)
        pipes[0].write(pipes[3].read())
    raise AssertionError("the handshake did not fail")


def test_a_tls12_flight_gives_the_clients_chain(pki: tuple[Path, x509.Certificate]) -> None:
    out, leaf = pki
    flight = _client_flight(out, ssl.TLSVersion.TLSv1_2)
    certs = client_certificates(flight)
    assert x509.load_der_x509_certificate(certs[0]) == leaf
    assert len(certs) == 2  # the chain as sent: leaf, then the root the client included
    assert [kind for kind, _ in handshake_messages(flight)][:2] == [1, 11]  # hello, certificate


def test_a_tls13_flight_holds_no_cleartext_certificate(pki: tuple[Path, x509.Certificate]) -> None:
    out, _ = pki
    flight = _client_flight(out, ssl.TLSVersion.TLSv1_3)
    assert [kind for kind, _ in handshake_messages(flight)] == [1]  # only the ClientHello
    assert client_certificates(flight) == []


def test_cut_or_corrupted_flights_never_raise(pki: tuple[Path, x509.Certificate]) -> None:
    out, _ = pki
    flight = _client_flight(out, ssl.TLSVersion.TLSv1_2)
    whole = client_certificates(flight)
    for end in range(len(flight)):
        got = client_certificates(flight[:end])
        assert got in ([], whole)  # a cut message is left out, never half read
    for at in range(0, len(flight), 7):
        corrupted = flight[:at] + bytes([flight[at] ^ 0xFF]) + flight[at + 1 :]
        assert isinstance(client_certificates(corrupted), list)
    assert client_certificates(b"GET / HTTP/1.1\r\n\r\n") == []
    assert client_certificates(b"") == []
    # a certificate list whose length disagrees with its message
    body = (7).to_bytes(3, "big") + (2).to_bytes(3, "big") + b"\x30\x00"
    message = bytes([11]) + len(body).to_bytes(3, "big") + body
    record = bytes([22, 3, 3]) + len(message).to_bytes(2, "big") + message
    assert client_certificates(record) == []


def _empty_certificate_flight(out: Path) -> bytes:
    """A TLS 1.2 client's second flight with no certificate (an empty Certificate message)."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(out / "server.pem", out / "server.key")
    server_ctx.load_verify_locations(out / "ca.pem")
    server_ctx.verify_mode = ssl.CERT_OPTIONAL
    client_ctx = ssl.create_default_context(cafile=str(out / "ca.pem"))
    client_ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    pipes = [ssl.MemoryBIO() for _ in range(4)]
    client = client_ctx.wrap_bio(pipes[0], pipes[1], server_hostname="localhost")
    server = server_ctx.wrap_bio(pipes[2], pipes[3], server_side=True)
    for side, feed_from, feed_to in ((client, 1, 2), (server, 3, 0), (client, 1, 2)):
        with contextlib.suppress(ssl.SSLWantReadError):
            side.do_handshake()
        pipes[feed_to].write(pipes[feed_from].read())
    return pipes[2].read()


def test_the_certificate_message_is_replaced_and_the_rest_kept(
    pki: tuple[Path, x509.Certificate],
) -> None:
    out, leaf = pki
    flight = _empty_certificate_flight(out)
    assert handshake_messages(flight)[0][0] == 11
    assert client_certificates(flight) == []  # sent empty
    der = leaf.public_bytes(serialization.Encoding.DER)
    forged = with_certificate(flight, [der])
    assert forged is not None and client_certificates(forged) == [der]
    kinds = [kind for kind, _ in handshake_messages(forged)]
    assert kinds == [kind for kind, _ in handshake_messages(flight)]  # ClientKeyExchange kept
    tail = flight[flight.index(bytes([20, 3, 3])) :]  # ChangeCipherSpec on: unchanged
    assert forged.endswith(tail)
    # a chain over one record's 16 KiB is split across records and read back whole
    big = [der] * 9 + [b"\x30" + b"\x00" * 16000]
    forged = with_certificate(flight, big)
    assert forged is not None and client_certificates(forged) == big[:10]
    assert with_certificate(_client_flight(out, ssl.TLSVersion.TLSv1_3), [der]) is None
