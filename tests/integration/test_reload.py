"""Live reload of the real process: SIGHUP, POST /reload, file watching (incl. a Kubernetes
`..data` swap), broken configs kept out, and zero failed requests under load while reloading."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from tests.harness import (
    EchoServer,
    GatewayProcess,
    client_context,
    free_port,
    issue_server,
    refused,
    request,
    sample,
    scrape,
    write_config,
)

pytestmark = pytest.mark.process


def server_serial(port: int, pki: Path) -> int:
    """The serial of the certificate the gateway presents to a new connection."""
    ctx = client_context(pki)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as sock,
        ctx.wrap_socket(sock, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return int(x509.load_der_x509_certificate(der).serial_number)


def post_reload(admin: int) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(f"http://127.0.0.1:{admin}/reload", method="POST")
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def wait_for(check: Callable[[], bool], seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


def configure(
    tmp_path: Path, pki: Path, echo: int, cert_dir: Path, stem: str, **changes: Any
) -> tuple[Path, int, int, dict[str, Any]]:
    path, port, admin = write_config(tmp_path, pki, echo, **changes)
    return path, port, admin, _point_at(path, cert_dir / f"{stem}.pem", cert_dir / f"{stem}.key")


def _point_at(path: Path, cert: Path, key: Path) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text())
    doc["listeners"][0]["tls"]["cert"] = str(cert)
    doc["listeners"][0]["tls"]["key"] = str(key)
    path.write_text(yaml.safe_dump(doc))
    return doc


def test_sighup_and_admin_reload_swap_the_server_certificate(tmp_path: Path, pki: Path) -> None:
    certs = tmp_path / "certs"
    serial_a = issue_server(pki, certs, "a")
    serial_b = issue_server(pki, certs, "b")
    with EchoServer() as echo:
        path, port, admin, _doc = configure(
            tmp_path, pki, echo.port, certs, "a", reload={"watch": False}
        )
        with GatewayProcess(path, admin) as gw:
            assert server_serial(port, pki) == serial_a
            _point_at(path, certs / "b.pem", certs / "b.key")
            status, body = post_reload(admin)
            assert (status, body["result"]) == (200, "success"), body
            assert server_serial(port, pki) == serial_b
            assert request(port, "/x", pki).status == 200

            _point_at(path, certs / "a.pem", certs / "a.key")
            assert gw.proc is not None
            gw.proc.send_signal(signal.SIGHUP)
            assert wait_for(lambda: server_serial(port, pki) == serial_a)
            metrics = scrape(admin)
            assert sample(metrics, "mtls_gateway_config_reloads_total", result="success") == 2
            assert sample(metrics, "mtls_gateway_config_reloads_total", result="failure") == 0
            assert metrics[("mtls_gateway_config_last_reload_success_timestamp_seconds", ())] > (
                time.time() - 60
            )
            lines = [json.loads(x) for x in gw.logs().splitlines() if x.startswith("{")]
            triggers = [x["trigger"] for x in lines if x["msg"] == "config reloaded"]
            assert triggers == ["admin", "signal"]


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        ("unknown key", "listeners[0].tls.certs: unknown key 'certs'"),
        ("key mismatch", "listeners[0].tls.key: "),
        ("missing cert", "listeners[0].tls.cert: cannot read"),
        ("bad yaml", "is not valid YAML at line"),
    ],
)
def test_broken_reload_is_rejected_and_the_old_config_keeps_serving(
    tmp_path: Path, pki: Path, breakage: str, expected: str
) -> None:
    certs = tmp_path / "certs"
    serial_a = issue_server(pki, certs, "a")
    issue_server(pki, certs, "b")
    with EchoServer() as echo:
        path, port, admin, doc = configure(
            tmp_path, pki, echo.port, certs, "a", reload={"watch": False}
        )
        good = path.read_text()
        tls = doc["listeners"][0]["tls"]
        if breakage == "unknown key":
            tls["certs"] = tls["cert"]
        elif breakage == "key mismatch":
            tls["key"] = str(certs / "b.key")
        elif breakage == "missing cert":
            tls["cert"] = str(certs / "nope.pem")
        with GatewayProcess(path, admin) as gw:
            if breakage == "bad yaml":
                path.write_text(good + "routes: [\n")
            else:
                path.write_text(yaml.safe_dump(doc))
            status, body = post_reload(admin)
            assert status == 422, body
            assert body["result"] == "failure"
            assert any(expected in p for p in body["problems"]), body["problems"]
            assert request(port, "/still", pki).status == 200
            assert server_serial(port, pki) == serial_a
            metrics = scrape(admin)
            assert sample(metrics, "mtls_gateway_config_reloads_total", result="failure") == 1
            logged = [json.loads(x) for x in gw.logs().splitlines() if x.startswith("{")]
            rejected = [x for x in logged if x["msg"].startswith("reload rejected")]
            assert len(rejected) == 1 and any(expected in p for p in rejected[0]["problems"])
            # the operator fixes the file: the next reload succeeds
            path.write_text(good)
            assert post_reload(admin)[0] == 200


def _k8s_secret(mount: Path, version: str, cert: Path, key: Path) -> None:
    """What the kubelet does: write a timestamped folder, then swap `..data` atomically."""
    target = mount / f"..{version}"
    target.mkdir()
    shutil.copy(cert, target / "tls.crt")
    shutil.copy(key, target / "tls.key")
    tmp_link = mount / "..data_tmp"
    os.symlink(target.name, tmp_link)
    old = os.readlink(mount / "..data") if (mount / "..data").is_symlink() else None
    os.replace(tmp_link, mount / "..data")
    if old is not None:
        shutil.rmtree(mount / old)
    for name in ("tls.crt", "tls.key"):
        if not (mount / name).is_symlink():
            os.symlink(f"..data/{name}", mount / name)


def test_watch_picks_up_a_kubernetes_secret_swap_and_a_config_edit(
    tmp_path: Path, pki: Path
) -> None:
    certs = tmp_path / "certs"
    serial_a = issue_server(pki, certs, "a")
    serial_b = issue_server(pki, certs, "b")
    mount = tmp_path / "secret"
    mount.mkdir()
    _k8s_secret(mount, "2026_11_27_01", certs / "a.pem", certs / "a.key")
    with EchoServer() as echo:
        path, port, admin = write_config(
            tmp_path, pki, echo.port, reload={"watch": True, "debounce": "200ms"}
        )
        doc = _point_at(path, mount / "tls.crt", mount / "tls.key")
        with GatewayProcess(path, admin):
            assert server_serial(port, pki) == serial_a
            _k8s_secret(mount, "2026_11_27_02", certs / "b.pem", certs / "b.key")
            assert wait_for(lambda: server_serial(port, pki) == serial_b), "secret swap missed"

            # a config edit: the catch-all route now needs a SAN the dev client lacks
            doc["routes"][0]["policy"] = {"allow": [{"san_uri": "spiffe://dev.local/nobody"}]}
            path.write_text(yaml.safe_dump(doc))
            assert wait_for(lambda: request(port, "/x", pki).status == 403), "config edit missed"
            metrics = scrape(admin)
            assert sample(metrics, "mtls_gateway_config_reloads_total", result="success") >= 2
            assert sample(metrics, "mtls_gateway_config_reloads_total", result="failure") == 0


LOAD_SECONDS = 12.0


def test_reloading_under_load_fails_no_request(tmp_path: Path, pki: Path) -> None:
    """Keep-alive and new-connection clients run while the cert is swapped again and again."""
    certs = tmp_path / "certs"
    issue_server(pki, certs, "a")
    issue_server(pki, certs, "b")
    with EchoServer() as echo:
        path, port, admin, _doc = configure(
            tmp_path,
            pki,
            echo.port,
            certs,
            "a",
            reload={"watch": False},
            logging={"level": "warning", "access_log": False},
        )
        with GatewayProcess(path, admin) as gw:
            assert gw.proc is not None
            stop = time.monotonic() + LOAD_SECONDS
            ok = [0] * 6
            failures: list[str] = []

            def keepalive(slot: int) -> None:
                conn = http.client.HTTPSConnection(
                    "localhost", port, context=client_context(pki), timeout=10
                )
                try:
                    while time.monotonic() < stop and len(failures) < 20:
                        try:
                            conn.request("GET", f"/ka/{slot}")
                            resp = conn.getresponse()
                            resp.read()
                            if resp.status == 200:
                                ok[slot] += 1
                            else:
                                failures.append(f"keep-alive {resp.status}")
                        except (OSError, http.client.HTTPException) as exc:
                            failures.append(f"keep-alive {exc!r}")
                            conn.close()
                finally:
                    conn.close()

            def fresh(slot: int) -> None:
                while time.monotonic() < stop and len(failures) < 20:
                    try:
                        status = request(port, f"/new/{slot}", pki).status
                    except (OSError, http.client.HTTPException) as exc:
                        failures.append(f"new connection {exc!r}")
                        continue
                    if status == 200:
                        ok[slot] += 1
                    else:
                        failures.append(f"new connection {status}")

            threads = [threading.Thread(target=keepalive, args=(i,)) for i in range(3)]
            threads += [threading.Thread(target=fresh, args=(i,)) for i in range(3, 6)]
            for t in threads:
                t.start()
            reloads = 0
            durations: list[float] = []
            while time.monotonic() < stop - 0.5:
                stem = "b" if reloads % 2 == 0 else "a"
                _point_at(path, certs / f"{stem}.pem", certs / f"{stem}.key")
                if reloads % 3 == 2:
                    gw.proc.send_signal(signal.SIGHUP)
                    time.sleep(0.3)
                else:
                    status, body = post_reload(admin)
                    assert status == 200, body
                    durations.append(body["duration_ms"])
                    time.sleep(0.2)
                reloads += 1
            for t in threads:
                t.join(30)
            metrics = scrape(admin)
            done = sample(metrics, "mtls_gateway_config_reloads_total", result="success")
            print(
                f"\nreload under load: {sum(ok)} requests ({sum(ok[:3])} keep-alive, "
                f"{sum(ok[3:])} new connections) in {LOAD_SECONDS:.0f} s, {int(done)} reloads, "
                f"reload p50 {sorted(durations)[len(durations) // 2]:.1f} ms, "
                f"max {max(durations):.1f} ms, failures {len(failures)}"
            )
            assert failures == []
            assert done >= reloads - 1 and reloads >= 20
            assert sample(metrics, "mtls_gateway_config_reloads_total", result="failure") == 0
            assert all(n > 0 for n in ok), ok


def test_new_trust_applies_to_new_connections_and_closes_open_ones_it_rejects(
    tmp_path: Path, pki: Path
) -> None:
    with _unwatched_gateway(tmp_path, pki) as (path, port, admin, doc):
        kept = http.client.HTTPSConnection(
            "localhost", port, context=client_context(pki), timeout=10
        )
        try:
            kept.request("GET", "/before")
            first = kept.getresponse()
            first.read()
            assert first.status == 200
            with pytest.raises(OSError):
                request(port, "/x", pki, "client-untrusted")  # not trusted yet

            doc["listeners"][0]["tls"]["client_ca"] = [str(pki / "untrusted-ca.pem")]
            path.write_text(yaml.safe_dump(doc))
            assert post_reload(admin)[0] == 200

            assert request(port, "/x", pki, "client-untrusted").status == 200
            with pytest.raises(OSError):
                request(port, "/x", pki, "client")  # no longer trusted on a new connection
            # the connection opened under the old trust is re-checked: its client is no longer
            # trusted, so it is closed (revocation and trust changes reach open connections)
            with pytest.raises((OSError, http.client.HTTPException)):
                kept.request("GET", "/after")
                kept.getresponse().read()
        finally:
            kept.close()


def test_reload_adds_moves_and_removes_listeners_but_not_the_admin_port(
    tmp_path: Path, pki: Path
) -> None:
    with _unwatched_gateway(tmp_path, pki) as (path, port, admin, doc):
        second = free_port()
        extra = json.loads(json.dumps(doc["listeners"][0]))
        extra.update(name="second", bind=f"127.0.0.1:{second}")
        doc["listeners"].append(extra)
        path.write_text(yaml.safe_dump(doc))
        assert post_reload(admin)[0] == 200
        assert request(second, "/x", pki).status == 200
        assert request(port, "/x", pki).status == 200

        del doc["listeners"][0]
        path.write_text(yaml.safe_dump(doc))
        assert post_reload(admin)[0] == 200
        assert wait_for(lambda: refused(port))
        assert request(second, "/x", pki).status == 200

        doc["admin"]["bind"] = f"127.0.0.1:{free_port()}"
        path.write_text(yaml.safe_dump(doc))
        status, body = post_reload(admin)
        assert status == 422
        assert body["problems"] == [
            f"admin.bind: changing the admin address (127.0.0.1:{admin} -> "
            f"{doc['admin']['bind']}) needs a restart"
        ]

        # a listener whose port is taken: the reload fails and nothing changes
        with socket.socket() as blocker:
            blocker.bind(("127.0.0.1", 0))
            blocker.listen()
            doc["admin"]["bind"] = f"127.0.0.1:{admin}"
            doc["listeners"][0]["bind"] = f"127.0.0.1:{blocker.getsockname()[1]}"
            path.write_text(yaml.safe_dump(doc))
            status, body = post_reload(admin)
        assert status == 422 and body["problems"][0].startswith("listeners[0].bind: ")
        assert request(second, "/x", pki).status == 200


@contextmanager
def _unwatched_gateway(
    tmp_path: Path, pki: Path
) -> Iterator[tuple[Path, int, int, dict[str, Any]]]:
    """The real process on the baseline config with file watching off (reloads are explicit)."""
    with EchoServer() as echo:
        path, port, admin = write_config(tmp_path, pki, echo.port, reload={"watch": False})
        with GatewayProcess(path, admin):
            yield path, port, admin, yaml.safe_load(path.read_text())


def test_a_replaced_pool_finishes_its_requests_in_flight(tmp_path: Path, pki: Path) -> None:
    """A reload that changes an upstream retires its pool: a request already on it gets its
    whole answer, however long past shutdown_timeout (which bounds only a stop), and new
    requests go to the new pool."""
    with EchoServer() as old, EchoServer() as new:
        path, port, admin = write_config(
            tmp_path, pki, old.port, reload={"watch": False}, shutdown_timeout="1s"
        )
        doc = yaml.safe_load(path.read_text())
        with GatewayProcess(path, admin):
            answers: list[int] = []

            def slow() -> None:
                answers.append(request(port, "/slow?seconds=3", pki).status)

            waiting = threading.Thread(target=slow)
            waiting.start()
            assert wait_for(lambda: any("/slow" in line for line in old.seen), 5)
            doc["upstreams"][0]["url"] = f"http://127.0.0.1:{new.port}"
            path.write_text(yaml.safe_dump(doc))
            status, body = post_reload(admin)
            assert (status, body["result"]) == (200, "success"), body
            assert request(port, "/after", pki).status == 200
            assert any("/after" in line for line in new.seen)
            waiting.join(10)
            assert answers == [200]  # 3 s: past shutdown_timeout, still answered


def test_listener_limits_come_from_the_config_of_a_connections_accept(
    tmp_path: Path, pki: Path
) -> None:
    """One channel: a connection keeps the limits of the config it was accepted under; a
    reload's limits apply to the connections accepted after it."""
    with _unwatched_gateway(tmp_path, pki) as (path, port, admin, doc):
        doc["listeners"][0]["limits"] = {"max_request_body": 100}
        path.write_text(yaml.safe_dump(doc))
        assert post_reload(admin)[0] == 200
        kept = http.client.HTTPSConnection(
            "localhost", port, context=client_context(pki), timeout=10
        )
        try:

            def post(conn: http.client.HTTPSConnection) -> int:
                conn.request("POST", "/up", body=b"x" * 500)
                answer = conn.getresponse()
                answer.read()
                return answer.status

            assert post(kept) == 413
            kept.close()
            kept.connect()  # accepted under the 100-byte limit, and kept alive below
            kept.request("GET", "/warm")
            kept.getresponse().read()

            doc["listeners"][0]["limits"] = {"max_request_body": 1000}
            path.write_text(yaml.safe_dump(doc))
            assert post_reload(admin)[0] == 200

            fresh = http.client.HTTPSConnection(
                "localhost", port, context=client_context(pki), timeout=10
            )
            try:
                assert post(fresh) == 200  # accepted after the reload
            finally:
                fresh.close()
            assert post(kept) == 413  # its own accept's limit
        finally:
            kept.close()
