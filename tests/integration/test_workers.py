"""`run --workers 2` as a real process tree: both workers serve the shared port, metrics are
aggregated on the supervisor's admin port, a killed worker is replaced, SIGHUP reaches every
worker, SIGTERM drains and exits 0."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.observe.tally import FLUSH_SECONDS
from tests.harness import EchoServer, issue_server, request, sample, scrape, write_config

pytestmark = pytest.mark.process


def _two_workers(path: Path) -> subprocess.Popen[bytes]:
    """`run --workers 2` on the config at `path`, its output discarded."""
    return subprocess.Popen(
        [sys.executable, "-m", "gateway", "run", "-c", str(path), "--workers", "2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def _status(admin: int) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/status", timeout=2) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())
    except OSError:
        return 0, {}


def _wait(check: Any, seconds: float = 20) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise TimeoutError("condition not met")


def _server_serial(port: int, pki: Path) -> int:
    import socket

    from cryptography import x509

    from tests.harness import client_context

    with (
        socket.create_connection(("127.0.0.1", port)) as raw,
        client_context(pki).wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return int(x509.load_der_x509_certificate(der).serial_number)


def test_two_workers_share_the_port_and_the_supervisor_keeps_them(
    tmp_path: Path, pki: Path
) -> None:
    certs = tmp_path / "certs"
    serial_a = issue_server(pki, certs, "a")
    serial_b = issue_server(pki, certs, "b")
    with EchoServer() as echo:
        path, port, admin = write_config(tmp_path, pki, echo.port, reload={"watch": False})
        doc = yaml.safe_load(path.read_text())
        doc["listeners"][0]["tls"].update(cert=str(certs / "a.pem"), key=str(certs / "a.key"))
        path.write_text(yaml.safe_dump(doc))
        log = (tmp_path / "supervisor.log").open("wb")
        pid_file = tmp_path / "gateway.pid"
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "-c", str(path), "--workers", "2",
             "--pid-file", str(pid_file)],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            status = _wait(lambda: (s := _status(admin))[0] == 200 and s[1])
            pids = [w["pid"] for w in status["workers"]]
            assert len(set(pids)) == 2 and all(w["ready"] for w in status["workers"])

            for i in range(40):  # new connections land on both workers (SO_REUSEPORT)
                assert request(port, f"/n/{i}", pki).status == 200
            # a worker adds its counts to the shared files within FLUSH_SECONDS (tally.py)
            started = time.monotonic()
            metrics = _wait(
                lambda: (
                    (m := scrape(admin))
                    and sample(
                        m, "mtls_gateway_requests_total", route="all", method="GET", code="200"
                    )
                    == 40
                    and m
                )
            )
            assert time.monotonic() - started < FLUSH_SECONDS + 1.0
            per_pid = {
                dict(labels).get("pid")
                for (name, labels), v in metrics.items()
                if name == "mtls_gateway_tls_handshakes_total" and v > 0
            }
            assert per_pid == {None}  # counters come summed, not per worker

            # each process's memory and the build are on the supervisor's /metrics
            rss = "mtls_gateway_process_resident_memory_bytes"
            assert sample(metrics, rss, role="supervisor", slot="") > 10e6
            assert all(sample(metrics, rss, role="worker", slot=s) > 10e6 for s in "01")
            info = [k for k in metrics if k[0] == "mtls_gateway_build_info"]
            assert len(info) == 1 and metrics[info[0]] == 1
            assert sample(metrics, "mtls_gateway_worker_restarts_total", slot="0") == 0

            for _ in range(6):  # rejections on both workers, then one of them dies
                _no_cert_handshake(port, pki)
            _wait(lambda: _rejections_on_page(admin) == 6)
            os.kill(pids[0], signal.SIGKILL)  # a worker dies: it is replaced
            status = _wait(
                lambda: (
                    (s := _status(admin))[0] == 200
                    and pids[0] not in [w["pid"] for w in s[1]["workers"]]
                    and s[1]
                )
            )
            assert status["workers"][0]["restarts"] == 1
            assert request(port, "/after-restart", pki).status == 200
            restarted = scrape(admin)
            assert sample(restarted, "mtls_gateway_worker_restarts_total", slot="0") == 1
            assert sample(restarted, rss, role="worker", slot="0") > 10e6
            assert _rejections_on_page(admin) == 6  # the dead worker's history is kept

            doc["listeners"][0]["tls"].update(cert=str(certs / "b.pem"), key=str(certs / "b.key"))
            path.write_text(yaml.safe_dump(doc))
            # the README's reload: the pid file names the supervisor, which fans SIGHUP out
            assert int(pid_file.read_text()) == proc.pid
            os.kill(int(pid_file.read_text()), signal.SIGHUP)
            _wait(lambda: all(_server_serial(port, pki) == serial_b for _ in range(10)))
            assert serial_a != serial_b

            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
            assert not pid_file.exists()  # removed on exit
            for pid in [w["pid"] for w in _status_workers_after(status)]:
                assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            log.close()
    text = (tmp_path / "supervisor.log").read_text()
    assert "worker exited, restarting" in text and "supervisor stopped" in text


def _rejections_on_page(admin: int) -> int:
    """The status page's count of `no_client_cert` handshakes over its window."""
    page = _admin(admin, "/")[1].decode()
    match = re.search(r"<td>no_client_cert</td><td[^>]*>(\d+)</td>", page)
    return int(match.group(1)) if match else 0


def _status_workers_after(status: dict[str, Any]) -> list[dict[str, Any]]:
    return [w for w in status["workers"] if w["pid"] is not None]


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def test_workers_exit_when_the_supervisor_is_killed(tmp_path: Path, pki: Path) -> None:
    with EchoServer() as echo:
        path, _, admin = write_config(tmp_path, pki, echo.port, reload={"watch": False})
        proc = _two_workers(path)
        try:
            status = _wait(lambda: (s := _status(admin))[0] == 200 and s[1])
            pids = [w["pid"] for w in status["workers"]]
            proc.kill()  # no chance to pass anything on
            proc.wait(10)
            _wait(lambda: all(not Path(f"/proc/{p}").exists() or _is_zombie(p) for p in pids), 10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


def _admin(admin: int, path: str, method: str = "GET") -> tuple[int, bytes]:
    req = urllib.request.Request(f"http://127.0.0.1:{admin}{path}", method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def _no_cert_handshake(port: int, pki: Path) -> None:
    import socket
    import ssl

    from tests.harness import client_context

    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        try:
            with client_context(pki, None).wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
                tls.recv(100)  # TLS 1.3: the rejection arrives after the handshake
        except (ssl.SSLError, OSError):
            pass


def test_supervisor_admin_has_the_status_page_certs_and_checked_reloads(
    tmp_path: Path, pki: Path
) -> None:
    certs = tmp_path / "certs"
    issue_server(pki, certs, "a")
    serial_b = issue_server(pki, certs, "b")
    with EchoServer() as echo:
        path, port, admin = write_config(tmp_path, pki, echo.port, reload={"watch": False})
        good = path.read_text()
        proc = _two_workers(path)
        try:
            _wait(lambda: _status(admin)[0] == 200)
            for _ in range(6):  # rejections land on both workers
                _no_cert_handshake(port, pki)
            # the page merges every worker's recent rejections (shared once a second)
            page = _wait(
                lambda: (p := _admin(admin, "/")[1].decode()).count("no_client_cert") and p
            )
            assert "<table" in page and "all" in page  # the route and its policy in words
            code, body = _admin(admin, "/status")
            doc = json.loads(body)
            assert code == 200 and len(doc["workers"]) == 2 and doc["listeners"]
            code, body = _admin(admin, "/certs")
            kinds = {c["kind"] for c in json.loads(body)["certificates"]}
            assert code == 200 and {"server", "ca"} <= kinds

            path.write_text(good.replace("listeners:", "listenerz:"))  # broken: not signalled
            code, body = _admin(admin, "/reload", "POST")
            assert code == 422 and "listenerz" in body.decode()
            reloads = "mtls_gateway_config_reloads_total"
            # rejected by the supervisor, no worker saw it: still a failure the alert sees
            assert sample(scrape(admin), reloads, result="failure") == 1
            proc.send_signal(signal.SIGHUP)
            _wait(lambda: sample(scrape(admin), reloads, result="failure") == 2, 10)

            doc2 = yaml.safe_load(good)
            doc2["listeners"][0]["tls"].update(cert=str(certs / "b.pem"), key=str(certs / "b.key"))
            path.write_text(yaml.safe_dump(doc2))
            code, body = _admin(admin, "/reload", "POST")
            assert code == 200 and json.loads(body)["result"] == "success", body
            assert sample(scrape(admin), reloads, result="success") == 2  # each worker
            assert all(_server_serial(port, pki) == serial_b for _ in range(10))
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


def test_the_supervisors_views_follow_a_secret_rotation(tmp_path: Path, pki: Path) -> None:
    """Workers that watch their files reload on their own (a kubelet swapping a Secret): the
    supervisor's /certs, /status and page show what the workers now serve."""
    certs = tmp_path / "certs"
    serial_a = issue_server(pki, certs, "a")
    issue_server(pki, certs, "b")
    with EchoServer() as echo:
        path, port, admin = write_config(tmp_path, pki, echo.port)
        doc = yaml.safe_load(path.read_text())
        doc["reload"] = {"watch": True}
        doc["listeners"][0]["tls"].update(cert=str(certs / "a.pem"), key=str(certs / "a.key"))
        path.write_text(yaml.safe_dump(doc))
        proc = _two_workers(path)
        try:
            status = _wait(lambda: (s := _status(admin))[0] == 200 and s[1])
            assert status["last_reload"] is None

            def server_serials() -> set[str]:
                doc = json.loads(_admin(admin, "/certs")[1])
                return {c["serial_number"] for c in doc["certificates"] if c["kind"] == "server"}

            assert server_serials() == {f"{serial_a:x}"}
            # the swap: new files beside, then renamed over the old ones (the config is unchanged)
            rotated = issue_server(pki, certs, "rotated")
            for ext in ("key", "pem"):
                os.replace(certs / f"rotated.{ext}", certs / f"a.{ext}")
            _wait(lambda: all(_server_serial(port, pki) == rotated for _ in range(10)))
            _wait(lambda: server_serials() == {f"{rotated:x}"}, 5)
            assert _status(admin)[1]["last_reload"] is not None
            assert f"{rotated:x}" in _admin(admin, "/")[1].decode()
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
