"""`explain` equals the handshake: every chain of a corpus (tests/chains.py: the faults real
PKIs have, plus a revoked leaf and a revoked intermediate) goes through `explain` and through a
real handshake with the running gateway (curl, TLS 1.3, its own key), under both profiles, and
the verdict and the reason must be the same."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from gateway.config.load import load_config
from gateway.pki import devcerts
from gateway.pki.verify import load_certs
from gateway.process.explain import explain
from tests import chains
from tests.harness import EchoServer, GatewayProcess, write_config
from tests.integration.test_explain import _gateway_outcome

pytestmark = pytest.mark.process


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """Each chain's leaf (with its intermediates) and key as NAME.pem / NAME.key, the root as
    ca.pem, a server certificate, and CRLs that revoke two of the chains."""
    out = tmp_path_factory.mktemp("explain-differential")
    root = chains.root("differential root")
    (out / "ca.pem").write_bytes(devcerts.pem(root.cert))
    server = devcerts.issue(
        devcerts.name("localhost"), root, eku=[ExtendedKeyUsageOID.SERVER_AUTH],
        sans=[x509.DNSName("localhost")],
    )  # fmt: skip
    devcerts.write_issued(out, "server", server, p12=False)
    # left to test_strict_vs_openssl, which needs no client to present them: P-192 (no TLS 1.3
    # signature scheme exists for it) and RSA 1024 (curl refuses to load it below the security
    # level its ciphers set)
    specs = {n: s for n, s in chains.NAMED.items() if s.key not in ("p192", "rsa1024")}
    specs["revoked"] = chains.GOOD
    specs["revoked-intermediate"] = replace(chains.GOOD, intermediate=True)
    revoked: list[int] = []
    for name, spec in specs.items():
        leaf, sent = chains.build(spec, root)
        (out / f"{name}.pem").write_bytes(b"".join(devcerts.pem(c) for c in [leaf.cert, *sent]))
        (out / f"{name}.key").write_bytes(devcerts.key_pem(leaf.key))
        if name == "revoked":
            revoked.append(leaf.cert.serial_number)
        elif name == "revoked-intermediate":
            revoked.append(sent[0].serial_number)
    crls = devcerts.make_crl(root, revoked).public_bytes(Encoding.PEM)
    crls += chains.intermediate_crl().public_bytes(Encoding.PEM)
    (out / "crl.pem").write_bytes(crls)
    return out, sorted(specs)


def _explained(config: Path, certs: Path, name: str) -> tuple[bool, str, str]:
    loaded = load_certs((certs / f"{name}.pem").read_bytes())
    out = explain(load_config(str(config)), loaded[0], loaded[1:], route="all")
    return out.allowed, out.reason or "ok", out.decided_by or ""


@pytest.mark.parametrize("profile", ["strict", "openssl"])
def test_explain_and_the_running_gateway_agree_on_every_chain(
    tmp_path: Path, corpus: tuple[Path, list[str]], profile: str
) -> None:
    certs, names = corpus
    with EchoServer() as echo:
        config, port, admin = write_config(tmp_path, certs, echo.port, reload={"watch": False})
        doc = yaml.safe_load(config.read_text())
        doc["listeners"][0]["tls"]["crl"] = [str(certs / "crl.pem")]
        if profile == "openssl":  # strict is the default: left unsaid
            doc["listeners"][0]["tls"]["verify_profile"] = profile
        config.write_text(yaml.safe_dump(doc))
        disagreements: list[dict[str, Any]] = []
        seen = set()
        outcome: dict[str, tuple[bool, str]] = {}
        with GatewayProcess(config, admin):
            for name in names:
                real = _gateway_outcome(port, admin, certs, name, "/")
                allowed, reason, by = _explained(config, certs, name)
                seen.add(real[1])
                outcome[name] = real
                if (allowed, reason) != real:
                    disagreements.append(
                        {"chain": name, "gateway": real, "explain": [allowed, reason, by]}
                    )
        assert disagreements == [], json.dumps(disagreements, indent=1)
    # the corpus reaches both verdicts and the reasons that matter, under each profile
    assert {"ok", "revoked", "bad_cert", "bad_eku", "expired", "not_yet_valid"} <= seen
    assert outcome["revoked-intermediate"] == (False, "revoked")  # the whole chain is checked
    if profile == "strict":  # by default, what OpenSSL alone lets through is refused
        assert outcome["leaf-is-ca"] == (False, "bad_cert")
        assert outcome["no-eku"] == (False, "bad_eku")
        assert outcome["dns-constraint-cn-only"] == (False, "bad_cert")
    else:
        assert outcome["leaf-is-ca"] == outcome["no-eku"] == (True, "ok")
