"""Secrets hygiene: readable private keys are refused by `run` (warned by `check`), key material
never reaches logs or error messages, PKCS#12 passwords never come from argv."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.harness import EchoServer, GatewayProcess, cert_args, curl, write_config

pytestmark = pytest.mark.process


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], capture_output=True, text=True, timeout=60
    )


def _key_lines(key: Path) -> list[str]:
    """The base64 body lines of a PEM key: none of them may ever be printed."""
    return [
        line
        for line in key.read_text().splitlines()
        if line and not line.startswith("-----") and len(line) > 20
    ]


def _config_with_key(tmp_path: Path, pki: Path, mode: int, **tls: object) -> Path:
    key = tmp_path / "server.key"
    shutil.copy(pki / "server.key", key)
    key.chmod(mode)
    path, _, _ = write_config(tmp_path, pki, 9)
    doc = yaml.safe_load(path.read_text())
    doc["listeners"][0]["tls"].update(key=str(key), **tls)
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize(("mode", "who"), [(0o644, "others"), (0o640, "its group")])
def test_readable_key_is_refused_by_run_and_warned_by_check(
    tmp_path: Path, pki: Path, mode: int, who: str
) -> None:
    path = _config_with_key(tmp_path, pki, mode)
    run = _cli("run", "-c", str(path))
    assert run.returncode == 2
    assert f"listeners[0].tls.key: {tmp_path / 'server.key'} is readable by {who}" in run.stderr
    assert f"(mode {mode:04o})" in run.stderr and "allow_readable_key" in run.stderr
    check = _cli("check", "-c", str(path))
    assert check.returncode == 0, check.stderr
    assert "warning: listeners[0].tls.key:" in check.stderr


def test_readable_key_allowed_explicitly(tmp_path: Path, pki: Path) -> None:
    with EchoServer() as echo:
        path = _config_with_key(tmp_path, pki, 0o644, allow_readable_key=True)
        doc = yaml.safe_load(path.read_text())
        doc["upstreams"][0]["url"] = f"http://127.0.0.1:{echo.port}"
        path.write_text(yaml.safe_dump(doc))
        port = int(doc["listeners"][0]["bind"].rsplit(":", 1)[1])
        admin = int(doc["admin"]["bind"].rsplit(":", 1)[1])
        with GatewayProcess(path, admin):
            out = curl(
                *cert_args(pki),
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                f"https://localhost:{port}/",
            )
            assert out.stdout == "200"


def test_key_material_never_printed(tmp_path: Path, pki: Path) -> None:
    """A wrong key, a garbage key and a full debug-level run: no line of any key shows up."""
    other = pki / "client.key"
    wrong = _config_with_key(tmp_path, pki, 0o600)
    doc = yaml.safe_load(wrong.read_text())
    doc["listeners"][0]["tls"]["key"] = str(other)
    wrong.write_text(yaml.safe_dump(doc))
    outputs = [_cli("check", "-c", str(wrong)), _cli("run", "-c", str(wrong))]
    garbage = tmp_path / "garbage.key"
    garbage.write_text((pki / "server.key").read_text()[:-40] + "\n-----END PRIVATE KEY-----\n")
    garbage.chmod(0o600)
    doc["listeners"][0]["tls"]["key"] = str(garbage)
    wrong.write_text(yaml.safe_dump(doc))
    outputs += [_cli("check", "-c", str(wrong)), _cli("run", "-c", str(wrong))]
    for out in outputs:
        assert out.returncode == 2
        text = out.stdout + out.stderr
        assert "listeners[0].tls.key" in text
        for secret in _key_lines(other) + _key_lines(pki / "server.key"):
            assert secret not in text
        assert "PRIVATE KEY-----" not in text

    with EchoServer() as echo:
        path, port, admin = write_config(
            tmp_path, pki, echo.port, logging={"level": "debug", "access_log": True}
        )
        with GatewayProcess(path, admin) as gw:
            for cert in ("client", "client-expired", "client-untrusted"):
                curl(*cert_args(pki, cert), f"https://localhost:{port}/")
        logs = gw.logs()  # after the stop: the access lines are written in batches
        assert "tls handshake failed" in logs and '"msg": "request"' in logs
        for key in ("server.key", "client.key", "client-expired.key", "client-untrusted.key"):
            for secret in _key_lines(pki / key):
                assert secret not in logs, key


def test_pkcs12_password_has_no_command_line_option() -> None:
    out = _cli("explain", "--help")
    assert "--password-file" in out.stdout and "--password-env" in out.stdout
    assert "--password " not in out.stdout and "--password=" not in out.stdout
