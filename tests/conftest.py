"""Shared fixtures: one dev PKI per test session, generated with gateway.devcerts."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from gateway.pki import devcerts

# Property tests check correctness, not speed: a loaded 2-core CI machine must not fail them.
settings.register_profile("gateway", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("gateway")


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return devcerts.generate(tmp_path_factory.mktemp("pki"))
