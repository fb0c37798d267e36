"""`mtls-gateway demo` as a newcomer runs it: every command it prints works when pasted into a
shell in the folder it was started from."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.harness import free_port

ROOT = Path(__file__).resolve().parents[2]


def _demo_tree(tmp_path: Path) -> tuple[Path, int]:
    """The repository's layout in `tmp_path`: config/demo.yaml (on free ports) and certs-dev/."""
    (tmp_path / "config").mkdir()
    text = (ROOT / "config" / "demo.yaml").read_text()
    port = free_port()
    for fixed, new in (
        ("8443", port),
        ("9000", free_port()),
        ("9002", free_port()),
        ("9901", free_port()),
    ):
        assert f":{fixed}" in text
        text = text.replace(f":{fixed}", f":{new}")
    (tmp_path / "config" / "demo.yaml").write_text(text)
    return tmp_path, port


def _stream_through(certs: Path, port: int) -> list[bytes]:
    """A bidirectional-streaming grpcio call to the demo's gRPC echo, with the dev client
    certificate: each message comes back."""
    import grpc

    creds = grpc.ssl_channel_credentials(
        root_certificates=(certs / "ca.pem").read_bytes(),
        private_key=(certs / "client.key").read_bytes(),
        certificate_chain=(certs / "client.pem").read_bytes(),
    )
    with grpc.secure_channel(f"localhost:{port}", creds) as channel:
        chat = channel.stream_stream("/demo.Echo/Chat")
        return list(chat(iter([b"one", b"two", b"three"]), timeout=10))


@pytest.mark.process
def test_every_command_the_demo_prints_works_pasted(tmp_path: Path) -> None:
    cwd, port = _demo_tree(tmp_path)
    command = Path(sys.executable).parent / "mtls-gateway"  # the console script make installs
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin"  # a fresh shell: the venv is not on PATH
    err = tmp_path / "demo.err"
    with err.open("wb") as sink:
        proc = subprocess.Popen(
            [str(command), "demo"], cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=sink
        )
    try:
        deadline = time.monotonic() + 30
        while "Ctrl-C stops the demo." not in err.read_text(errors="replace"):
            assert proc.poll() is None, err.read_text()
            assert time.monotonic() < deadline, err.read_text()
            time.sleep(0.1)
        printed = [
            line.strip()
            for line in err.read_text().splitlines()
            if line.startswith("  ") and not line.lstrip().startswith("{")
        ]
        assert len(printed) == 7, printed
        assert f"https://localhost:{port}" in printed[0]

        def paste(line: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                ["bash", "-c", line], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
            )

        allowed, denied, refused, explain, grpc_call, metrics, reload = printed
        assert paste(allowed + " -sS -o /dev/null -w '%{http_code}'").stdout == "200"
        out = paste(denied + " -sS")
        assert '"client_cert_not_allowed"' in out.stdout, out
        out = paste(refused + " -sS")
        assert out.returncode != 0 and "alert" in out.stderr, out
        out = paste(explain)
        assert out.returncode == 1 and "DENIED at handshake by OpenSSL (revoked)" in out.stdout, out
        assert shlex.split(explain)[0] != "mtls-gateway"  # not on a fresh shell's PATH
        # the gRPC echo through the gateway, with the Python that has grpcio (the line says so)
        assert grpc_call.startswith("python -c ")
        out = paste(shlex.quote(sys.executable) + grpc_call.removeprefix("python"))
        assert out.returncode == 0 and out.stdout.strip() == "b'hello'", out
        assert _stream_through(cwd / "certs-dev", port) == [b"one", b"two", b"three"]
        out = paste(metrics)
        assert re.search(
            r'mtls_gateway_tls_handshakes_total\{.*result="no_client_cert"', out.stdout
        )
        out = paste(reload)
        assert '"result": "success"' in out.stdout, out
    finally:
        proc.terminate()
        proc.wait(15)
