"""Soak: a bounded mixed load against the real process — good keep-alive and new-connection
clients, bad certificates, slow heads, clients that vanish mid-request, a dead upstream — then
no leaked descriptors or tasks, bounded memory, every good request answered correctly, and
counters that add up (handshake results = connections accepted).

CI runs it for SOAK_SECONDS (10 s); `make soak` runs the full 60 s."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.harness import (
    EchoServer,
    GatewayProcess,
    client_context,
    free_port,
    request,
    sample,
    scrape,
    write_config,
)

pytestmark = pytest.mark.process
SECONDS = float(os.environ.get("SOAK_SECONDS", "10"))
MAX_RSS_GROWTH_KIB = 48 * 1024


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def _status(admin: int) -> dict[str, object]:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/status", timeout=5) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


def _settle(check: Callable[[], bool], seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return check()


def test_soak(tmp_path: Path, pki: Path) -> None:
    with EchoServer() as echo:
        path, port, admin = write_config(
            tmp_path, pki, echo.port, logging={"level": "warning", "access_log": False}
        )
        doc = yaml.safe_load(path.read_text())
        doc["listeners"][0]["tls"]["crl"] = [str(pki / "crl.pem")]
        doc["listeners"][0]["limits"] = {"header_timeout": "1s", "keepalive_timeout": "5s"}
        doc["upstreams"].append({"name": "dead", "url": f"http://127.0.0.1:{free_port()}"})
        doc["routes"].insert(
            0,
            {
                "name": "dead",
                "match": {"path_prefix": "/dead"},
                "upstream": "dead",
                "policy": {"allow": "any"},
            },
        )
        path.write_text(yaml.safe_dump(doc))
        with GatewayProcess(path, admin) as gw:
            assert gw.proc is not None
            pid = gw.proc.pid
            assert request(port, "/warm", pki).status == 200
            time.sleep(0.5)
            fds0, rss0 = _fds(pid), _rss_kib(pid)
            tasks0 = int(_status(admin)["tasks"])  # type: ignore[call-overload]

            stop = time.monotonic() + SECONDS
            good = [0]
            failures: list[str] = []
            counts = {"bad_cert": 0, "slow": 0, "vanished": 0, "dead": 0}

            def keepalive() -> None:
                conn = http.client.HTTPSConnection(
                    "localhost", port, context=client_context(pki), timeout=10
                )
                i = 0
                while time.monotonic() < stop:
                    i += 1
                    body = f"payload-{i}".encode()
                    try:
                        conn.request("POST", f"/ka/{i}", body=body)
                        resp = conn.getresponse()
                        data = json.loads(resp.read())
                        if (
                            resp.status != 200
                            or data["path"] != f"/ka/{i}"
                            or data["body_bytes"] != len(body)
                        ):
                            failures.append(f"keep-alive {resp.status} {data}")
                        else:
                            good[0] += 1
                    except (OSError, http.client.HTTPException) as exc:
                        conn.close()  # keep-alive closed by the server is allowed: reconnect
                        if not isinstance(
                            exc,
                            http.client.RemoteDisconnected | ConnectionResetError | BrokenPipeError,
                        ):
                            failures.append(f"keep-alive {exc!r}")
                conn.close()

            def fresh() -> None:
                while time.monotonic() < stop:
                    try:
                        reply = request(port, "/fresh", pki)
                        if reply.status == 200 and reply.json()["path"] == "/fresh":
                            good[0] += 1
                        else:
                            failures.append(f"fresh {reply.status}")
                    except OSError as exc:
                        failures.append(f"fresh {exc!r}")

            def bad_certs() -> None:
                kinds = ["client-expired", "client-untrusted", "client-revoked", "client-servereku"]
                while time.monotonic() < stop:
                    try:
                        request(port, "/nope", pki, kinds[counts["bad_cert"] % len(kinds)])
                        failures.append("a bad certificate was served")
                    except OSError:
                        counts["bad_cert"] += 1

            def slow_and_vanishing() -> None:
                while time.monotonic() < stop:
                    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
                        tls = client_context(pki).wrap_socket(raw, server_hostname="localhost")
                        if counts["slow"] <= counts["vanished"]:
                            tls.sendall(b"GET /slow HTTP/1.1\r\nHo")  # cut by header_timeout
                            tls.settimeout(5)
                            with contextlib.suppress(OSError):  # 408 or a close: either is fine
                                tls.recv(4096)
                            counts["slow"] += 1
                        else:  # announce a body, send a bit, disappear
                            tls.sendall(
                                b"POST /gone HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000\r\n\r\nxyz"
                            )
                            counts["vanished"] += 1
                        tls.close()

            def dead_upstream() -> None:
                while time.monotonic() < stop:
                    try:
                        # 502 while its only target is tried, 503 once it is ejected
                        if request(port, "/dead/x", pki).status in (502, 503):
                            counts["dead"] += 1
                        else:
                            failures.append("dead upstream did not give 502/503")
                    except OSError as exc:
                        failures.append(f"dead {exc!r}")
                    time.sleep(0.05)

            workers = [keepalive, keepalive, fresh, bad_certs, slow_and_vanishing, dead_upstream]
            threads = [threading.Thread(target=w) for w in workers]
            for t in threads:
                t.start()
            for t in threads:
                t.join(SECONDS + 30)

            settled = _settle(
                lambda: (
                    sample(
                        scrape(admin),
                        "mtls_gateway_connections_active",
                        listener="public",
                        protocol="HTTP/1.1",
                    )
                    == 0
                )
            )
            metrics = scrape(admin)
            handshakes = sum(
                v for (name, _), v in metrics.items() if name == "mtls_gateway_tls_handshakes_total"
            )
            accepted = sample(metrics, "mtls_gateway_connections_accepted_total", listener="public")
            fds1, rss1 = _fds(pid), _rss_kib(pid)
            tasks1 = int(_status(admin)["tasks"])  # type: ignore[call-overload]
            print(
                f"\nsoak {SECONDS:.0f} s: {good[0]} good requests, {counts}, failures {len(failures)}; "
                f"fds {fds0} -> {fds1}, tasks {tasks0} -> {tasks1}, RSS {rss0 // 1024} -> {rss1 // 1024} MiB, "
                f"handshakes {handshakes:.0f} = accepted {accepted:.0f}"
            )
            assert failures == []
            assert good[0] > 0 and all(counts.values()), counts
            assert settled, "connections still open after the load"
            assert fds1 <= fds0 + 5
            assert tasks1 <= tasks0 + 5
            assert rss1 - rss0 < MAX_RSS_GROWTH_KIB
            assert handshakes == accepted
