"""Development/test PKI built with `cryptography`: every good and bad certificate kind we test."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

P12_PASSWORD = b"changeit"
DAY = dt.timedelta(days=1)
CLIENT_URI = "spiffe://dev.local/client"

PrivateKey = ec.EllipticCurvePrivateKey


@dataclass
class Issued:
    """A certificate with its key and the chain above it (issuer first, root excluded)."""

    cert: x509.Certificate
    key: PrivateKey
    chain: list[x509.Certificate] = field(default_factory=list)


def new_key() -> PrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def name(cn: str, o: str = "mtls-gateway dev", ou: str | None = None) -> x509.Name:
    attrs = [
        x509.NameAttribute(NameOID.COMMON_NAME, cn),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, o),
    ]
    if ou:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou))
    return x509.Name(attrs)


def issue(
    subject: x509.Name,
    issuer: Issued | None = None,
    *,
    ca: bool = False,
    path_length: int | None = None,
    eku: Sequence[x509.ObjectIdentifier] | None = (ExtendedKeyUsageOID.CLIENT_AUTH,),
    sans: Sequence[x509.GeneralName] = (),
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    serial: int | None = None,
    key: PrivateKey | None = None,
) -> Issued:
    """Issue one certificate; `issuer=None` self-signs (a root). `eku=None` omits the extension."""
    now = dt.datetime.now(dt.UTC)
    key = key or new_key()
    sign_key = issuer.key if issuer else key
    issuer_name = issuer.cert.subject if issuer else subject
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(serial or x509.random_serial_number())
        .not_valid_before(not_before or now - DAY)
        .not_valid_after(not_after or now + 365 * DAY)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(sign_key.public_key()),
            critical=False,
        )
    )
    if ca:
        usage = x509.KeyUsage(False, False, False, False, False, True, True, False, False)
    else:
        usage = x509.KeyUsage(True, False, False, False, False, False, False, False, False)
    builder = builder.add_extension(usage, critical=True)
    if eku is not None and not ca:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    cert = builder.sign(sign_key, hashes.SHA256())
    chain = [issuer.cert, *issuer.chain] if issuer else []
    # the chain a peer sends stops below the root
    chain = [c for c in chain if c.issuer != c.subject]
    return Issued(cert, key, chain)


def make_crl(
    issuer: Issued, revoked_serials: Sequence[int], *, next_update_days: float = 30
) -> x509.CertificateRevocationList:
    now = dt.datetime.now(dt.UTC)
    next_update = now + dt.timedelta(days=next_update_days)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.cert.subject)
        .last_update(min(now - dt.timedelta(minutes=5), next_update - DAY))
        .next_update(next_update)
        .add_extension(x509.CRLNumber(1), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False,
        )
    )
    for serial in revoked_serials:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(now - DAY)
            .build()
        )
    return builder.sign(issuer.key, hashes.SHA256())


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def write_issued(out: Path, stem: str, item: Issued, *, p12: bool = True) -> None:
    """`stem.pem` (leaf + chain), `stem.key` (0600), and `stem.p12` (password `changeit`)."""
    (out / f"{stem}.pem").write_bytes(b"".join(pem(c) for c in [item.cert, *item.chain]))
    key_path = out / f"{stem}.key"
    key_path.write_bytes(key_pem(item.key))
    os.chmod(key_path, 0o600)
    if p12:
        blob = pkcs12.serialize_key_and_certificates(
            stem.encode(),
            item.key,
            item.cert,
            item.chain or None,
            serialization.BestAvailableEncryption(P12_PASSWORD),
        )
        (out / f"{stem}.p12").write_bytes(blob)


CLIENT_KINDS = (
    "client",
    "client-noeku",
    "client-servereku",
    "client-expired",
    "client-notyetvalid",
    "client-revoked",
    "client-untrusted",
    "client-intermediate",
)


def generate(out_dir: str | Path, extra_hosts: Sequence[str] = ()) -> Path:
    """Write the whole dev PKI (listed in certs-dev/README.md) into `out_dir` and return it."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    root = issue(
        name("mtls-gateway dev root CA"), ca=True, path_length=1, not_after=now + 3650 * DAY
    )
    inter = issue(
        name("mtls-gateway dev intermediate CA"),
        root,
        ca=True,
        path_length=0,
        not_after=now + 1825 * DAY,
    )
    other = issue(name("untrusted dev CA", o="Somebody Else"), ca=True, not_after=now + 3650 * DAY)

    dns = ["localhost", *[h for h in extra_hosts if not _is_ip(h)]]
    ips = ["127.0.0.1", "::1", *[h for h in extra_hosts if _is_ip(h)]]
    server_sans: list[x509.GeneralName] = [x509.DNSName(h) for h in dns]
    server_sans += [x509.IPAddress(ipaddress.ip_address(h)) for h in ips]
    server = issue(
        name("localhost"), inter, eku=[ExtendedKeyUsageOID.SERVER_AUTH], sans=server_sans
    )

    def client(cn: str, issuer: Issued = root, **kw: object) -> Issued:
        sans = [x509.UniformResourceIdentifier(f"spiffe://dev.local/{cn}")]
        return issue(name(cn, ou="clients"), issuer, sans=sans, **kw)  # type: ignore[arg-type]

    clients = {
        "client": client("client"),
        "client-noeku": client("client-noeku", eku=None),
        "client-servereku": client("client-servereku", eku=[ExtendedKeyUsageOID.SERVER_AUTH]),
        "client-expired": client("client-expired", not_before=now - 30 * DAY, not_after=now - DAY),
        "client-notyetvalid": client(
            "client-notyetvalid", not_before=now + 30 * DAY, not_after=now + 60 * DAY
        ),
        "client-revoked": client("client-revoked"),
        "client-untrusted": client("client-untrusted", other),
        "client-intermediate": client("client-intermediate", inter),
    }
    crl = make_crl(root, [clients["client-revoked"].cert.serial_number])
    inter_crl = make_crl(inter, [])

    (out / "ca.pem").write_bytes(pem(root.cert))
    (out / "ca.key").write_bytes(key_pem(root.key))
    os.chmod(out / "ca.key", 0o600)
    (out / "intermediate.pem").write_bytes(pem(inter.cert))
    (out / "untrusted-ca.pem").write_bytes(pem(other.cert))
    (out / "crl.pem").write_bytes(
        crl.public_bytes(serialization.Encoding.PEM)
        + inter_crl.public_bytes(serialization.Encoding.PEM)
    )
    (out / "crl.der").write_bytes(crl.public_bytes(serialization.Encoding.DER))
    write_issued(out, "server", server, p12=False)
    for stem, item in clients.items():
        write_issued(out, stem, item)
    (out / "README.md").write_text(README, encoding="utf-8")
    return out


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def missing(out_dir: str | Path) -> bool:
    """True when the dev PKI in `out_dir` is absent or incomplete."""
    out = Path(out_dir)
    needed = ["ca.pem", "intermediate.pem", "server.pem", "server.key", "crl.pem", "crl.der"]
    needed += [f"{k}.{ext}" for k in CLIENT_KINDS for ext in ("pem", "key", "p12")]
    return not all((out / n).is_file() for n in needed)


README = """\
# Development PKI (generated, not secret)

Written by `mtls-gateway dev-certs --out DIR` (and by `make demo` when missing). Never use these
outside development: the keys are in this folder for everyone to read. PKCS#12 password: `changeit`.

| file | what it is for |
|---|---|
| `ca.pem` / `ca.key` | root CA; trust bundle for client certificates (`client_ca`) and for curl (`--cacert`) |
| `intermediate.pem` | intermediate CA (issued by the root); issues the server cert and `client-intermediate` |
| `server.pem` / `server.key` | server certificate + intermediate: EKU serverAuth, SAN localhost, 127.0.0.1, ::1 |
| `crl.pem` | the root's CRL (lists `client-revoked`) and the intermediate's (empty) |
| `crl.der` | the root's CRL alone, DER-encoded |
| `untrusted-ca.pem` | a CA the gateway does not trust; issues `client-untrusted` |
| `client.*` | good client: EKU clientAuth, SAN URI `spiffe://dev.local/client` |
| `client-noeku.*` | no EKU extension (OpenSSL accepts it; `required_eku: [clientAuth]` rejects it) |
| `client-servereku.*` | EKU serverAuth only: handshake fails with `bad_eku` |
| `client-expired.*` | expired yesterday: `expired` |
| `client-notyetvalid.*` | valid from 30 days from now: `not_yet_valid` |
| `client-revoked.*` | listed in `crl.pem`: `revoked` where CRLs are configured |
| `client-untrusted.*` | issued by `untrusted-ca.pem`: `unknown_ca` |
| `client-intermediate.*` | issued by the intermediate; its `.pem` carries the intermediate too |

Each client comes as `.pem` (certificate, plus chain where there is one), `.key` and `.p12`.
"""
