"""Shared fixtures: one dev PKI per test session, generated with gateway.devcerts."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway import devcerts


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return devcerts.generate(tmp_path_factory.mktemp("pki"))
