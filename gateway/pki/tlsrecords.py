"""The client's certificates as they crossed the wire in a TLS 1.2 (or older) handshake.

When OpenSSL rejects a client certificate inside the handshake, Python's ssl module never
hands it over, so a failed handshake's log line could only say why, not whom. Up to TLS 1.2
the client's Certificate message travels in cleartext: its flight is a run of TLS records
(RFC 5246 §6.2) of content type handshake (22) holding handshake messages (§7.4), until the
client's ChangeCipherSpec. This reads that cleartext part of the bytes the client sent and
returns the DER certificates of its Certificate message; the certificates themselves are
parsed by `cryptography`. Under TLS 1.3 the Certificate message is encrypted (RFC 8446 §2),
so nothing is found there: the log says so.

Sans-IO and total: any byte string gives a list (empty when there is no such message, or the
bytes are cut short or malformed); nothing raises."""

from __future__ import annotations

from gateway.pki.identity import Identity, parse_identity

HANDSHAKE = 22
CHANGE_CIPHER_SPEC = 20
CERTIFICATE = 11
MAX_CERTIFICATES = 10  # a client chain longer than this is not logged whole
MAX_FRAGMENT = 16384  # the largest record plaintext (RFC 5246 §6.2.1)


def handshake_messages(data: bytes) -> list[tuple[int, bytes]]:
    """The whole handshake messages carried in cleartext records at the start of `data`, as
    (type, body), in order; a message cut off by the end of `data` is left out."""
    stream = bytearray()
    at = 0
    while at + 5 <= len(data):
        kind = data[at]
        length = int.from_bytes(data[at + 3 : at + 5], "big")
        if kind != HANDSHAKE or data[at + 1] != 3 or at + 5 + length > len(data):
            break  # ChangeCipherSpec (what follows is encrypted), not TLS, or cut short
        stream += data[at + 5 : at + 5 + length]
        at += 5 + length
    out = []
    at = 0
    while at + 4 <= len(stream):
        length = int.from_bytes(stream[at + 1 : at + 4], "big")
        if at + 4 + length > len(stream):
            break
        out.append((stream[at], bytes(stream[at + 4 : at + 4 + length])))
        at += 4 + length
    return out


def client_certificates(data: bytes) -> list[bytes]:
    """The DER certificates of the client's cleartext Certificate message (leaf first), or
    [] when `data` holds none (TLS 1.3, no certificate sent, cut short, malformed)."""
    for kind, body in handshake_messages(data):
        if kind != CERTIFICATE:
            continue
        if len(body) < 3 or int.from_bytes(body[:3], "big") != len(body) - 3:
            return []
        certs: list[bytes] = []
        at = 3
        while at + 3 <= len(body) and len(certs) < MAX_CERTIFICATES:
            length = int.from_bytes(body[at : at + 3], "big")
            if length == 0 or at + 3 + length > len(body):
                return []
            certs.append(body[at + 3 : at + 3 + length])
            at += 3 + length
        return certs
    return []


def certificate_message(chain: list[bytes]) -> bytes:
    """A TLS 1.2 Certificate handshake message carrying `chain` (DER, leaf first)."""
    entries = b"".join(len(der).to_bytes(3, "big") + der for der in chain)
    body = len(entries).to_bytes(3, "big") + entries
    return bytes([CERTIFICATE]) + len(body).to_bytes(3, "big") + body


def with_certificate(flight: bytes, chain: list[bytes]) -> bytes | None:
    """`flight` (a TLS 1.2 client's second flight: Certificate, ClientKeyExchange, ..., then
    ChangeCipherSpec and its encrypted Finished) with the Certificate message replaced by one
    carrying `chain`, re-framed into records; the bytes from ChangeCipherSpec on unchanged.
    None when `flight` holds no cleartext Certificate message."""
    at = 0
    version = b"\x03\x03"
    messages = bytearray()
    while at + 5 <= len(flight) and flight[at] == HANDSHAKE:
        version = flight[at + 1 : at + 3]
        length = int.from_bytes(flight[at + 3 : at + 5], "big")
        messages += flight[at + 5 : at + 5 + length]
        at += 5 + length
    rest = flight[at:]
    out = bytearray()
    found = False
    pos = 0
    while pos + 4 <= len(messages):
        length = int.from_bytes(messages[pos + 1 : pos + 4], "big")
        message = bytes(messages[pos : pos + 4 + length])
        if messages[pos] == CERTIFICATE and not found:
            message, found = certificate_message(chain), True
        out += message
        pos += 4 + length
    if not found:
        return None
    records = bytearray()
    for start in range(0, len(out), MAX_FRAGMENT):
        fragment = out[start : start + MAX_FRAGMENT]
        records += bytes([HANDSHAKE]) + version + len(fragment).to_bytes(2, "big") + fragment
    return bytes(records) + rest


def client_identity(flight: bytes) -> Identity | None:
    """The client's leaf certificate, parsed, from its cleartext handshake bytes: what names
    the client of a failed TLS 1.2 handshake; None when they hold none cryptography reads."""
    certs = client_certificates(flight)
    if not certs:
        return None
    try:
        return parse_identity(certs[0])
    except ValueError:  # not a certificate cryptography can read: nothing to name
        return None
