"""verify_chain: every reason from a known-good baseline, one change per case."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gateway.pki import devcerts
from gateway.pki.verify import load_certs, verify_chain
from tests.harness import dev_root


def _pem(pki: Path, name: str) -> bytes:
    return (pki / name).read_bytes()


# dev cert -> (openssl profile reason, strict profile reason), with crl.pem
DEV_CASES = {
    "client": ("ok", "ok"),
    "client-intermediate": ("ok", "ok"),
    "client-noeku": ("ok", "bad_eku"),
    "client-servereku": ("bad_eku", "bad_eku"),
    "client-expired": ("expired", "expired"),
    "client-notyetvalid": ("not_yet_valid", "not_yet_valid"),
    "client-revoked": ("revoked", "revoked"),
    "client-untrusted": ("unknown_ca", "unknown_ca"),
}


@pytest.mark.parametrize("cert", list(DEV_CASES))
@pytest.mark.parametrize("profile", ["openssl", "strict"])
def test_dev_certificates(pki: Path, cert: str, profile: str) -> None:
    data = _pem(pki, f"{cert}.pem")
    v = verify_chain(
        data,
        data,
        _pem(pki, "ca.pem"),
        crls=_pem(pki, "crl.pem"),
        profile=profile,  # type: ignore[arg-type]
    )
    want = DEV_CASES[cert][0 if profile == "openssl" else 1]
    assert (v.reason or "ok") == want, v.steps
    assert v.ok == (want == "ok")
    if v.ok:
        assert v.chain[-1].subject == x509.load_pem_x509_certificate(_pem(pki, "ca.pem")).subject


def test_der_input_and_parsed_objects(pki: Path) -> None:
    leaf = x509.load_pem_x509_certificate(_pem(pki, "client.pem"))
    der = leaf.public_bytes(serialization.Encoding.DER)
    root = x509.load_pem_x509_certificate(_pem(pki, "ca.pem"))
    assert verify_chain(der, [], [root.public_bytes(serialization.Encoding.DER)]).ok
    assert verify_chain(leaf, None, root).ok


def test_garbage_is_bad_cert(pki: Path) -> None:
    v = verify_chain(b"not a certificate", (), _pem(pki, "ca.pem"))
    assert v.reason == "bad_cert" and v.steps[-1].name == "parse"


def test_missing_intermediate_is_unknown_ca_and_says_so(pki: Path) -> None:
    leaf_only = _pem(pki, "client-intermediate.pem").split(b"-----END CERTIFICATE-----")[0]
    v = verify_chain(leaf_only + b"-----END CERTIFICATE-----\n", (), _pem(pki, "ca.pem"))
    assert v.reason == "unknown_ca"
    assert "client sent no intermediates" in v.detail


def test_an_issuing_ca_is_a_trust_anchor_as_listed(pki: Path) -> None:
    """The gateway's contexts allow partial chains (RFC 5280 6.1): a bundle holding only the
    intermediate trusts its clients without the root, in OpenSSL and here alike, and still
    not the root's other clients."""
    from gateway.config.listener import TlsConfig
    from gateway.pki.opensslcheck import openssl_verdict

    listener = TlsConfig.model_validate(
        {"cert": str(pki / "server.pem"), "key": str(pki / "server.key"),
         "client_ca": [str(pki / "intermediate.pem")]}
    )  # fmt: skip
    for name, ok in (("client-intermediate", True), ("client", False)):
        certs = load_certs(_pem(pki, f"{name}.pem"))
        for profile in ("openssl", "strict"):
            v = verify_chain(certs[0], certs[1:], _pem(pki, "intermediate.pem"), profile=profile)
            assert v.ok is ok and (ok or v.reason == "unknown_ca"), (name, profile, v.detail)
        assert openssl_verdict(listener, "listeners[0].tls", certs[0], certs[1:]).ok is ok
    # with CRLs: the intermediate's clients are checked against its CRL, and it is trusted as
    # listed (its root's CRL could not be checked without the root): OpenSSL and here agree
    with_crl = listener.model_copy(update={"crl": (str(pki / "crl.pem"),)})
    certs = load_certs(_pem(pki, "client-intermediate.pem"))
    real = openssl_verdict(with_crl, "listeners[0].tls", certs[0], certs[1:])
    model = verify_chain(
        certs[0], certs[1:], _pem(pki, "intermediate.pem"), crls=_pem(pki, "crl.pem"),
        profile="openssl",
    )  # fmt: skip
    assert real.ok and model.ok, (real, model.detail)
    assert "only the leaf" in str(model.steps)


def test_forged_issuer_name_is_bad_signature(pki: Path) -> None:
    impostor = devcerts.issue(devcerts.name("mtls-gateway dev root CA"), ca=True)
    forged = devcerts.issue(devcerts.name("forged"), impostor)
    v = verify_chain(devcerts.pem(forged.cert), (), _pem(pki, "ca.pem"))
    assert v.reason == "bad_signature", v.steps


def test_self_signed_untrusted(pki: Path) -> None:
    selfie = devcerts.issue(devcerts.name("selfie"), ca=True)
    v = verify_chain(devcerts.pem(selfie.cert), (), _pem(pki, "ca.pem"))
    assert v.reason == "unknown_ca" and "self-signed" in v.detail


def test_at_moves_the_clock(pki: Path) -> None:
    data = _pem(pki, "client.pem")
    now = dt.datetime.now(dt.UTC)
    assert (
        verify_chain(data, (), _pem(pki, "ca.pem"), at=now - dt.timedelta(days=3)).reason
        == "not_yet_valid"
    )
    assert (
        verify_chain(data, (), _pem(pki, "ca.pem"), at=now + dt.timedelta(days=400)).reason
        == "expired"
    )


def test_crl_states(pki: Path) -> None:
    root = dev_root(pki)
    data = _pem(pki, "client.pem")
    ca = _pem(pki, "ca.pem")
    lapsed = devcerts.make_crl(root, [], next_update_days=-1)
    assert verify_chain(data, (), ca, crls=[lapsed]).reason == "crl_error"
    other = devcerts.make_crl(devcerts.issue(devcerts.name("other"), ca=True), [])
    v = verify_chain(data, (), ca, crls=[other])
    assert v.reason == "crl_error" and "no CRL signed by" in v.detail
    good = devcerts.make_crl(root, [])
    assert verify_chain(data, (), ca, crls=[good]).ok
    assert verify_chain(data, (), ca, crls=None).ok  # no revocation check asked for


def test_required_ekus_in_strict_profile(pki: Path) -> None:
    data = _pem(pki, "client.pem")
    v = verify_chain(data, (), _pem(pki, "ca.pem"), required_ekus=["1.3.6.1.5.5.7.3.4"])
    assert v.reason == "bad_eku" and "emailProtection" in v.detail
    # the openssl profile checks the purposes asked for too (the gateway asks for clientAuth)
    v = verify_chain(
        data, (), _pem(pki, "ca.pem"), required_ekus=["1.3.6.1.5.5.7.3.4"], profile="openssl"
    )
    assert v.reason == "bad_eku" and "emailProtection" in v.detail


def _chain_crls(pki: Path, revoke_intermediate: bool) -> list[x509.CertificateRevocationList]:
    """The root's CRL (listing the intermediate or not) and the intermediate's, from crl.pem."""
    from gateway.pki import crl as crls

    inter = x509.load_pem_x509_certificate(_pem(pki, "intermediate.pem"))
    kept = [c for c in crls.parse_crls(_pem(pki, "crl.pem")) if c.issuer == inter.subject]
    root_crl = devcerts.make_crl(
        dev_root(pki), [inter.serial_number] if revoke_intermediate else []
    )
    return [root_crl, *kept]


@pytest.mark.parametrize("profile", ["openssl", "strict"])
def test_a_revoked_intermediate_is_named(pki: Path, profile: str) -> None:
    """CRLs for every CA of the bundle: each certificate of the chain is checked."""
    data = _pem(pki, "client-intermediate.pem")
    ca = _pem(pki, "ca.pem")
    v = verify_chain(data, data, ca, crls=_chain_crls(pki, True), profile=profile)  # type: ignore[arg-type]
    assert v.reason == "revoked" and "intermediate" in v.detail, v.steps
    assert verify_chain(data, data, ca, crls=_chain_crls(pki, False), profile=profile).ok  # type: ignore[arg-type]


def test_without_a_crl_for_every_ca_only_the_leaf_is_checked(pki: Path) -> None:
    """As the handshake does then (VERIFY_CRL_CHECK_LEAF): the bundle's other CA has no CRL."""
    data = _pem(pki, "client-intermediate.pem")
    bundle = _pem(pki, "ca.pem") + _pem(pki, "untrusted-ca.pem")
    v = verify_chain(data, data, bundle, crls=_chain_crls(pki, True), profile="openssl")
    assert v.ok, v.steps
    assert any("only the leaf" in s.detail for s in v.steps), v.steps


@pytest.mark.parametrize("profile", ["openssl", "strict"])
def test_required_ekus_are_the_callers(pki: Path, profile: str) -> None:
    """verify_chain checks the purposes it is asked for: the dev server certificate (serverAuth)
    verifies as a server, and fails as a client."""
    from cryptography.x509.oid import ExtendedKeyUsageOID

    chain = _pem(pki, "server.pem")  # leaf + intermediate
    ca = _pem(pki, "ca.pem")
    as_server = verify_chain(
        chain,
        chain,
        ca,
        required_ekus=[ExtendedKeyUsageOID.SERVER_AUTH],
        profile=profile,  # type: ignore[arg-type]
    )
    assert as_server.ok, as_server.steps
    as_client = verify_chain(chain, chain, ca, profile=profile)  # type: ignore[arg-type]
    assert as_client.reason == "bad_eku" and "clientAuth" in as_client.detail, as_client.steps
