"""Checks of the files a config references (cert/key pair, EKU, SANs, CAs, expiry)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.base.errors import ConfigError, ConfigProblem
from gateway.config.listener import ListenerConfig
from gateway.config.load import load_config
from gateway.config.model import GatewayConfig
from gateway.pki import crl as crls


@dataclass(frozen=True)
class HeldCert:
    """A certificate the gateway holds, for expiry gauges and warnings."""

    kind: str  # server | server_chain | ca | crl
    name: str
    subject: str
    not_after: float  # for a CRL: its nextUpdate
    warn_before: float = 0.0  # seconds before not_after at which to log a warning
    issuer: str = ""
    serial: str = ""  # hex; empty for a CRL
    not_before: float = 0.0  # for a CRL: its lastUpdate
    path: str = ""
    listener: str = ""  # the listener that holds it (one certificate may serve several)


def _held(
    kind: str, name: str, cert: x509.Certificate, warn_before: float, path: str, listener: str
) -> HeldCert:
    return HeldCert(
        kind,
        name,
        cert.subject.rfc4514_string(),
        cert.not_valid_after_utc.timestamp(),
        warn_before,
        cert.issuer.rfc4514_string(),
        f"{cert.serial_number:x}",
        cert.not_valid_before_utc.timestamp(),
        path,
        listener,
    )


def _read(path: str, where: str, problems: list[ConfigProblem]) -> bytes | None:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        problems.append(ConfigProblem(where, f"cannot read {path}: {exc.strerror or exc}"))
        return None


def _load_certs(
    data: bytes, path: str, where: str, problems: list[ConfigProblem]
) -> list[x509.Certificate]:
    try:
        if b"-----BEGIN" in data:
            certs = x509.load_pem_x509_certificates(data)
        else:
            certs = [x509.load_der_x509_certificate(data)]
    except ValueError as exc:
        problems.append(ConfigProblem(where, f"{path} holds no readable certificate: {exc}"))
        return []
    return certs


def _cn(cert: x509.Certificate) -> str:
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = attrs[0].value if attrs else cert.subject.rfc4514_string()
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _san_covers(san: x509.SubjectAlternativeName | None, host: str) -> bool:
    if san is None:
        return False
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if ip is not None:
        return ip in san.get_values_for_type(x509.IPAddress)
    for name in san.get_values_for_type(x509.DNSName):
        name = name.lower().rstrip(".")
        if name == host:
            return True
        if name.startswith("*.") and not host.startswith("*."):
            head, _, rest = host.partition(".")
            if rest == name[2:] and head:
                return True
    return False


def load_checked(
    path: str | Path, prepare: Callable[[GatewayConfig], list[ConfigProblem]] | None = None
) -> tuple[GatewayConfig, list[HeldCert]]:
    """Load the config and check every file it names; raise ConfigError with all problems.

    `prepare` runs between the two (it fetches CRLs that have no cached copy yet)."""
    cfg = load_config(path)
    if prepare is not None:
        problems = prepare(cfg)
        if problems:
            raise ConfigError(problems)
    problems, held = check_files(cfg)
    problems += key_permission_problems(cfg, honour_allow=True)
    if problems:
        raise ConfigError(problems)
    return cfg, held


def key_permission_problems(cfg: GatewayConfig, honour_allow: bool) -> list[ConfigProblem]:
    """Private keys readable by group or others. `run` refuses them unless the listener says
    `allow_readable_key: true`; `check` reports them as warnings either way."""
    problems = []
    for i, lst in enumerate(cfg.listeners):
        if honour_allow and lst.tls.allow_readable_key:
            continue
        try:
            mode = os.stat(lst.tls.key).st_mode & 0o777
        except OSError:
            continue  # unreadable keys are reported by check_files
        if mode & 0o077:
            problems.append(
                ConfigProblem(
                    f"listeners[{i}].tls.key",
                    f"{lst.tls.key} is readable by {'others' if mode & 0o007 else 'its group'} "
                    f"(mode {mode:04o}); chmod 600 it (Kubernetes: defaultMode 0400 on the "
                    "secret volume), or set allow_readable_key: true",
                )
            )
    return problems


def check_files(
    cfg: GatewayConfig, now: dt.datetime | None = None
) -> tuple[list[ConfigProblem], list[HeldCert]]:
    """Every problem with the referenced files, and the certificates found (for gauges)."""
    now = now or dt.datetime.now(dt.UTC)
    problems: list[ConfigProblem] = []
    held: list[HeldCert] = []
    sans: list[x509.SubjectAlternativeName | None] = []
    for i, lst in enumerate(cfg.listeners):
        base = f"listeners[{i}].tls"
        data = _read(lst.tls.cert, f"{base}.cert", problems)
        certs = (
            _load_certs(data, lst.tls.cert, f"{base}.cert", problems) if data is not None else []
        )
        if certs:
            leaf = certs[0]
            warn = lst.tls.expiry_warning
            held.append(_held("server", lst.name, leaf, warn, lst.tls.cert, lst.name))
            held += [
                _held("server_chain", f"{lst.name}/{_cn(c)}", c, warn, lst.tls.cert, lst.name)
                for c in certs[1:]
            ]
            sans.append(_check_server_leaf(leaf, lst.tls.cert, f"{base}.cert", now, problems))
            key_data = _read(lst.tls.key, f"{base}.key", problems)
            if key_data is not None:
                _check_key(key_data, leaf, lst.tls.key, f"{base}.key", problems)
        if lst.tls.client_auth == "none":
            continue
        bundle: list[x509.Certificate] = []
        for j, ca_path in enumerate(lst.tls.client_ca):
            where = f"{base}.client_ca[{j}]"
            ca_data = _read(ca_path, where, problems)
            if ca_data is None:
                continue
            for ca in _load_certs(ca_data, ca_path, where, problems):
                held.append(_held("ca", _cn(ca), ca, lst.tls.expiry_warning, ca_path, lst.name))
                _check_ca(ca, ca_path, where, now, problems)
                bundle.append(ca)
        if lst.tls.crl:
            held += _check_crls(lst, base, bundle, now, problems)
    for i, route in enumerate(cfg.routes):
        host = route.match.host
        if host is None or not sans:
            continue
        if not any(_san_covers(s, host) for s in sans):
            problems.append(
                ConfigProblem(
                    f"routes[{i}].match.host",
                    f"{host!r} is not covered by the subjectAltName of any listener's server "
                    "certificate; clients would reject the gateway",
                )
            )
    return problems, held


def _check_server_leaf(
    leaf: x509.Certificate, path: str, where: str, now: dt.datetime, problems: list[ConfigProblem]
) -> x509.SubjectAlternativeName | None:
    if leaf.not_valid_after_utc <= now:
        problems.append(
            ConfigProblem(
                where,
                f"server certificate in {path} expired on {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC",
            )
        )
    elif leaf.not_valid_before_utc > now:
        problems.append(
            ConfigProblem(
                where,
                f"server certificate in {path} is not valid before {leaf.not_valid_before_utc:%Y-%m-%d %H:%M} UTC",
            )
        )
    try:
        eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        if ExtendedKeyUsageOID.SERVER_AUTH not in eku:
            problems.append(
                ConfigProblem(
                    where,
                    f"server certificate in {path} has an extendedKeyUsage without serverAuth (1.3.6.1.5.5.7.3.1)",
                )
            )
    except x509.ExtensionNotFound:
        problems.append(
            ConfigProblem(
                where,
                f"server certificate in {path} has no extendedKeyUsage; issue it with serverAuth",
            )
        )
    try:
        return leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        problems.append(
            ConfigProblem(
                where, f"server certificate in {path} has no subjectAltName; clients ignore the CN"
            )
        )
        return None


def _check_key(
    data: bytes, leaf: x509.Certificate, path: str, where: str, problems: list[ConfigProblem]
) -> None:
    try:
        key = (
            serialization.load_pem_private_key(data, password=None)
            if b"-----BEGIN" in data
            else serialization.load_der_private_key(data, password=None)
        )
    except (ValueError, TypeError) as exc:
        problems.append(
            ConfigProblem(where, f"{path} holds no readable unencrypted private key: {exc}")
        )
        return
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    enc = serialization.Encoding.DER
    if key.public_key().public_bytes(enc, pub) != leaf.public_key().public_bytes(enc, pub):
        problems.append(ConfigProblem(where, f"{path} does not match the certificate's public key"))


def _check_ca(
    ca: x509.Certificate, path: str, where: str, now: dt.datetime, problems: list[ConfigProblem]
) -> None:
    name = _cn(ca)
    try:
        bc = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
        is_ca = bc.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        problems.append(
            ConfigProblem(
                where,
                f"{name!r} in {path} is not a CA certificate (basicConstraints CA:TRUE missing)",
            )
        )
    if ca.not_valid_after_utc <= now:
        problems.append(
            ConfigProblem(
                where, f"CA {name!r} in {path} expired on {ca.not_valid_after_utc:%Y-%m-%d} UTC"
            )
        )


def _check_crls(
    lst: ListenerConfig,
    base: str,
    bundle: list[x509.Certificate],
    now: dt.datetime,
    problems: list[ConfigProblem],
) -> list[HeldCert]:
    """CRLs readable, not lapsed, signed by their CA; every CA of the bundle has one."""
    held: list[HeldCert] = []
    covered: set[bytes] = set()
    for j, source in enumerate(lst.tls.crl):
        path = crls.source_path(source)
        where = f"{base}.crl[{j}]" + (".cache" if path != source else "")
        data = _read(path, where, problems)
        if data is None:
            continue
        try:
            found = crls.parse_crls(data)
        except ValueError as exc:
            problems.append(ConfigProblem(where, f"{path} holds no readable CRL: {exc}"))
            continue
        for crl in found:
            name = crls.issuer_name(crl)
            nxt = crl.next_update_utc
            if nxt is not None:
                held.append(
                    HeldCert(
                        "crl",
                        name,
                        crl.issuer.rfc4514_string(),
                        nxt.timestamp(),
                        lst.tls.crl_warning,
                        crl.issuer.rfc4514_string(),
                        "",
                        crl.last_update_utc.timestamp(),
                        path,
                        lst.name,
                    )
                )
                if nxt < now:
                    problems.append(
                        ConfigProblem(
                            where,
                            f"the CRL of {name!r} in {path} lapsed on {nxt:%Y-%m-%d %H:%M} UTC "
                            "(nextUpdate); every client of that CA would fail with crl_error",
                        )
                    )
            same_name = [ca for ca in bundle if ca.subject == crl.issuer]
            signers = [ca for ca in same_name if crls.signed_by(crl, ca)]
            if same_name and not signers:
                problems.append(
                    ConfigProblem(
                        where,
                        f"the CRL of {name!r} in {path} is not signed by that CA's key "
                        "(a CRL from another CA with the same name?)",
                    )
                )
            for problem in crls.rfc5280_problems(crl, signers[0] if signers else None):
                problems.append(ConfigProblem(where, f"the CRL of {name!r} in {path} {problem}"))
            covered |= {ca.subject.public_bytes() for ca in signers}
    if not lst.tls.allow_missing_crl:
        for ca in bundle:
            if ca.subject.public_bytes() not in covered:
                problems.append(
                    ConfigProblem(
                        f"{base}.crl",
                        f"no CRL for CA {_cn(ca)!r} of client_ca: with CRL checking on, every "
                        "client it issued would fail with crl_error. Add its CRL, or set "
                        "allow_missing_crl: true if it issues no client certificates",
                    )
                )
    return held
