"""The strict profile never accepts what OpenSSL rejects, and every input gets a verdict.

Hypothesis builds client chains with the faults real PKIs have (`tests/chains.py`): EKUs on the
leaf and on the CA, CA flags, keyUsage, name constraints on DNS names, CNs and e-mail
addresses, missing key identifiers, validity windows, weak keys and curves, unknown critical
extensions, signatures by the wrong key. Each goes to `verify_chain(profile="strict")` and to
OpenSSL itself: the server side of an in-memory handshake on a listener context built as the
gateway builds it (`gateway.opensslcheck`)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from gateway.config.listener import TlsConfig
from gateway.pki import devcerts
from gateway.pki.opensslcheck import openssl_verdict
from gateway.pki.verify import verify_chain
from tests import chains

ROOT = chains.root()


@pytest.fixture(scope="module")
def listener(tmp_path_factory: pytest.TempPathFactory) -> TlsConfig:
    out = tmp_path_factory.mktemp("strict-vs-openssl")
    (out / "ca.pem").write_bytes(devcerts.pem(ROOT.cert))
    server = devcerts.issue(devcerts.name("localhost"), ROOT, eku=None)
    devcerts.write_issued(out, "server", server, p12=False)
    return TlsConfig.model_validate(
        {"cert": str(out / "server.pem"), "key": str(out / "server.key"),
         "client_ca": [str(out / "ca.pem")]}
    )  # fmt: skip


def _both(spec: chains.Spec, listener: TlsConfig) -> tuple[object, object]:
    leaf, sent = chains.build(spec, ROOT)
    strict = verify_chain(leaf.cert, sent, [ROOT.cert], profile="strict")
    real = openssl_verdict(listener, "listeners[0].tls", leaf.cert, sent)
    return strict, real


@settings(
    max_examples=2000,
    deadline=None,
    derandomize=True,  # the same chains every run, so CI cannot flake; explore with more
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(spec=chains.specs())
def test_strict_never_accepts_what_openssl_rejects(spec: chains.Spec, listener: TlsConfig) -> None:
    strict, real = _both(spec, listener)
    assert not (strict.ok and not real.ok), (spec, real, strict.steps)  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", sorted(chains.NAMED))
def test_the_named_chains(name: str, listener: TlsConfig) -> None:
    """The corpus the gateway differential also runs: the implication, and a reason always."""
    strict, real = _both(chains.NAMED[name], listener)
    assert strict.reason is not None or strict.ok  # type: ignore[attr-defined]
    assert not (strict.ok and not real.ok), (name, real, strict.steps)  # type: ignore[attr-defined]
