"""Graceful shutdown of the real process: SIGTERM -> not ready, no new connections, in-flight
requests finish (up to shutdown_timeout), exit 0."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.harness import EchoServer, GatewayProcess, Reply, refused, request, write_config

pytestmark = pytest.mark.process


def _get(admin: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}{path}", timeout=2) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


def _readyz(admin: int) -> int:
    return _get(admin, "/readyz")


def _in_flight(port: int, pki: Path, seconds: float, out: list[Reply | BaseException]) -> None:
    try:
        out.append(request(port, f"/slow?seconds={seconds}", pki))
    except BaseException as exc:
        out.append(exc)


def _terminate_during_slow_request(
    tmp_path: Path, pki: Path, shutdown_timeout: str, slow_seconds: float, while_draining: bool
) -> tuple[int, float, list[Reply | BaseException], str]:
    """SIGTERM the real process while a slow request is at the upstream.

    Returns the exit code, how long the exit took, what the client got, and the logs."""
    with EchoServer() as echo:
        path, port, admin = write_config(
            tmp_path, pki, echo.port, shutdown_timeout=shutdown_timeout
        )
        with GatewayProcess(path, admin) as gw:
            assert gw.proc is not None
            replies: list[Reply | BaseException] = []
            slow = threading.Thread(target=_in_flight, args=(port, pki, slow_seconds, replies))
            slow.start()
            time.sleep(0.5)  # the request is at the upstream now
            sent = time.monotonic()
            gw.proc.terminate()
            if while_draining:
                deadline = time.monotonic() + 1.0
                while _readyz(admin) != 503 and time.monotonic() < deadline:
                    time.sleep(0.02)
                assert _readyz(admin) == 503
                assert _get(admin, "/status") == 503
                while not refused(port) and time.monotonic() < deadline:
                    time.sleep(0.02)
                assert refused(port)
            code = gw.proc.wait(15)
            took = time.monotonic() - sent
            slow.join(15)
            return code, took, replies, gw.logs()


def test_sigterm_drains_the_request_in_flight_then_exits_0(tmp_path: Path, pki: Path) -> None:
    code, took, replies, logs = _terminate_during_slow_request(tmp_path, pki, "10s", 2.0, True)
    assert code == 0, logs
    assert len(replies) == 1 and isinstance(replies[0], Reply), replies
    assert replies[0].status == 200
    assert 1.0 < took < 8.0
    assert '"gateway stopped"' in logs


def test_shutdown_timeout_bounds_the_drain(tmp_path: Path, pki: Path) -> None:
    code, took, replies, logs = _terminate_during_slow_request(tmp_path, pki, "1s", 6.0, False)
    assert code == 0, logs
    assert took < 4.0
    # the request that outlived the drain was cut, not answered
    assert len(replies) == 1 and not (isinstance(replies[0], Reply) and replies[0].status == 200)
